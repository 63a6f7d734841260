"""Error-bounded chunks: every voxel within E of the source, E = 0 meaning bit for bit.

Construction: uniform quantization of the values themselves with step 2E+1 (integers; 2E for
floats), so that every voxel's reconstruction error is at most E whatever the code does, then
exact coding of the quantization levels (:mod:`streamcomp.coding.exact`). E = 0 on integer data
is plain lossless coding. Why not a lossy layer plus a bounded residual (Bai et al., CVPR 2021):
at the bounds people ask for (a few units) the residual of any lossy layer is the sensor noise,
which codes no better than the levels themselves; the levels' exact coder is what carries the
rate, and the benchmark (``benchmarks/results/lossless.md``) measures it.

Floats that are not whole numbers, ranges too wide for the wavelet coder, and any chunk whose
quantized reconstruction would miss the bound after rounding to the dtype are stored as their
raw bytes, byte-shuffled and zstd-compressed: exact, hence within every bound.

Section layout: u8 kind (levels or bytes) | f64 step | payload.
"""

from __future__ import annotations

import struct

import numpy as np
from numcodecs import Blosc

from streamcomp.coding.exact import MAX_RANGE, decode_exact, encode_exact
from streamcomp.errors import ChunkFormatError

BOUNDED_CHUNKS = {3: (32, 128, 128), 4: (4, 16, 64, 64)}  # default chunks: large enough that band
# descriptors cost nothing, small enough for random access
_HEAD = struct.Struct("<Bd")
LEVELS, BYTES = 0, 1
_RAW = Blosc(cname="zstd", clevel=9, shuffle=Blosc.SHUFFLE)


class BoundViolation(RuntimeError):
    """A chunk decoded outside its bound at encode time: a streamcomp bug, never written."""


def step_for(dtype: np.dtype, max_error: float) -> float:
    """The quantizer step that keeps every voxel within ``max_error``: 2E+1 on integers (E
    rounded down to a whole number of units), 2E on floats; 1 (no quantization) for lossless."""
    if np.dtype(dtype).kind in "iu":
        return float(2 * int(max_error) + 1)
    return 2.0 * float(max_error) if max_error > 0 else 1.0


def _levels(finite: np.ndarray, vmin: float, step: float) -> np.ndarray:
    """Quantization levels, offset from the chunk's minimum (nearest level, ties up)."""
    return np.floor((finite.astype(np.float64) - vmin) / step + 0.5).astype(np.int64)


def reconstruct(levels: np.ndarray, vmin: float, vmax: float, step: float, dtype: np.dtype) -> np.ndarray:
    """Values of ``levels`` in the data's units and dtype, clipped to the chunk's range (which only
    moves a reconstruction towards the true value, since that lies in the range)."""
    values = np.clip(vmin + levels.astype(np.float64) * step, vmin, vmax)
    return (np.rint(values) if np.dtype(dtype).kind in "iu" else values).astype(dtype)


def within(decoded: np.ndarray, block: np.ndarray, max_error: float) -> bool:
    """Whether every finite voxel of ``decoded`` is within ``max_error`` of ``block``; with a
    zero bound on floats, bit for bit (so -0.0 stays -0.0)."""
    finite = np.isfinite(block)
    if max_error == 0 and block.dtype.kind == "f":
        same = decoded.view(f"u{block.dtype.itemsize}") == block.view(f"u{block.dtype.itemsize}")
        return bool(np.all(same | ~finite))
    with np.errstate(invalid="ignore"):  # inf - inf at non-finite voxels, masked out
        err = np.abs(decoded.astype(np.float64) - block.astype(np.float64))
    return bool(np.all((err <= max_error) | ~finite))


def encode_bounded(block: np.ndarray, vmin: float, vmax: float, max_error: float) -> bytes:
    """One section holding ``block`` (valid region, finite range ``vmin``..``vmax``) within
    ``max_error`` of every finite voxel; non-finite voxels are the chunk layer's (its class map)."""
    step = step_for(block.dtype, max_error)
    finite = np.isfinite(block) if block.dtype.kind == "f" else None
    filled = block if finite is None else np.where(finite, block, vmin)
    if (vmax - vmin) / step < MAX_RANGE - 1:
        levels = _levels(filled, vmin, step)
        if within(reconstruct(levels, vmin, vmax, step, block.dtype), block, max_error):
            return _HEAD.pack(LEVELS, step) + encode_exact(levels)
    return _HEAD.pack(BYTES, step) + _RAW.encode(np.ascontiguousarray(block))


def decode_bounded(data: bytes, shape: tuple[int, ...], dtype: np.dtype, vmin: float, vmax: float) -> np.ndarray:
    """Inverse of :func:`encode_bounded`: the block in its dtype (non-finite voxels not yet refilled)."""
    if len(data) < _HEAD.size:
        raise ChunkFormatError("bounded section is shorter than its header")
    kind, step = _HEAD.unpack_from(data, 0)
    if kind == LEVELS and np.isfinite(step) and step > 0:
        return reconstruct(decode_exact(data[_HEAD.size :], shape), vmin, vmax, step, dtype)
    if kind == BYTES:
        raw = np.frombuffer(_RAW.decode(data[_HEAD.size :]), dtype)
        if raw.size != int(np.prod(shape)):
            raise ChunkFormatError("bounded section's raw bytes do not match the chunk's shape")
        return raw.reshape(shape)
    raise ChunkFormatError("bounded section has an invalid header")
