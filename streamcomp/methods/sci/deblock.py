"""Adaptive deblocking across leaf-block seams (after List et al. 2003, the H.264 in-loop filter).

Blocks fitted by separate networks meet with small steps at their seams. Along every axis, each
pair of voxels (p0 | q0) straddling a seam, with their inner neighbours p1, q1 (and p2, q2), is
filtered only when the step looks like an artifact rather than an edge of the data:
``|p0 - q0| < alpha``, ``|p1 - p0| < beta`` and ``|q1 - q0| < beta``. Then

    delta = clip((4 (q0 - p0) + (p1 - q1)) / 8, -tc, tc);   p0 += delta;  q0 -= delta

and p1 / q1 move by half as much toward the smoothed seam when their own side is smooth. One
strength ``s`` (normalized units, data in [-1, 1]) sets ``alpha = s``, ``beta = s / 2``,
``tc = s / 2``. The encoder picks ``s`` per chunk from :data:`STRENGTHS` by the MSE it gives on the
real chunk (0 switches the filter off), stores its 1-byte code, and the decoder applies it:
the filter is adaptive both per seam (the edge tests) and per chunk (the stored strength).
"""

from __future__ import annotations

import numpy as np

Box = tuple[tuple[int, int], ...]
STRENGTH_CODES = (0, 3, 6, 12, 24, 48, 96)  # strength = code / 255


def strength_of(code: int) -> float:
    return code / 255.0


def seam_masks(shape: tuple[int, ...], boxes: list[Box]) -> list[np.ndarray]:
    """Per axis ``a``: a boolean array with shape[a] - 1 along ``a``; True between voxels i and
    i + 1 where they belong to different blocks."""
    masks = []
    for a in range(len(shape)):
        m = np.zeros(tuple(n - 1 if k == a else n for k, n in enumerate(shape)), bool)
        if shape[a] > 1:
            for box in boxes:
                hi = box[a][1]
                if hi < shape[a]:
                    idx = tuple(slice(hi - 1, hi) if k == a else slice(lo, h) for k, (lo, h) in enumerate(box))
                    m[idx] = True
        masks.append(m)
    return masks


def _filter_axis(v: np.ndarray, mask: np.ndarray, s: float) -> np.ndarray:
    """Filter the seams of ``mask`` along axis 0 of ``v`` (mask has len(v) - 1 rows)."""
    if not mask.any() or s <= 0:
        return v
    alpha, beta, tc = s, s / 2, s / 2
    n = v.shape[0]
    pad = np.concatenate([v[:1], v[:1], v, v[-1:], v[-1:]], axis=0)  # index i of v is i + 2 here
    i = np.arange(n - 1)
    p2, p1, p0 = pad[i], pad[i + 1], pad[i + 2]
    q0, q1, q2 = pad[i + 3], pad[i + 4], pad[i + 5]
    on = mask & (np.abs(p0 - q0) < alpha) & (np.abs(p1 - p0) < beta) & (np.abs(q1 - q0) < beta)
    if not on.any():
        return v
    delta = np.clip((4 * (q0 - p0) + (p1 - q1)) / 8, -tc, tc) * on
    dp1 = np.clip((p2 + (p0 + q0) / 2 - 2 * p1) / 2, -tc / 2, tc / 2) * (on & (np.abs(p2 - p0) < beta))
    dq1 = np.clip((q2 + (p0 + q0) / 2 - 2 * q1) / 2, -tc / 2, tc / 2) * (on & (np.abs(q2 - q0) < beta))
    out = v.copy()
    out[:-1] += delta
    out[1:] -= delta
    if n > 2:  # p1 is row i - 1 (exists for i >= 1), q1 row i + 2 (for i <= n - 3)
        out[: n - 2] += dp1[1:]
        out[2:] += dq1[: n - 2]
    return out


def deblock(volume: np.ndarray, boxes: list[Box], strength: float) -> np.ndarray:
    """The volume with every seam between ``boxes`` filtered, one axis after another."""
    if strength <= 0 or len(boxes) < 2:
        return volume
    v = np.asarray(volume, np.float32)
    for a, mask in enumerate(seam_masks(v.shape, boxes)):
        if v.shape[a] < 2:
            continue
        moved = _filter_axis(np.moveaxis(v, a, 0), np.moveaxis(mask, a, 0), strength)
        v = np.ascontiguousarray(np.moveaxis(moved, 0, a))
    return v.astype(np.float32)


def best_strength(raw: np.ndarray, original: np.ndarray, boxes: list[Box]) -> int:
    """The strength code from :data:`STRENGTH_CODES` whose filtered decode is closest to ``original``."""
    if len(boxes) < 2:
        return 0
    best, best_err = 0, float(np.mean((raw - original) ** 2))
    for code in STRENGTH_CODES[1:]:
        err = float(np.mean((deblock(raw, boxes, strength_of(code)) - original) ** 2))
        if err < best_err * (1 - 1e-6):
            best, best_err = code, err
    return best
