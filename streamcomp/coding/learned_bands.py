"""A transform's quantized bands coded under an array's learned context model: the ANS stream, its
size without coding it (what the rate control bisects on), and its decode.

Every band phase is one vectorized step (:func:`~streamcomp.coding.context_model.walk_bands`):
the model gives each position its pair code from the context decoded so far, and the positions
sharing a code are one run of the entropy coder. ``bits`` (the largest magnitude's bit length,
stored in the section header) sizes the tables; 0 means every symbol is zero and nothing is coded.
"""

from __future__ import annotations

import constriction
import numpy as np

from streamcomp.coding.bands import Lattice
from streamcomp.coding.context_model import ContextModel, PairCoder, runs, walk_bands
from streamcomp.errors import ChunkFormatError


def encode(
    model: ContextModel, lattices: list[Lattice], parents: list[int | None], levels: int,
    symbols: list[np.ndarray], bits: int,
) -> bytes:
    """One ANS stream of every band phase's runs of equal pair codes, in decode order."""
    if not bits:
        return b""
    segments: list[tuple[np.ndarray, int]] = []

    def visit(band, base, phase, idx, keys):
        values = symbols[band].reshape(-1)[idx]
        order, spans = runs(model.pairs(base, phase, keys))
        segments.extend((values[order[a:b]], pair) for pair, a, b in spans)
        return values

    walk_bands(lattices, parents, levels, visit)
    coder = constriction.stream.stack.AnsCoder()
    pairs = PairCoder(bits)
    for values, pair in reversed(segments):
        pairs.encode(coder, values, pair)
    return coder.get_compressed().tobytes()


def size(
    model: ContextModel, lattices: list[Lattice], parents: list[int | None], levels: int,
    symbols: list[np.ndarray], bits: int,
) -> int:
    """Bytes :func:`encode` writes, from the ideal code length under the very tables it uses
    (within a few bytes): one pass of context arithmetic, no entropy coding."""
    if not bits:
        return 0
    coder, total = PairCoder(bits), 0.0

    def visit(band, base, phase, idx, keys):
        nonlocal total
        values = symbols[band].reshape(-1)[idx]
        total += coder.estimate_bits(values, model.pairs(base, phase, keys))
        return values

    walk_bands(lattices, parents, levels, visit)
    return 4 * (int(total) // 32 + 2)


def decode(
    model: ContextModel, lattices: list[Lattice], parents: list[int | None], levels: int, body: bytes, bits: int
) -> list[np.ndarray]:
    """The bands :func:`encode` coded into ``body``."""
    if len(body) % 4:
        raise ChunkFormatError("residual section is not a whole number of 32-bit words")
    if not bits:
        if body:
            raise ChunkFormatError("residual section of zeros carries a stream")
        return [np.zeros(lattice.shape, np.int32) for lattice in lattices]
    coder = constriction.stream.stack.AnsCoder(np.frombuffer(body, np.uint32).copy())
    pairs = PairCoder(bits)

    def visit(band, base, phase, idx, keys):
        order, spans = runs(model.pairs(base, phase, keys))
        values = np.empty(len(idx), np.int32)
        for pair, a, b in spans:
            values[order[a:b]] = pairs.decode(coder, b - a, pair)
        return values

    try:
        return walk_bands(lattices, parents, levels, visit)
    except (ValueError, RuntimeError) as exc:
        raise ChunkFormatError(f"residual section does not decode under the array's context model: {exc}") from exc
