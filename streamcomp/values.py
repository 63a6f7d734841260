"""Value ranges and normalization: what every layer means by a block's range, defined once.

Only finite values count (NaN and ±inf in float data are kept apart by the chunk layer), and a
method always sees its block mapped from that range to [-1, 1].
"""

from __future__ import annotations

import numpy as np


def finite_values(block: np.ndarray) -> np.ndarray:
    """The block's finite values (all of them for integer data), flattened or as is."""
    return block[np.isfinite(block)] if block.dtype.kind == "f" else block


def finite_range(block: np.ndarray) -> tuple[float, float] | None:
    """(min, max) over the finite values; None when there is none."""
    fin = finite_values(block)
    if not fin.size:
        return None
    return float(fin.min()), float(fin.max())


def normalize(block: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The block as a method sees it: finite values mapped from [vmin, vmax] to [-1, 1], others 0.

    Shared models are trained on samples normalized by this same function, so what they learn
    matches what they are asked to encode.
    """
    lo_hi = finite_range(block)
    vmin, vmax = lo_hi if lo_hi is not None else (0.0, 0.0)
    if vmax == vmin:
        return np.zeros(block.shape, np.float32), vmin, vmax
    norm = block.astype(np.float64)  # in place from here, in the order 2 (x - vmin) / (vmax - vmin) - 1
    norm -= vmin
    norm *= 2.0
    norm /= vmax - vmin
    norm -= 1.0
    if block.dtype.kind == "f":
        norm[~np.isfinite(norm)] = 0.0
    return norm.astype(np.float32), vmin, vmax
