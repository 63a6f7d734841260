"""Map a volume onto the unsigned N-bit samples an image or video codec accepts, and back.

Image and video codecs take unsigned 8/10/12/16-bit samples only; CT is signed HU and the MRI
series is 14-bit. A user of those codecs must shift (and, past the codec's bit depth, scale) the
data and undo it on decode, storing the offset and scale. This module does that the same way for
every such baseline so the cost is counted honestly: the parameter bytes are part of the stored
size, and the rounding that scaling introduces is part of the measured distortion.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# offset and scale as two float64 values: what a container must keep to undo the mapping.
PARAM_BYTES = 16


@dataclass(frozen=True)
class UnsignedMap:
    """How ``volume`` became ``round((volume - offset) / scale)`` in ``bits``-bit unsigned samples."""

    offset: float
    scale: float
    bits: int
    dtype: np.dtype
    identity: bool

    @property
    def param_bytes(self) -> int:
        """Bytes a container must store to undo the mapping (none when it is the identity)."""
        return 0 if self.identity else PARAM_BYTES

    @property
    def container(self) -> np.dtype:
        """The unsigned sample type the codec receives."""
        return np.dtype(np.uint8 if self.bits <= 8 else np.uint16)


def needed_bits(volume: np.ndarray) -> int:
    """Bits required to hold ``max - min`` of an integer volume without loss."""
    span = float(volume.max()) - float(volume.min())
    return max(1, math.ceil(math.log2(span + 1)))


def plan(volume: np.ndarray, allowed_bits: Sequence[int]) -> UnsignedMap:
    """Choose the smallest allowed bit depth that holds the data, scaling only if none does."""
    lo, hi = float(volume.min()), float(volume.max())
    allowed = sorted(allowed_bits)
    is_int = volume.dtype.kind in "iub"
    need = needed_bits(volume) if is_int else allowed[-1] + 1
    fitting = [b for b in allowed if b >= need]
    if fitting:
        bits, scale = fitting[0], 1.0
    else:
        bits = allowed[-1]
        scale = max(hi - lo, 1e-30) / (2**bits - 1)
    container = np.dtype(np.uint8 if bits <= 8 else np.uint16)
    if scale == 1.0 and volume.dtype == container and hi < 2**bits:
        # Already unsigned samples that fit: store them as they are, no parameters needed.
        return UnsignedMap(offset=0.0, scale=1.0, bits=bits, dtype=volume.dtype, identity=True)
    return UnsignedMap(offset=lo, scale=scale, bits=bits, dtype=volume.dtype, identity=False)


def to_unsigned(volume: np.ndarray, m: UnsignedMap) -> np.ndarray:
    """Apply the mapping: contiguous unsigned samples in [0, 2**bits - 1]."""
    if m.identity:
        return np.ascontiguousarray(volume)
    x = (volume.astype(np.float64) - m.offset) / m.scale
    return np.clip(np.rint(x), 0, 2**m.bits - 1).astype(m.container)


def from_unsigned(samples: np.ndarray, m: UnsignedMap) -> np.ndarray:
    """Undo the mapping into the original dtype (rounded and clipped for integer types)."""
    if m.identity:
        return samples.astype(m.dtype, copy=False)
    x = samples.astype(np.float64) * m.scale + m.offset
    return cast_like(x, m.dtype)


def cast_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round and clip float values into an integer ``dtype`` (as a user restoring data would)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)
