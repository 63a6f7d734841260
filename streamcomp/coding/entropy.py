"""Entropy coding of integer symbols (quantized weights, latent codes) with constriction's ANS coder.

Each stream carries a 13-byte header: model kind, symbol range, and the two parameters of a
quantized Laplace or Gaussian model fitted to the symbols (whichever codes shorter). The symbol
count is not stored: the caller knows it from the tensor shapes.
"""

from __future__ import annotations

import struct

import constriction
import numpy as np

from streamcomp.errors import ChunkFormatError

_HEAD = struct.Struct("<Biiff")
_LAPLACE, _GAUSSIAN, _CONSTANT = 0, 1, 2


def _model(kind: int, lo: int, hi: int, loc: float, scale: float):
    m = constriction.stream.model
    if kind == _LAPLACE:
        return m.QuantizedLaplace(lo, hi, loc, scale)
    return m.QuantizedGaussian(lo, hi, loc, scale)


def _code(symbols: np.ndarray, kind: int, lo: int, hi: int, loc: float, scale: float) -> bytes:
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(symbols, _model(kind, lo, hi, loc, scale))
    return coder.get_compressed().tobytes()


def encode_ints(symbols: np.ndarray) -> bytes:
    """Entropy-code a flat array of integers into a self-contained byte string."""
    s = np.ascontiguousarray(symbols, dtype=np.int32).reshape(-1)
    if s.size == 0 or int(s.min()) == int(s.max()):
        value = int(s[0]) if s.size else 0
        return _HEAD.pack(_CONSTANT, value, value, 0.0, 0.0)
    lo, hi = int(s.min()), int(s.max())
    # Model parameters are rounded to float32 first: the decoder sees only the stored float32s.
    centre = float(np.float32(np.median(s)))
    best = b""
    for kind, scale in (
        (_LAPLACE, float(np.mean(np.abs(s - centre)))),
        (_GAUSSIAN, float(np.std(s))),
    ):
        scale = float(np.float32(max(scale, 0.05)))
        body = _code(s, kind, lo, hi, centre, scale)
        if not best or len(body) + _HEAD.size < len(best):
            best = _HEAD.pack(kind, lo, hi, centre, scale) + body
    return best


def decode_ints(data: bytes, count: int) -> np.ndarray:
    """Inverse of :func:`encode_ints`, for a stream of ``count`` symbols."""
    if len(data) < _HEAD.size:
        raise ChunkFormatError("entropy-coded section is shorter than its header")
    kind, lo, hi, loc, scale = _HEAD.unpack_from(data, 0)
    if kind == _CONSTANT:
        return np.full(count, lo, dtype=np.int32)
    if kind not in (_LAPLACE, _GAUSSIAN) or hi < lo or not scale > 0:
        raise ChunkFormatError("entropy-coded section has an invalid model header")
    body = data[_HEAD.size :]
    if len(body) % 4:
        raise ChunkFormatError("entropy-coded section is not a whole number of 32-bit words")
    words = np.frombuffer(body, dtype=np.uint32).copy()
    coder = constriction.stream.stack.AnsCoder(words)
    return coder.decode(_model(kind, lo, hi, loc, scale), count).astype(np.int32)

