"""A transform's quantized bands coded under an array's learned context model: the ANS stream, its
size without coding it (what the rate control bisects on), and its decode.

Every band phase is one vectorized step (:func:`~streamcomp.coding.context_model.walk_bands`):
the model gives each position its pair code from the context decoded so far, and the positions
sharing a code are one run of the entropy coder; then the phase's nonzeros' signs, in runs of equal
sign codes (:mod:`~streamcomp.coding.sign_model`). A version 1 model's stream codes signed values
in one pass instead. ``bits`` (the largest magnitude's bit length,
stored in the section header) sizes the tables; 0 means every symbol is zero and nothing is coded.

The encoder chooses the symbols by rate-distortion (:func:`rdoq`): the decoder is the same either way.
"""

from __future__ import annotations

import constriction
import numpy as np

from streamcomp.coding import rans, sign_model
from streamcomp.coding.bands import Lattice
from streamcomp.coding.context_model import ContextModel, PairCoder, SignSite, flat_bands, runs, walk_bands
from streamcomp.errors import ChunkFormatError

# Bits are worth this many squared steps of error. Without the post-filter the gain at equal bytes is
# flat around it (0.06-0.15) on EM at 8x and head CT at 64x; where the filter is kept, CT codes
# better at 0.03 and EM worse (README, "The learned context model"): one value for now.
RDOQ_LAMBDA = 0.09
RDOQ_DEPTH = 2  # magnitudes tried below the rounded one


def _coder(model: ContextModel, bits: int) -> PairCoder:
    return PairCoder(bits, signed=model.signs is None, compiled=model.compiled)


def _sign_codes(model: ContextModel, site: SignSite, selected: np.ndarray) -> np.ndarray:
    """Sign codes of a band phase's positions ``selected`` (indices into them)."""
    return model.signs.codes(site.cls, site.features(selected), merge=not model.compiled)


def _estimate_bits(model: ContextModel, coder: PairCoder, site: SignSite, values, pairs) -> float:
    """Bits of a band phase's ``values``: symbols and, where coded apart, signs."""
    if coder.signed:
        return coder.estimate_bits(values, pairs)
    total = coder.estimate_bits(np.abs(values), pairs)
    nonzero = np.flatnonzero(values)
    if len(nonzero):
        total += sign_model.bits(values[nonzero] < 0, _sign_codes(model, site, nonzero))
    return total


def encode(
    model: ContextModel, lattices: list[Lattice], parents: list[int | None], levels: int,
    symbols: list[np.ndarray], bits: int,
) -> bytes:
    """One entropy-coded stream of every band phase's symbols (and then its nonzeros' signs), in
    decode order."""
    if not bits:
        return b""
    pairs = _coder(model, bits)
    phases: list[tuple] = []
    flat = flat_bands(symbols)

    def visit(band, base, phase, idx, keys, site):
        values = flat[band][idx]
        nonzero = np.flatnonzero(values) if not pairs.signed else ()
        signs = (values[nonzero] < 0, _sign_codes(model, site, nonzero)) if len(nonzero) else None
        phases.append((values if pairs.signed else np.abs(values), model.pairs(base, phase, keys), signs))
        return values

    walk_bands(lattices, parents, levels, visit)
    return _compiled_stream(pairs, phases) if pairs.compiled else _run_stream(pairs, phases)


def _compiled_stream(pairs: PairCoder, phases: list[tuple]) -> bytes:
    coder = rans.Encoder()
    for magnitudes, codes, signs in reversed(phases):
        if signs is not None:
            negative, sign_codes = signs
            coder.push(~negative, sign_codes, sign_model.compiled_table())
        coder.push(magnitudes, codes, pairs.table)
    return coder.finish()


def _run_stream(pairs: PairCoder, phases: list[tuple]) -> bytes:
    """A version 1 or 2 model's stream: runs of equal codes, one constriction call each."""
    segments: list[tuple] = []
    for coded, codes, signs in phases:
        order, spans = runs(codes)
        segments.extend((pairs.encode, coded[order[a:b]], pair) for pair, a, b in spans)
        if signs is not None:
            negative, sign_codes = signs
            order, spans = runs(sign_codes)
            segments.extend((sign_model.encode, negative[order[a:b]], code) for code, a, b in spans)
    coder = constriction.stream.stack.AnsCoder()
    for push, values, code in reversed(segments):
        push(coder, values, code)
    return coder.get_compressed().tobytes()


