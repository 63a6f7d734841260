"""Wavelet coding of a chunk's residual: what the shared INR's prediction missed.

Why: the shared student saturates (its decoder's capacity bounds quality, not its code's bytes),
so budget beyond what its latents can use would buy nothing. A 3D CDF 9/7 wavelet transform of
the residual (mirrored, not wrapped, at the chunk's faces: :mod:`streamcomp.coding.lifting`), one
uniform quantizer step for every subband (the transform is nearly orthogonal, so one step is close
to MSE-optimal; a dead zone under the hand-set models), and ANS coding under Laplace models turn
the remaining bytes into quality, and a bisection over the step fills a byte budget or meets an
error target exactly as the latent packing does.

The models are context-adaptive where that pays: a subband's coefficients are split into two
interleaved halves (a checkerboard); the first is classed by its parent coefficient's magnitude,
the second also by its decoded neighbours in the first, and each class gets its own Laplace scale,
chosen by code length; on real data this beats one moment-fitted Laplace per subband at equal
bytes, with decode no slower (``benchmarks/results/REPORT.md``).

With an array's learned context model (:mod:`streamcomp.coding.context_model`) the bands carry
no descriptors: every coefficient's distribution comes from the model and its decoded context,
the encoder picks each coefficient's symbol by rate and distortion under it instead of a dead zone,
and the rate control bisects on the model's ideal code length, coding the ANS stream once.

The in-plane lifting passes are steered along edges where that pays (:mod:`streamcomp.coding.directions`):
the chunk's direction grids are then side information of its section.

Layout: float32 step, uint8 levels (flags: planar transform, context layout, symmetric
extension, learned model, post-filter), uint8 symbol range bits (flags: steered, compiled), where
steered a u32 length and the direction grids, one descriptor per subband unless the learned flag
is set (0: all zero, none stored; a scale code; or 255 and one scale code per context class), then
one ANS stream: the compiled coder's (:mod:`streamcomp.coding.rans`; each band's coded positions in
index order, a half at a time where classed), or in sections written before it (no compiled flag)
constriction's, a run per class.
"""

from __future__ import annotations

import math
import struct
from functools import lru_cache

import constriction
import numpy as np

from streamcomp.coding import learned_bands, rans
from streamcomp.coding.bands import (
    NO_SCALE,
    Lattice,
    group_codes,
    lattices,
    levels_for,
    parents,
    reconstruct,
    scale_of,
    subband_shapes,
    subbands,
    transform_axes,
)
from streamcomp.coding.context_model import ContextModel
from streamcomp.coding.directions import Directions
from streamcomp.coding.rate_estimate import ROUNDING, first_order_bytes
from streamcomp.errors import ChunkFormatError

_HEAD = struct.Struct("<fBB")
_PLANAR = 0x80  # flag in the levels byte
_LAYOUT = 0x40  # flags in the levels byte: context-coded bands and the symmetric-extension
_SYMMETRIC = 0x20  # transform; a section lacking either predates them
_LEARNED = 0x10  # flag in the levels byte: bands coded under the array's learned context model
_FILTERED = 0x08  # flag in the levels byte: the array's post-filter applies to this chunk
_STEERED = 0x80  # flag in the bits byte: direction grids (u32 length, then the grids) follow the header
_COMPILED = 0x40  # flag in the bits byte: the hand-set models' stream is the compiled coder's (format 10)
_GRIDS = struct.Struct("<I")
GRID_SHARE = 0.1  # most of a chunk's budget its direction grids may take (else it is not steered)
UNDERFILLED = 0.9  # a learned section this far under its budget is checked against the hand-set models
FILLED = 0.985  # the learned rate control accepts a step coding to this much of the budget or more
ERROR_FILLED = 0.997  # an error target's search accepts a step erring this much of the bound or more
ERROR_SLOPE = -2 * math.log(2)  # d log(error) / d (-log2 step) of a fine uniform quantizer
_TINY = 1e-300  # an exact reconstruction's error, for its logarithm
_GUESS_SAMPLE = 1 << 16  # coefficients the first guess's entropy estimate reads (a regular subsample)
_STEP_RANGE = (-18.0, 8.0)  # log2 of the quantizer step; 2**8 zeroes any residual of values in [-2, 2]
_SYMBOL_BITS = 20  # largest symbol magnitude, in bits: the escape's Laplace fails past 2**24 values
_CONTEXT = NO_SCALE  # band descriptor: per-context-group scale codes follow
_EDGES = (1, 3, 7)  # context class edges, in units of half a symbol magnitude
_CLASSES = len(_EDGES) + 1  # context classes per sublattice
_DIRECT = 63  # largest magnitude coded through a lookup table (see _Models)


