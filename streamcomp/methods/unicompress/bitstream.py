"""UniCompress chunk layout: tiles of a padded block and the codebook-index section."""

from __future__ import annotations

import math

import constriction
import numpy as np

from streamcomp.errors import ChunkFormatError
from streamcomp.methods.unicompress.model import TILE


def padded_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(math.ceil(n / t) * t for n, t in zip(shape, TILE, strict=True))


def split_tiles(block: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Tiles of an edge-padded block, C order, and the tile counts per axis."""
    counts = tuple(n // t for n, t in zip(block.shape, TILE, strict=True))
    (cz, cy, cx), (tz, ty, tx) = counts, TILE
    tiles = block.reshape(cz, tz, cy, ty, cx, tx).transpose(0, 2, 4, 1, 3, 5).reshape(-1, *TILE)
    return np.ascontiguousarray(tiles), counts


def _categorical(probs: np.ndarray):
    return constriction.stream.model.Categorical(probs.astype(np.float64), perfect=False)


def code_indices(probs: np.ndarray, idx: np.ndarray) -> bytes:
    """Codebook indices under the array's categorical prior (ANS)."""
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(idx.astype(np.int32), _categorical(probs))
    return coder.get_compressed().tobytes()


def decode_indices(probs: np.ndarray, data: bytes, count: int) -> np.ndarray:
    if len(data) % 4:
        raise ChunkFormatError("unicompress index section is not whole 32-bit words")
    coder = constriction.stream.stack.AnsCoder(np.frombuffer(data, np.uint32).copy())
    return coder.decode(_categorical(probs), count)
