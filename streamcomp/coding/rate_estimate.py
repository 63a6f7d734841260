"""A chunk's coded size at every quantizer step of a grid, estimated in one cheap pass.

Why: an array decodes with the least error for its bytes when every chunk is quantized at the
same step in the data's units (one rate-distortion slope everywhere), not when every chunk gets
the same bytes per voxel: a CT chunk of air needs almost nothing, one through the skull many
times its share. The planner splits the budget that way before anything is fitted, so it needs
each chunk's bytes as a function of the step from the scan. This estimates them from the
first-order entropy of each subband's dead-zone symbols under the volumetric transform (its
passes steered as the coder steers them: a straight transform's estimate overstated head CT's
skull chunks, which then took bytes the equal step would have left elsewhere), plus a sign bit
per nonzero symbol. The context coders spend less than that, but alike across chunks,
so only the relative sizes matter and those come out right.
"""

from __future__ import annotations

import numba
import numpy as np

from streamcomp.coding.bands import levels_for, subbands, transform_axes
from streamcomp.coding.directions import Directions

# The dead-zone rounding offset the residual coder quantizes with (below 0.5 trades a little error
# for fewer nonzeros), which the estimates assume.
ROUNDING = 0.38


def rate_curve(x: np.ndarray, log2_steps: np.ndarray) -> np.ndarray:
    """Estimated bytes of ``x`` (a normalized chunk) coded at each quantizer step ``2**log2_steps``."""
    steering = Directions(x.ndim, transform_axes(x.shape, False))
    bands = subbands(np.asarray(x, np.float32), levels_for(x.shape), False, steering=steering)
    magnitudes = [np.abs(b).reshape(-1) for b in bands]
    return np.array([first_order_bytes(magnitudes, log2_step) for log2_step in log2_steps])


def first_order_bytes(magnitudes: list[np.ndarray], log2_step: float) -> float:
    """Bytes of the bands' dead-zone symbols at step ``2**log2_step`` (``magnitudes``: each band's
    absolute coefficients, flat) under each band's first-order entropy, plus a sign bit per
    nonzero: what the planner's rate curves estimate and the learned rate control starts from."""
    inverse = np.float32(2.0 ** -float(log2_step))
    bits = 0.0
    for m in magnitudes:
        if not m.size:
            continue
        counts = _dead_zone_counts(m, inverse, np.float32(ROUNDING))
        zeros = int(counts[0])
        counts = counts[counts > 0].astype(np.float64)
        bits += m.size * np.log2(m.size) - float((counts * np.log2(counts)).sum()) + (m.size - zeros)
    return bits / 8


@numba.njit(nogil=True, cache=True)
def _dead_zone_counts(magnitudes: np.ndarray, inverse: np.float32, rounding: np.float32) -> np.ndarray:
    """``np.bincount`` of the dead-zone symbols ``floor(m * inverse + rounding)`` of non-negative
    ``magnitudes``, in one pass (numpy took four, over every band at every step of a rate curve),
    counted into four interleaved histograms: most symbols are zeros, and one histogram would
    wait on its own last increment of the same bin."""
    top = int(magnitudes.max() * inverse + rounding)  # the symbol rises with the magnitude
    counts = np.zeros((4, top + 1), np.int64)
    n = len(magnitudes)
    for i in range(0, n - 3, 4):
        for j in range(4):
            counts[j, int(magnitudes[i + j] * inverse + rounding)] += 1
    for i in range(n - n % 4, n):
        counts[0, int(magnitudes[i] * inverse + rounding)] += 1
    return counts.sum(axis=0)