def _half_classes(
    lattice: Lattice, parent: np.ndarray, first: np.ndarray | None, second: bool
) -> tuple[np.ndarray, np.ndarray]:
    """A half's flat positions and each one's context group: first-half groups 0..3, second-half
    groups 4..7.

    A context c (parent |q| in the first half; half the parent's plus the neighbours' mean |q| in
    the second, from ``first``: the band with its first half decoded) falls in classes split at
    0.5, 1.5 and 3.5; integers keep it exact everywhere. Only the half's own positions are
    classified (the decoder classifies each half once)."""
    index = lattice.half_index(second)
    parent = parent.reshape(-1)[index]
    if second:
        unit = 2 * len(lattice.axes)
        scaled = unit * parent + 2 * lattice.neighbours(first).reshape(-1)[index]
    else:
        unit, scaled = 1, 2 * parent
    classes = np.full(index.size, _CLASSES if second else 0, np.uint8)
    for edge in _EDGES:
        classes += scaled > edge * unit
    return index, classes


def _code_band(
    q: np.ndarray, lattice: Lattice, parent: np.ndarray | None, segments: list[tuple[np.ndarray, np.ndarray]]
) -> bytes:
    """The band's descriptor; appends its (values, scale codes) to ``segments`` in decode order.

    Descriptor: 0 (all zero), one scale code for the whole band, or _CONTEXT and one code per
    context group, whichever codes shorter (the eight codes cost more than they save on noise-like
    bands, such as EM's fine details).
    """
    if not q.any():
        return b"\0"
    flat = q.reshape(-1)  # a copy when the band is a strided view: once, not per group
    code, plain_bits = group_codes(np.abs(flat), None)
    upper = lattice.parent(parent)
    halves = [_half_classes(lattice, upper, q, second) for second in (False, True)]
    groups = np.concatenate([classes for _, classes in halves])
    values = flat[np.concatenate([index for index, _ in halves])]  # first half, then second
    codes, context_bits = group_codes(np.abs(values), groups, 2 * _CLASSES)
    if plain_bits / 8 + 1 <= context_bits / 8 + 1 + len(codes):
        segments.append((flat, np.full(flat.size, int(code[0]))))
        return bytes([int(code[0])])
    rows = codes[groups]
    coded = np.flatnonzero(rows)
    segments.append((values[coded], rows[coded]))
    return bytes([_CONTEXT, *codes.tolist()])


def _dequantize(symbols: list[np.ndarray], step: float) -> list[np.ndarray]:
    return [q.astype(np.float32) * np.float32(step) for q in symbols]


def _edge(bits: int) -> tuple[int, bool]:
    """The largest magnitude coded through a table, and whether larger ones (an escape) occur."""
    top = (1 << bits) - 1
    return min(top, _DIRECT), top > _DIRECT


def _weights(edge: int, escape: bool, codes: np.ndarray) -> np.ndarray:
    """Integer table weights over [-edge, edge] (and the escape) of each scale code in ``codes``:
    rounded, so the coded bytes do not hinge on the last bit of a platform's ``exp``."""
    scale = scale_of(codes)[:, None]
    tail = np.exp(-(np.arange(edge + 1, dtype=np.float64) + 0.5) / scale)
    mass = np.concatenate((1.0 - tail[:, :1], 0.5 * (tail[:, :-1] - tail[:, 1:])), axis=1)
    weights = np.concatenate((mass[:, :0:-1], mass, tail[:, -1:] if escape else mass[:, :0]), axis=1)
    return np.maximum(np.round(weights * 2.0**24), 1.0)


