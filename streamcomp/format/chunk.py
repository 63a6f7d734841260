"""One chunk in, framed bytes out, and back: everything a method should not have to care about.

- normalization of the chunk's finite values to [-1, 1] (the range goes in the frame header);
- constant chunks (header only), NaN/inf (a zlib-compressed class map, values refilled on decode);
- edge chunks: only the valid region is encoded; decode pads to the full chunk shape;
- integer dtypes: round and clip to the chunk's own range;
- error-bounded chunks (``max_error``; 0 is lossless): coded in the data's own units by
  :mod:`streamcomp.format.bounded`, whatever the method, and decoded once before they are returned
  so that a chunk missing its bound is never written.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from streamcomp.errors import ChunkFormatError, InputError
from streamcomp.format.bounded import BoundViolation, Layer, decode_bounded, encode_bounded, within
from streamcomp.format.frame import (
    FLAG_BOUNDED,
    FLAG_CONSTANT,
    FLAG_NONFINITE,
    Frame,
    check_dtype,
    header_size,
    pack,
    unpack,
)
from streamcomp.methods.base import Method, Target
from streamcomp.values import normalize

NONFINITE_VALUES = np.array([0.0, np.nan, np.inf, -np.inf])


def _nonfinite_section(block: np.ndarray) -> bytes:
    classes = np.zeros(block.shape, np.uint8)
    classes[np.isnan(block)] = 1
    classes[np.isposinf(block)] = 2
    classes[np.isneginf(block)] = 3
    return zlib.compress(classes.tobytes(), 9)


def normalized_mse(max_mse: float, vmin: float, vmax: float) -> float:
    """An MSE in data units expressed in the [-1, 1] units a method sees."""
    return max_mse * (2.0 / (vmax - vmin)) ** 2


def encode_chunk(
    method: Method,
    block: np.ndarray,
    chunk_shape: tuple[int, ...] | None = None,
    budget_bytes: int | None = None,
    max_mse: float | None = None,
    max_error: float | None = None,
) -> bytes:
    """Encode ``block`` (the valid region of a chunk of ``chunk_shape``) into framed bytes.

    ``budget_bytes`` counts the whole framed chunk; ``max_mse`` and ``max_error`` (the largest
    absolute error of any voxel) are in the data's own units.
    """
    dtype = check_dtype(block.dtype)
    chunk_shape = tuple(block.shape) if chunk_shape is None else tuple(chunk_shape)
    if len(chunk_shape) != block.ndim or any(v > c for v, c in zip(block.shape, chunk_shape, strict=True)):
        raise InputError(f"block of shape {block.shape} does not fit in chunk shape {chunk_shape}")
    flags = 0
    sections: list[bytes] = []
    if dtype.kind == "f" and not np.isfinite(block).all():
        flags |= FLAG_NONFINITE
        sections.append(_nonfinite_section(block))
    norm, vmin, vmax = normalize(block)
    frame = Frame(method.method_id, dtype, chunk_shape, tuple(block.shape), vmin, vmax, flags, sections)
    if vmax == vmin:
        frame.flags |= FLAG_CONSTANT
        return pack(frame)
    if max_error is not None:
        return _bounded(method, frame, block, max_error)
    target = method_target(dtype, len(chunk_shape), vmin, vmax, budget_bytes, max_mse, method, sections)
    frame.sections = sections + method.encode(norm, target)
    return pack(frame)


def _bounded(method: Method, frame: Frame, block: np.ndarray, max_error: float) -> bytes:
    frame.flags |= FLAG_BOUNDED
    section, layer = encode_bounded(block, frame.vmin, frame.vmax, max_error, method.bounded_model)
    frame.sections.append(section)
    data = pack(frame)
    # The check decodes what is written; a lossy layer is not decoded twice (the encoder decoded it
    # from the very bytes written, by the decoder's own steps, to form its residual's levels).
    decoded = decode_frame(method, unpack(data), layer)[tuple(slice(0, n) for n in block.shape)]
    if not within(decoded, block, max_error):
        worst = float(np.nanmax(np.abs(decoded.astype(np.float64) - block.astype(np.float64))))
        raise BoundViolation(
            f"a {block.shape} {block.dtype} chunk decodes with an error of {worst:g}, over its bound "
            f"{max_error:g}: this is a streamcomp bug; the chunk was not written, please report it"
        )
    return data


def method_target(
    dtype: np.dtype,
    ndim: int,
    vmin: float,
    vmax: float,
    budget_bytes: int | None,
    max_mse: float | None,
    method: Method,
    side_sections: list[bytes] | tuple[bytes, ...] = (),
) -> Target:
    """What ``method`` must meet for a chunk: its framed budget less the frame's own bytes (header,
    side sections, one length per section), or the error target in the normalized units the method
    sees. Integer data is rounded after decoding, which adds about 1/12 to the MSE, so the method
    gets that much less (never below a quarter)."""
    if budget_bytes is not None:
        sections = len(side_sections) + method.payload_sections
        overhead = header_size(ndim, sections) + sum(map(len, side_sections))
        return Target(budget_bytes=max(budget_bytes - overhead, 1))
    if np.dtype(dtype).kind in "iu":
        max_mse = max(max_mse - 1.0 / 12.0, max_mse / 4.0)
    return Target(max_mse=normalized_mse(max_mse, vmin, vmax))


def nonfinite_classes(frame: Frame) -> np.ndarray:
    """The chunk's non-finite map over its valid region: 0 finite, else an index into
    :data:`NONFINITE_VALUES`."""
    try:
        classes = np.frombuffer(zlib.decompress(frame.sections[0]), np.uint8)
    except zlib.error as exc:
        raise ChunkFormatError(f"non-finite map of the chunk cannot be decompressed: {exc}") from exc
    if classes.size != math.prod(frame.valid) or classes.max(initial=0) > 3:
        raise ChunkFormatError("non-finite map of the chunk does not match its shape")
    return classes.reshape(frame.valid)


def restore(frame: Frame, values: np.ndarray | None) -> np.ndarray:
    """Refill non-finite values, pad to the chunk shape, cast to the dtype; ``values`` are the
    valid region in data units (None: a constant chunk)."""
    valid = frame.valid
    if values is None:
        values = np.full(valid, frame.vmin, dtype=np.float64)
    if frame.has_nonfinite:
        classes = nonfinite_classes(frame)
        values = np.where(classes > 0, NONFINITE_VALUES[classes], values)
    if values.dtype == frame.dtype and tuple(valid) == tuple(frame.shape) and values.flags.writeable:
        return values  # a bounded chunk's decode: already a fresh array in the dtype, nothing to pad
    if frame.dtype.kind in "iu" and values.dtype.kind == "f":
        values = np.rint(values, out=values if values.flags.writeable else None)
    if tuple(valid) == tuple(frame.shape):
        return values.astype(frame.dtype)
    out = np.zeros(frame.shape, dtype=frame.dtype)
    out[tuple(slice(0, n) for n in valid)] = values.astype(frame.dtype)
    return out


def denormalize(frame: Frame, norm: np.ndarray) -> np.ndarray:
    """A method's normalized output back in the chunk's value range (data units, float64)."""
    # In place, rounding in the order of (norm + 1) * 0.5 * range + vmin: the same values without
    # four temporary float64 copies of the chunk.
    values = norm.astype(np.float64)
    values += 1.0
    values *= 0.5
    values *= frame.vmax - frame.vmin
    values += frame.vmin
    return np.clip(values, frame.vmin, frame.vmax, out=values)


def decode_frame(method: Method, frame: Frame, layer: Layer | None = None) -> np.ndarray:
    """A frame's chunk array; ``layer``: a bounded section's lossy layer as the encoder decoded it,
    for its check (see :func:`decode_bounded`)."""
    if frame.method_id != method.method_id:
        raise ChunkFormatError(
            f"chunk was written by method id {frame.method_id}, but the array's codec uses "
            f"{method.name!r} (id {method.method_id})"
        )
    if frame.constant:
        return restore(frame, None)
    sections = frame.sections[1:] if frame.has_nonfinite else frame.sections
    if frame.bounded:
        if len(sections) != 1:
            raise ChunkFormatError(f"bounded chunk has {len(sections)} payload sections, not 1")
        bounded = decode_bounded(
            sections[0], frame.valid, frame.dtype, frame.vmin, frame.vmax, method.bounded_model, layer
        )
        return restore(frame, bounded)
    return restore(frame, denormalize(frame, method.decode(sections, frame.valid)))


def decode_chunk(method: Method, data: bytes | memoryview) -> np.ndarray:
    """Framed bytes back to the full chunk array; any defect raises :class:`ChunkFormatError`."""
    return decode_frame(method, unpack(data))


def constant_chunk(method: Method, block: np.ndarray, chunk_shape: tuple[int, ...]) -> bytes:
    """The header-only frame of a chunk whose voxels all hold one value."""
    value = float(block.reshape(-1)[0])
    return pack(Frame(method.method_id, block.dtype, chunk_shape, block.shape, value, value, FLAG_CONSTANT))


def chunk_is_valid(data: bytes | None, method_id: int, chunk_shape: tuple[int, ...], valid: tuple[int, ...]) -> bool:
    """Whether stored chunk bytes are a whole frame (magic, version, CRC) of this chunk."""
    if data is None:
        return False
    try:
        frame = unpack(data)
    except ChunkFormatError:
        return False
    return frame.method_id == method_id and tuple(frame.shape) == chunk_shape and tuple(frame.valid) == valid
