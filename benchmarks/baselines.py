"""The registry of baseline codecs users would pick instead of streamcomp, and how to sweep them.

Each baseline is a function ``(volume, knob) -> (stored_bytes, decoded, encode_s, decode_s)``
(a :class:`~benchmarks.codec_api.CodecResult`) with a described knob; :func:`at_ratio` searches the
knob so codecs are compared at matching compression ratios. A baseline that cannot run here is
never dropped: :func:`availability` maps every registered name to None or the reason.

Families (modules): per-slice images (JPEG XL, JPEG 2000, HTJ2K, AVIF), video through ffmpeg
(x265, x264), error-bounded float compressors (ZFP, SZ3), and lossless floors (zstd, blosc).
"""

from __future__ import annotations

import numpy as np

from benchmarks import codecs_float, codecs_image, codecs_lossless, codecs_video
from benchmarks.codec_api import Baseline, CodecResult, Knob
from benchmarks.ratesearch import Evaluation, SearchOutcome, evaluate, search_ratio

REGISTRY: dict[str, Baseline] = {
    b.name: b
    for b in (
        *codecs_image.BASELINES,
        *codecs_video.BASELINES,
        *codecs_float.BASELINES,
        *codecs_lossless.BASELINES,
    )
}

# The anchors the report measures BD-rate and BD-PSNR against.
ANCHORS = ("jpegxl", "x265")


def availability() -> dict[str, str | None]:
    """Every registered baseline, mapped to None (runs here) or why it cannot run here."""
    out: dict[str, str | None] = {}
    for name, b in REGISTRY.items():
        try:
            out[name] = b.unavailable()
        except Exception as exc:  # a broken check must still yield a reason, not a crash
            out[name] = f"availability check failed: {type(exc).__name__}: {exc}"
    return out


def unsupported(name: str, volume: np.ndarray) -> str | None:
    """Why baseline ``name`` cannot take ``volume`` (dtype, rank, size), or None."""
    return REGISTRY[name].unsupported(volume)


def at_ratio(name: str, volume: np.ndarray, target: float, *, max_evals: int = 8, rtol: float = 0.02) -> SearchOutcome:
    """Run baseline ``name`` at the knob that brings ``volume`` closest to ``target`` ratio.

    Lossless baselines have no knob: they run once and report their own ratio whatever the target.
    """
    b = REGISTRY[name]
    if b.knob is None:
        ev = evaluate(b.run, volume, b.fixed_knob)
        return SearchOutcome(best=ev, target=target, hit=False, trace=[(ev.knob, ev.ratio)])
    return search_ratio(b.run, b.knob, volume, target, max_evals=max_evals, rtol=rtol)


__all__ = [
    "ANCHORS",
    "REGISTRY",
    "Baseline",
    "CodecResult",
    "Evaluation",
    "Knob",
    "SearchOutcome",
    "at_ratio",
    "availability",
    "unsupported",
]