def size(
    model: ContextModel, lattices: list[Lattice], parents: list[int | None], levels: int,
    symbols: list[np.ndarray], bits: int,
) -> int:
    """Bytes :func:`encode` writes, from the ideal code length under the very tables it uses
    (within a few bytes): one pass of context arithmetic, no entropy coding."""
    if not bits:
        return 0
    coder, total = _coder(model, bits), 0.0
    flat = flat_bands(symbols)

    def visit(band, base, phase, idx, keys, site):
        nonlocal total
        values = flat[band][idx]
        total += _estimate_bits(model, coder, site, values, model.pairs(base, phase, keys))
        return values

    walk_bands(lattices, parents, levels, visit)
    return 4 * (int(total) // 32 + 2)


def rdoq(
    model: ContextModel, lattices: list[Lattice], parents: list[int | None], levels: int,
    scaled: list[np.ndarray], lam: float = RDOQ_LAMBDA,
) -> tuple[list[np.ndarray], int, int]:
    """Symbols for the bands ``scaled`` (coefficients in quantizer steps) chosen by rate and
    distortion, their ``bits`` and the bytes :func:`encode` writes for them (as :func:`size`).

    Why: a dead-zone quantizer zeroes the same fraction of every bin whatever a coefficient's
    context costs; here each coefficient, in decode order (so contexts are the ones the decoder
    will see), takes the magnitude among the rounded one and up to RDOQ_DEPTH below it that
    minimizes (|c| - m)**2 + lam * bits under its own context's table. Greedy: the choice's effect
    on later coefficients' contexts is not weighed. Magnitudes past the tables' edge are rounded."""
    magnitudes = [np.abs(b).reshape(-1) for b in scaled]
    negative = [np.signbit(b).reshape(-1) for b in scaled]
    rounded = [np.floor(a + 0.5).astype(np.int64) for a in magnitudes]
    bits = int(max((r.max() for r in rounded if r.size), default=0)).bit_length()
    if not bits:
        return [np.zeros(lattice.shape, np.int32) for lattice in lattices], 0, 0
    coder = _coder(model, bits)
    lengths = coder.lengths()
    total = 0.0

    def visit(band, base, phase, idx, keys, site):
        nonlocal total
        m = rounded[band][idx]
        pairs = model.pairs(base, phase, keys)
        live = np.flatnonzero((m > 0) & (m <= coder.edge))  # zeros cannot go lower
        if len(live):
            c, best, at = magnitudes[band][idx[live]], m[live], pairs[live]
            sign_bits = 0.0
            if not coder.signed:  # a nonzero also pays its sign's bits under its own code
                codes = _sign_codes(model, site, live)
                sign_bits = sign_model.LENGTHS[codes, (~negative[band][idx[live]]).astype(np.int64)]
            cost = (c - best) ** 2 + lam * (lengths[at, best + coder.offset] + sign_bits)
            for down in range(1, RDOQ_DEPTH + 1):
                cand = np.maximum(m[live] - down, 0)
                trial = (c - cand) ** 2 + lam * (lengths[at, cand + coder.offset] + (cand > 0) * sign_bits)
                better = trial < cost
                best[better], cost[better] = cand[better], trial[better]
            m[live] = best
        values = np.where(negative[band][idx], -m, m).astype(np.int32)
        total += _estimate_bits(model, coder, site, values, pairs)
        return values

    symbols = walk_bands(lattices, parents, levels, visit)
    chosen = int(max((int(np.abs(s).max()) for s in symbols if s.size), default=0)).bit_length()
    if chosen != bits:  # the largest magnitude dropped past a power of two: other tables code it
        return symbols, chosen, size(model, lattices, parents, levels, symbols, chosen)
    return symbols, bits, 4 * (int(total) // 32 + 2)


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
    pairs = _coder(model, bits)
    visit, done = _compiled_visit(model, pairs, body) if pairs.compiled else _run_visit(model, pairs, body)
    try:
        bands = walk_bands(lattices, parents, levels, visit)
    except (ValueError, RuntimeError) as exc:
        raise ChunkFormatError(f"residual section does not decode under the array's context model: {exc}") from exc
    done()
    return bands


def _compiled_visit(model: ContextModel, pairs: PairCoder, body: bytes):
    """The decoding visit of a version 3 model's stream and the check that it was whole."""
    coder = rans.Decoder(body)

    def visit(band, base, phase, idx, keys, site):
        values = coder.pop(model.pairs(base, phase, keys), pairs.table).astype(np.int32)
        nonzero = np.flatnonzero(values)
        if len(nonzero):
            negative = coder.pop(_sign_codes(model, site, nonzero), sign_model.compiled_table()) == 0
            values[nonzero[negative]] *= -1
        return values

    return visit, coder.finish


def _run_visit(model: ContextModel, pairs: PairCoder, body: bytes):
    """The decoding visit of a version 1 or 2 model's stream (runs through constriction)."""
    coder = constriction.stream.stack.AnsCoder(np.frombuffer(body, np.uint32).copy())

    def visit(band, base, phase, idx, keys, site):
        order, spans = runs(model.pairs(base, phase, keys))
        values = np.empty(len(idx), np.int32)
        values[order] = np.concatenate([pairs.decode(coder, b - a, pair) for pair, a, b in spans])
        nonzero = np.flatnonzero(values) if not pairs.signed else ()
        if len(nonzero):
            order, spans = runs(_sign_codes(model, site, nonzero))
            negative = np.empty(len(nonzero), bool)
            negative[order] = np.concatenate([sign_model.decode(coder, b - a, code) for code, a, b in spans])
            values[nonzero[negative]] *= -1
        return values

    return visit, lambda: None
