"""Uniform quantization of float tensors, entropy coded, with a step searched to fill a byte budget.

Each tensor's step is ``rel_step * std(tensor)``, so one scalar ``rel_step`` trades bits for
precision across a whole network, and every tensor's symbols share one distribution shape: they
go into a single entropy-coded stream with one model. Side information is the float32
``rel_step`` plus one float16 std per tensor. The coded size falls monotonically (up to coder
noise) as ``rel_step`` grows, so a bisection lands a payload just under its budget: that is how a
``--ratio`` target is met to within a few percent.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from streamcomp.coding.entropy import decode_ints, encode_ints
from streamcomp.errors import ChunkFormatError

_REL = struct.Struct("<f")
FINEST_REL_STEP = 2.0**-12
COARSEST_REL_STEP = 4.0


def _scales(tensors: list[np.ndarray]) -> np.ndarray:
    stds = np.array([float(np.std(t)) if t.size else 0.0 for t in tensors], dtype=np.float16)
    return np.where(stds > 0, stds, np.float16(1.0))


def pack_tensors(tensors: list[np.ndarray], rel_step: float) -> bytes:
    """Quantize every tensor with its own step and entropy code all symbols in one stream."""
    rel = float(np.float32(rel_step))
    scales = _scales(tensors)
    symbols = [
        np.round(np.asarray(t, np.float64).reshape(-1) / (rel * float(s))).astype(np.int32)
        for t, s in zip(tensors, scales, strict=True)
    ]
    stream = encode_ints(np.concatenate(symbols) if symbols else np.zeros(0, np.int32))
    return _REL.pack(rel) + scales.tobytes() + stream


def unpack_tensors(data: bytes, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    """Inverse of :func:`pack_tensors` given the tensors' shapes."""
    side = _REL.size + 2 * len(shapes)
    if len(data) < side:
        raise ChunkFormatError("weight section is shorter than its quantization side information")
    (rel,) = _REL.unpack_from(data, 0)
    scales = np.frombuffer(data[_REL.size : side], np.float16)
    if not (np.isfinite(rel) and rel > 0 and np.all(np.isfinite(scales))):
        raise ChunkFormatError("weight section has invalid quantization steps")
    sizes = [math.prod(s) for s in shapes]
    symbols = decode_ints(data[side:], sum(sizes))
    out, pos = [], 0
    for shape, n, scale in zip(shapes, sizes, scales, strict=True):
        step = np.float32(rel * float(scale))
        out.append((symbols[pos : pos + n].astype(np.float32) * step).reshape(shape))
        pos += n
    return out


def pack_to_budget(tensors: list[np.ndarray], budget: int, iters: int = 24) -> bytes:
    """Finest quantization whose coded size fits ``budget`` bytes (coarsest if none fits)."""
    lo, hi = math.log2(FINEST_REL_STEP), math.log2(COARSEST_REL_STEP)
    finest = pack_tensors(tensors, 2.0**lo)
    if len(finest) <= budget:
        return finest
    best = pack_tensors(tensors, 2.0**hi)
    if len(best) > budget:
        return best
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        packed = pack_tensors(tensors, 2.0**mid)
        if len(packed) <= budget:
            best, hi = packed, mid
        else:
            lo = mid
        if len(best) >= 0.995 * budget:
            break
    return best