@lru_cache(maxsize=8)
def _compiled_table(edge: int, escape: bool) -> rans.Table:
    """Every scale code's row for the compiled coder (values folded: :func:`streamcomp.coding.rans.fold`),
    an escape's excess in exponential-Golomb code of about the code's scale."""
    codes = np.arange(NO_SCALE + 1)
    orders = np.maximum(np.floor(np.log2(scale_of(codes))), 0).astype(np.int64)
    return rans.table(_weights(edge, escape, codes), 2 * edge + 1 if escape else -1, orders)


class _Models:
    """Entropy models per scale code of sections written before the compiled coder. Magnitudes up
    to _DIRECT go through a lookup-table model; larger ones, rare, are an escape symbol followed by
    the value under constriction's Laplace."""

    def __init__(self, bits: int) -> None:
        self.top = (1 << bits) - 1
        self.edge, self.escapes = _edge(bits)
        self.escape = 2 * self.edge + 1  # the escape's column
        self.tables: dict[int, object] = {}

    def table(self, code: int):
        if code not in self.tables:
            weights = _weights(self.edge, self.escapes, np.array([code]))[0]
            self.tables[code] = constriction.stream.model.Categorical(weights, perfect=False)
        return self.tables[code]

    def laplace(self, code: int):
        return constriction.stream.model.QuantizedLaplace(-self.top, self.top + 1, 0.0, float(scale_of(code)))

    def decode(self, coder, count: int, code: int) -> np.ndarray:
        values = coder.decode(self.table(code), count).astype(np.int32) - self.edge
        escaped = values == self.escape - self.edge
        if escaped.any():
            values[escaped] = coder.decode(self.laplace(code), int(escaped.sum()))
        return values


