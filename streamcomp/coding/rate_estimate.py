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

import numpy as np

from streamcomp.coding.bands import levels_for, subbands, transform_axes
from streamcomp.coding.directions import Directions
from streamcomp.coding.residual import first_order_bytes


def rate_curve(x: np.ndarray, log2_steps: np.ndarray) -> np.ndarray:
    """Estimated bytes of ``x`` (a normalized chunk) coded at each quantizer step ``2**log2_steps``."""
    steering = Directions(x.ndim, transform_axes(x.shape, False))
    bands = subbands(np.asarray(x, np.float32), levels_for(x.shape), False, steering=steering)
    magnitudes = [np.abs(b).reshape(-1) for b in bands]
    return np.array([first_order_bytes(magnitudes, log2_step) for log2_step in log2_steps])
