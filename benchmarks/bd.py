"""Bjøntegaard deltas: the average rate saving (BD-rate) and quality gain (BD-PSNR) between curves.

Comparing codecs at a single ratio hides where their curves cross; the Bjøntegaard metric (VCEG-M33)
averages the horizontal (rate) or vertical (PSNR) gap between two fitted RD curves over the range
where both were measured. Rate is fitted in log space with a cubic polynomial, as in the original;
with fewer than four points (quick mode) the degree drops to ``points - 1`` and the caller should
say so. Rates may be in any unit proportional to bits (bits per voxel here), since only ratios of
rates enter the result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


class BDError(ValueError):
    """The two curves cannot be compared (too few points, no overlap, non-finite values)."""


def _clean(rate: Sequence[float], psnr: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Finite, positive-rate points as (log-rate, PSNR) arrays, sorted by rate."""
    r = np.asarray(rate, dtype=np.float64)
    q = np.asarray(psnr, dtype=np.float64)
    if r.shape != q.shape or r.ndim != 1:
        raise BDError("rate and PSNR must be 1-D sequences of equal length")
    keep = np.isfinite(r) & np.isfinite(q) & (r > 0)
    r, q = r[keep], q[keep]
    if r.size < 2:
        raise BDError(f"need at least 2 finite points per curve, got {r.size}")
    order = np.argsort(r)
    return np.log(r[order]), q[order]


def fit_degree(n_points: int) -> int:
    """Polynomial degree used for a curve of ``n_points``: cubic when possible (Bjøntegaard)."""
    return int(min(3, n_points - 1))


def _mean_over(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    """Mean of the polynomial fit y(x) over [lo, hi], by exact integration of the polynomial."""
    if np.unique(x).size < 2:
        raise BDError("a curve needs at least 2 distinct abscissae")
    degree = min(fit_degree(x.size), np.unique(x).size - 1)
    # Centre and scale x so the fit is well conditioned whatever the units.
    centre, scale = float(np.mean(x)), float(np.ptp(x)) or 1.0
    poly = np.polynomial.Polynomial.fit((x - centre) / scale, y, degree, domain=[-1, 1], window=[-1, 1])
    integral = poly.integ()
    a, b = (lo - centre) / scale, (hi - centre) / scale
    return float((integral(b) - integral(a)) / (b - a))


def _overlap(a: np.ndarray, b: np.ndarray, what: str) -> tuple[float, float]:
    lo, hi = max(a.min(), b.min()), min(a.max(), b.max())
    if not hi > lo:
        raise BDError(f"no {what} overlap ([{a.min():.4g}, {a.max():.4g}] vs [{b.min():.4g}, {b.max():.4g}])")
    return float(lo), float(hi)


def bd_rate(
    rate_anchor: Sequence[float],
    psnr_anchor: Sequence[float],
    rate_test: Sequence[float],
    psnr_test: Sequence[float],
) -> float:
    """Average rate difference of ``test`` vs ``anchor`` at equal PSNR, in percent.

    Negative means the test codec needs fewer bits for the same quality (it is better).
    """
    la, qa = _clean(rate_anchor, psnr_anchor)
    lt, qt = _clean(rate_test, psnr_test)
    lo, hi = _overlap(qa, qt, "PSNR (dB)")
    diff = _mean_over(qt, lt, lo, hi) - _mean_over(qa, la, lo, hi)
    return float((np.exp(diff) - 1.0) * 100.0)


def bd_psnr(
    rate_anchor: Sequence[float],
    psnr_anchor: Sequence[float],
    rate_test: Sequence[float],
    psnr_test: Sequence[float],
) -> float:
    """Average PSNR difference of ``test`` vs ``anchor`` at equal rate, in dB (positive = better)."""
    la, qa = _clean(rate_anchor, psnr_anchor)
    lt, qt = _clean(rate_test, psnr_test)
    lo, hi = _overlap(np.exp(la), np.exp(lt), "rate")
    lo, hi = math.log(lo), math.log(hi)
    return float(_mean_over(lt, qt, lo, hi) - _mean_over(la, qa, lo, hi))