class ResidualCoder:
    """Transform once, then quantize and code at any step (the rate control calls it repeatedly).

    ``planar`` transforms only the last two axes: serial-section EM, whose sections barely
    correlate, often codes better so; CT, smooth along z, worse. :func:`encode_residual`
    tries both.
    """

    def __init__(
        self, residual: np.ndarray, planar: bool = False, model: ContextModel | None = None, budget: int | None = None
    ) -> None:
        """``budget``: the bytes the chunk will be coded in, where known: a transform whose direction
        grids would take more than GRID_SHARE of it stays straight (a small budget codes few
        high-pass coefficients, which steering cannot make cheaper than its grids: a head CT chunk
        at 64x with a 170-byte budget lost 7 dB to its 50 bytes of grids)."""
        self.shape = tuple(residual.shape)
        self.planar = planar
        self.model = model
        self.levels = levels_for(self.shape, planar)
        residual = np.asarray(residual, np.float32)
        self.directions = Directions(len(self.shape), transform_axes(self.shape, planar))
        self.bands = subbands(residual, self.levels, planar, steering=self.directions)
        self._grids = self.directions.to_bytes() if self.directions.steers() else b""
        if self._grids and budget is not None and len(self._grids) > GRID_SHARE * budget:
            self.directions, self._grids = Directions(len(self.shape), ()), b""
            self.bands = subbands(residual, self.levels, planar)
        self.lattices = lattices([b.shape for b in self.bands], transform_axes(self.shape, planar))
        self.parents = parents(len(self.bands), self.levels)
        peak = max((float(np.abs(b).max()) for b in self.bands if b.size), default=0.0)
        # Finer than 2**-_SYMBOL_BITS of the largest coefficient buys nothing a 16-bit source holds.
        finest = math.ceil(math.log2(peak)) - _SYMBOL_BITS if peak > 0 else _STEP_RANGE[0]
        self.step_range = (max(_STEP_RANGE[0], float(finest)), _STEP_RANGE[1])

    def code(self, log2_step: float) -> tuple[bytes, np.ndarray]:
        """The coded bytes at quantizer step ``2**log2_step`` and the residual they decode to; the
        symbols chosen by rate and distortion under the learned model (:meth:`choose`)."""
        step, symbols, _ = self.choose(log2_step)
        return self._bytes(step, symbols), self._decoded(step, symbols)

    def code_bytes(self, log2_step: float) -> bytes:
        """The dead-zone quantized coefficients' bytes at quantizer step ``2**log2_step``: the same
        symbols under either model, so only the modelling differs."""
        return self._bytes(*self.quantize(log2_step))

    def quantize(self, log2_step: float) -> tuple[float, list[np.ndarray]]:
        """Dead-zone quantization at step ``2**log2_step``."""
        step = float(np.float32(2.0**log2_step))
        return step, [(np.sign(b) * np.floor(np.abs(b) / step + ROUNDING)).astype(np.int32) for b in self.bands]

    def choose(self, log2_step: float) -> tuple[float, list[np.ndarray], int | None]:
        """(step, symbols, bytes) the coder writes at step ``2**log2_step``: under the learned model
        the rate-distortion optimized symbols (:func:`learned_bands.rdoq`) and the bytes estimated
        in the same pass; under the hand-set models the dead zone's, bytes None (not estimated)."""
        if self.model is None:
            return *self.quantize(log2_step), None
        step = float(np.float32(2.0**log2_step))
        scaled = [b / np.float32(step) for b in self.bands]
        symbols, _, size = learned_bands.rdoq(self.model, self.lattices, self.parents, self.levels, scaled)
        return step, symbols, len(self._head(step, 0, 0)) + size

    def _head(self, step: float, flags: int, bits: int) -> bytes:
        """The section's header and, where the transform was steered, its direction grids."""
        if not self._grids:
            return _HEAD.pack(step, flags, bits)
        return _HEAD.pack(step, flags, bits | _STEERED) + _GRIDS.pack(len(self._grids)) + self._grids

    def _bytes(self, step: float, symbols: list[np.ndarray]) -> bytes:
        bits = max((int(np.abs(s).max()) for s in symbols if s.size), default=0).bit_length()
        flags = self.levels | _LAYOUT | _SYMMETRIC | (_PLANAR if self.planar else 0)
        if self.model is not None:
            stream = learned_bands.encode(self.model, self.lattices, self.parents, self.levels, symbols, bits)
            return self._head(step, flags | _LEARNED, bits) + stream
        head = bytearray(self._head(step, flags, bits | _COMPILED))
        segments: list[tuple[np.ndarray, np.ndarray]] = []
        for q, lattice, parent in zip(symbols, self.lattices, self.parents, strict=True):
            head += _code_band(q, lattice, None if parent is None else symbols[parent], segments)
        if segments:
            edge, escape = _edge(bits)
            coder = rans.Encoder()
            for values, rows in reversed(segments):
                coder.push(rans.fold(values, edge), rows, _compiled_table(edge, escape))
            head += coder.finish()
        return bytes(head)

    def _decoded(self, step: float, symbols: list[np.ndarray]) -> np.ndarray:
        return reconstruct(_dequantize(symbols, step), self.shape, self.levels, self.planar, steering=self.directions)

    def first_guess(self, budget: int) -> tuple[float, float]:
        """(log2 step, d log(bytes) / d log2 step) where the bands' first-order entropy
        (:func:`first_order_bytes`, on a regular subsample of every band) codes ``budget`` bytes:
        the learned model codes in a near-constant fraction of it, so the rate control's first
        trial measures that fraction and its second lands close to the budget."""
        total = sum(b.size for b in self.bands)
        stride = max(total // _GUESS_SAMPLE, 1)
        sample = [np.abs(b).reshape(-1)[::stride] for b in self.bands]
        scale = total / max(sum(m.size for m in sample), 1)

        def log_bytes(x: float) -> float:
            return math.log(max(scale * first_order_bytes(sample, x), 1.0))

        lo, hi = self.step_range
        target = math.log(budget)
        for _ in range(16):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if log_bytes(mid) > target else (lo, mid)
        x = 0.5 * (lo + hi)
        slope = (log_bytes(x + 0.25) - log_bytes(x - 0.25)) / 0.5
        return x, min(slope, -0.1)

    def fit_budget(
        self, budget: int, start: tuple[float, float, tuple] | None = None, iters: int = 18
    ) -> tuple[bytes, np.ndarray]:
        """Finest step whose bytes fit ``budget`` (the coarsest step's bytes when none does).
        Only the step kept is reconstructed: the inverse transform costs as much as the coding.
        Under the learned model the search starts from ``start``: (log2 step, slope for the second
        trial, :meth:`choose` at that step), a trial already made; else from :meth:`first_guess`."""
        if self.model is not None:
            return self._fit_budget_learned(budget, start, iters)
        lo, hi = self.step_range
        quantized = self.quantize(hi)
        data = self._bytes(*quantized)
        if len(data) <= budget:
            for _ in range(iters):
                mid = 0.5 * (lo + hi)
                trial = self.quantize(mid)
                trial_data = self._bytes(*trial)
                if len(trial_data) <= budget:
                    quantized, data, hi = trial, trial_data, mid
                else:
                    lo = mid
                if len(data) >= 0.99 * budget:
                    break
        return data, self._decoded(*quantized)

    def _fit_budget_learned(
        self, budget: int, start: tuple[float, float, tuple] | None, iters: int
    ) -> tuple[bytes, np.ndarray]:
        """:meth:`fit_budget` on the learned model's size estimates (:meth:`choose`): a step is
        accepted once its size falls in [FILLED, 1] of the budget. Log size is nearly linear in
        log2 step, so each trial is a secant through the two trials nearest the window's middle
        (the bracket's midpoint when it falls outside, where the curve bends near the step that
        zeroes every coefficient): two to four RDOQ passes a chunk from the first guess. The
        accepted trial's symbols are coded once, coarsened in small steps if its real bytes exceed
        the budget."""
        lo, hi = self.step_range
        if budget <= _HEAD.size:  # no step fits: the coarsest, without searching for it
            step, symbols, _ = self.choose(hi)
            return self._bytes(step, symbols), self._decoded(step, symbols)
        if start is None:
            x, slope = self.first_guess(budget)
            start = (x, slope, self.choose(x))
        tried: list[tuple[float, float]] = []  # (log2 step, log of size / budget)
        fits: tuple[float, tuple] | None = None  # the finest step that fits, and its choice
        over = -math.inf  # the coarsest step that does not fit
        x, slope, choice = start
        for _ in range(iters):
            g = math.log(choice[2] / budget)
            if g <= 0:
                if fits is None or x < fits[0]:
                    fits = (x, choice)
                if g >= math.log(FILLED):
                    break
            else:
                over = max(over, x)
            tried.append((x, g))
            x = _next_step(tried, over, fits[0] if fits is not None else math.inf, lo, hi, slope)
            if x is None:
                break
            choice = self.choose(x)
        log2_step, (step, symbols, _) = fits if fits is not None else (hi, self.choose(hi))
        data = self._bytes(step, symbols)
        while len(data) > budget and log2_step < hi:
            log2_step = min(log2_step + 1 / 32, hi)
            step, symbols, _ = self.choose(log2_step)
            data = self._bytes(step, symbols)
        return data, self._decoded(step, symbols)

    def fit_error(self, residual: np.ndarray, max_mse: float, iters: int = 18) -> tuple[bytes, np.ndarray]:
        """Coarsest step whose reconstruction is within ``max_mse`` of ``residual`` (the finest
        step's when none is), to 2**-7 in log2 step or an error within [ERROR_FILLED, 1] of the bound.
        Log error is nearly linear in log2 step (a quantizer's error grows with its step squared),
        so the search is the rate control's secant (:func:`_next_step`, on the negated step, where
        error falls as bytes do), from where a uniform quantizer's error, step**2 / 12, meets the
        bound: four to six trials where bisecting the whole step range took nineteen. A trial is
        reconstructed, not coded; only the kept one is."""
        lo, hi = self.step_range
        if not max_mse > 0:
            return self.code(lo)
        x = min(max(0.5 * math.log2(12 * max_mse), lo), hi)
        tried: list[tuple[float, float]] = []  # (-log2 step, log of error / bound)
        fits: tuple[float, tuple] | None = None  # the coarsest step within the bound, its symbols and decode
        over = -math.inf  # -log2 of the finest step beyond the bound
        for _ in range(iters):
            step, symbols, _ = self.choose(x)
            decoded = self._decoded(step, symbols)
            error = float(np.mean((decoded - residual) ** 2))
            g = math.log(max(error, _TINY) / max_mse)
            if g <= 0:
                if fits is None or -x < fits[0]:
                    fits = (-x, (step, symbols, decoded))
                if g >= math.log(ERROR_FILLED):
                    break
            else:
                over = max(over, -x)
            tried.append((-x, g))
            nxt = _next_step(tried, over, fits[0] if fits is not None else math.inf, -hi, -lo, ERROR_SLOPE,
                             ERROR_FILLED)
            if nxt is None:
                break
            x = -nxt
        if fits is None:
            step, symbols, _ = self.choose(lo)
            return self._bytes(step, symbols), self._decoded(step, symbols)
        step, symbols, decoded = fits[1]
        return self._bytes(step, symbols), decoded


def _next_step(
    tried: list[tuple[float, float]], over: float, fits: float, lo: float, hi: float, slope: float,
    filled: float = FILLED,
) -> float | None:
    """The learned rate control's next log2 step: a secant through the two trials nearest the
    middle of the accepted window [``filled``, 1] (one trial: ``slope``), aimed at that middle, kept
    inside the bracket (over, fits) and [lo, hi]; None when nothing is left to try."""
    aim = math.log(0.5 * (1 + filled))
    near = sorted(tried, key=lambda t: abs(t[1] - aim))
    (x1, g1), others = near[0], [t for t in near[1:] if t[0] != near[0][0]]
    if others and (others[0][1] - g1) / (others[0][0] - x1) < 0:
        slope = (others[0][1] - g1) / (others[0][0] - x1)
    x = x1 + (aim - g1) / slope
    if math.isfinite(over) and math.isfinite(fits):
        if fits - over < 2.0**-7:
            return None
        if not over < x < fits or any(x == t[0] for t in tried):
            x = 0.5 * (over + fits)
    else:
        # No bracket yet: at least a stride that doubles with every trial, since sizes at low
        # rates are a staircase whose flat treads would stall the secant.
        stride = 2.0 ** (len(tried) - 6)
        x = max(x, over + stride) if math.isfinite(over) else min(x, fits - stride)
    x = min(max(x, lo), hi)
    if any(x == t[0] for t in tried):
        return None  # clamped to an end already tried: no step there fits, or every one does
    return x


def encode_residual(
    residual: np.ndarray,
    budget: int | None = None,
    max_mse: float | None = None,
    model: ContextModel | None = None,
) -> tuple[bytes, np.ndarray]:
    """The better of the volumetric and the planar transform: lower error within ``budget`` bytes,
    or fewer bytes within ``max_mse`` (mean squared error of the residual's reconstruction).
    ``model``: the array's learned context model (None: the hand-set per-chunk models)."""
    if model is not None and budget is not None:
        data, decoded = _learned_within(residual, budget, model)
        if len(data) < UNDERFILLED * budget:
            # The learned model could not fill the budget: near-empty chunks (air in CT) at low
            # rates, whose approximation band alone costs more than the budget under a
            # zero-centred model. The hand-set models adapt that band per chunk; the section's
            # flag tells the decoder.
            hand = encode_residual(residual, budget=budget)
            if _mse(hand[1], residual) < _mse(decoded, residual):
                return hand
        return data, decoded
    best: tuple[tuple[float, int], bytes, np.ndarray] | None = None
    for planar in (False, True):
        coder = ResidualCoder(residual, planar, model, budget)
        if budget is not None:
            data, decoded = coder.fit_budget(budget)
            cost = (_mse(decoded, residual), len(data))
        else:
            data, decoded = coder.fit_error(residual, max_mse)
            cost = (len(data), 0)
        if best is None or cost < best[0]:
            best = (cost, data, decoded)
    return best[1], best[2]


def _learned_within(residual: np.ndarray, budget: int, model: ContextModel) -> tuple[bytes, np.ndarray]:
    """Under the learned model both transforms code the step of the first guess
    (:meth:`ResidualCoder.first_guess`); at equal step they err about alike, so the one that codes
    it in fewer bytes goes on to the rate control, which starts from that trial: four RDOQ passes
    a chunk where running both searches took up to eleven."""
    coders = [ResidualCoder(residual, planar, model, budget) for planar in (False, True)]
    if budget <= _HEAD.size:
        return coders[0].fit_budget(budget)
    x, slope = coders[0].first_guess(budget)
    choice, coder = min(((c.choose(x), c) for c in coders), key=lambda t: t[0][2])
    return coder.fit_budget(budget, (x, slope, choice))


def _mse(decoded: np.ndarray, residual: np.ndarray) -> float:
    return float(np.mean((decoded - residual) ** 2))


def step_of(data: bytes) -> tuple[float, bool]:
    """(log2 quantizer step, planar transform) of a coded residual section."""
    step, levels, _ = _HEAD.unpack_from(data, 0)
    return float(np.log2(step)), bool(levels & _PLANAR)


def mark_filtered(data: bytes) -> bytes:
    """``data`` with its flag saying the array's post-filter applies to it set."""
    return data[:4] + bytes([data[4] | _FILTERED]) + data[5:]


def is_filtered(data: bytes) -> bool:
    """Whether the array's post-filter applies to this coded residual section."""
    return len(data) >= _HEAD.size and bool(data[4] & _FILTERED)


def min_residual_bytes(shape: tuple[int, ...]) -> int:
    """Size of an all-zero residual: the header alone (the planar transform has fewer subbands)."""
    shape = tuple(shape)
    return _HEAD.size + min(len(subband_shapes(shape, levels_for(shape, p), p)) for p in (False, True))


def _payload_start(data: bytes) -> int:
    """Where a section's descriptors or learned stream start: after its header and direction grids."""
    if len(data) < _HEAD.size or not data[5] & _STEERED:
        return _HEAD.size
    if len(data) < _HEAD.size + _GRIDS.size:
        raise ChunkFormatError("residual section is shorter than its direction grids")
    return _HEAD.size + _GRIDS.size + _GRIDS.unpack_from(data, _HEAD.size)[0]


def _descriptors(data: bytes, count: int) -> tuple[list[bytes], int]:
    """Each band's descriptor (see :func:`_code_band`) and where the ANS stream starts."""
    out, pos = [], _payload_start(data)
    for _ in range(count):
        if pos >= len(data):
            raise ChunkFormatError("residual section is shorter than its header")
        size = 1 + 2 * _CLASSES if data[pos] == _CONTEXT else 1
        out.append(data[pos : pos + size])
        pos += size
    if pos > len(data) or any(_CONTEXT in d[1:] for d in out):
        raise ChunkFormatError("residual section has an invalid header")
    return out, pos


def decode_residual(data: bytes, shape: tuple[int, ...], model: ContextModel | None = None) -> np.ndarray:
    """Inverse of :meth:`ResidualCoder.code` for a residual of ``shape`` (``model``: the array's
    learned context model, needed by sections coded under it)."""
    shape = tuple(shape)
    if len(data) < _HEAD.size:
        raise ChunkFormatError("residual section is shorter than its header")
    step, stored_levels, stored_bits = _HEAD.unpack_from(data, 0)
    bits = stored_bits & ~(_STEERED | _COMPILED)
    if stored_levels & (_LAYOUT | _SYMMETRIC) != _LAYOUT | _SYMMETRIC:
        raise ChunkFormatError(
            "residual section predates context coding or the symmetric-extension wavelet (an early "
            "pre-release streamcomp wrote it): compress the source again with this version"
        )
    planar = bool(stored_levels & _PLANAR)
    levels = levels_for(shape, planar)
    flags = _PLANAR | _LAYOUT | _SYMMETRIC | _LEARNED | _FILTERED
    if stored_levels & ~flags != levels or not (np.isfinite(step) and step > 0) or bits > 30:
        raise ChunkFormatError("residual section has an invalid header")
    band_shapes = subband_shapes(shape, levels, planar)
    axes = transform_axes(shape, planar)
    start = _payload_start(data)
    grids = data[_HEAD.size + _GRIDS.size : start]
    directions = Directions.from_bytes(grids, shape, levels, axes) if stored_bits & _STEERED else None
    if stored_levels & _LEARNED:
        if model is None:
            raise ChunkFormatError("residual section is coded under a learned context model the array does not carry")
        symbols = learned_bands.decode(
            model, lattices(band_shapes, axes), parents(len(band_shapes), levels), levels, data[start:], bits
        )
        return reconstruct(_dequantize(symbols, step), shape, levels, planar, steering=directions)
    descriptors, start = _descriptors(data, len(band_shapes))
    body = data[start:]
    if len(body) % 4:
        raise ChunkFormatError("residual section is not a whole number of 32-bit words")
    read = _CompiledReader(body, bits) if stored_bits & _COMPILED else _RunReader(body, bits)
    band_lattices = lattices(band_shapes, transform_axes(shape, planar))
    symbols: list[np.ndarray] = []
    for desc, lattice, parent in zip(descriptors, band_lattices, parents(len(band_shapes), levels), strict=True):
        q = np.zeros(lattice.shape, np.int32)
        if len(desc) == 1 and desc[0]:
            q[...] = read.whole(q.size, desc[0]).reshape(q.shape)
        elif len(desc) > 1:
            codes = np.frombuffer(desc, np.uint8, offset=1).astype(np.int64)
            upper = lattice.parent(None if parent is None else symbols[parent])
            for half in (False, True):
                read.half(lattice, upper, q, half, codes)
        symbols.append(q)
    read.finish()
    return reconstruct(_dequantize(symbols, step), shape, levels, planar, steering=directions)


class _CompiledReader:
    """Decodes a section's bands from the compiled coder's stream."""

    def __init__(self, body: bytes, bits: int) -> None:
        self.coder = rans.Decoder(body) if body else None
        self.edge, escape = _edge(bits)
        self.table = _compiled_table(self.edge, escape)

    def _pop(self, rows: np.ndarray) -> np.ndarray:
        if self.coder is None:
            raise ChunkFormatError("residual section names coded bands but carries no stream")
        return rans.unfold(self.coder.pop(rows, self.table), self.edge)

    def whole(self, count: int, code: int) -> np.ndarray:
        return self._pop(np.full(count, code, np.int64))

    def half(self, lattice: Lattice, upper: np.ndarray, q: np.ndarray, second: bool, codes: np.ndarray) -> None:
        index, classes = _half_classes(lattice, upper, q if second else None, second)
        rows = codes[classes]
        coded = np.flatnonzero(rows)
        if coded.size:
            q.reshape(-1)[index[coded]] = self._pop(rows[coded])

    def finish(self) -> None:
        if self.coder is not None:
            self.coder.finish()


class _RunReader:
    """Decodes a section written before the compiled coder: a constriction run per class."""

    def __init__(self, body: bytes, bits: int) -> None:
        self.coder = constriction.stream.stack.AnsCoder(np.frombuffer(body, np.uint32).copy())
        self.models = _Models(bits)

    def whole(self, count: int, code: int) -> np.ndarray:
        return self.models.decode(self.coder, count, code)

    def half(self, lattice: Lattice, upper: np.ndarray, q: np.ndarray, second: bool, codes: np.ndarray) -> None:
        index, classes = _half_classes(lattice, upper, q if second else None, second)
        order = np.argsort(classes, kind="stable")
        counts = np.bincount(classes, minlength=2 * _CLASSES)
        runs = [
            self.models.decode(self.coder, n, code) if code else np.zeros(n, np.int32)
            for n, code in zip(counts.tolist(), codes.tolist(), strict=True)
            if n
        ]
        if runs:
            q.reshape(-1)[index[order]] = np.concatenate(runs)

    def finish(self) -> None:
        """Sections before the compiled coder were not checked for trailing words."""
