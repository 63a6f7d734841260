"""Exact coding of an integer array: a reversible wavelet (5/3 or 9/7-M) and context-adaptive ANS.

Why a wavelet rather than a causal predictor (JPEG-LS, JPEG XL's modular mode): every band, and
each half of its checkerboard, decodes in one vectorized pass, where a causal predictor must visit
voxels one by one; and the transform runs along z as well, which per-slice image codecs cannot.

Context: each coefficient's magnitude is estimated from what the decoder already holds: its
parent's magnitude, the co-located magnitudes in the level's bands decoded before it (siblings)
and, in the checkerboard's second half, the mean magnitude of its decoded neighbours in the first
(weighted double). The estimate falls into half-octave classes, and each class of each half of
each band gets its own Laplace scale (a one-byte code, chosen by code length).

Symbols: a value v whose class has scale s is split as ``v = hi * 2**k + lo`` with ``s / 2**k``
in [4, 8): ``hi`` is coded under the Laplace mass of its bin (a lookup table, an escape past
+-63), ``lo`` as k uniform bits. A wide class (CT's coarse bands, EM's noise) thus costs a table
lookup per coefficient, not a parametric model.

Layout: u8 levels | planar flag | 9/7-M flag | compiled flag, u8 symbol bits; per band u8 0 (all
zero) or 1 followed by, per half, u8 first class, u8 class count and that many scale codes; then
one ANS stream: the compiled coder's (:mod:`streamcomp.coding.rans`), every half's coded
positions in index order, each under its class's row; or, in chunks written before it (no
compiled flag), constriction's, the half's positions by class, a run per class.

Under an array's learned context model (:mod:`streamcomp.coding.context_model`, fitted on a sample
by :func:`streamcomp.format.bounded_fit.fit_bounded_model`) a chunk may instead be coded as the lossy
coder codes its quantized bands (:mod:`streamcomp.coding.learned_bands`): its header carries the
learned flag and the stream follows it, no band descriptors. The encoder keeps the shorter.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from functools import lru_cache, partial

import constriction
import numpy as np

from streamcomp.coding import learned_bands, rans
from streamcomp.coding.bands import (
    Lattice,
    LevelSums,
    clear_winner,
    group_codes,
    lattices,
    level_start,
    levels_for,
    log_magnitudes,
    parents,
    reconstruct,
    scale_of,
    subband_shapes,
    subbands,
    transform_axes,
)
from streamcomp.coding.context_model import ContextModel
from streamcomp.coding.rate_estimate import first_order_bytes
from streamcomp.errors import ChunkFormatError

MAX_RANGE = 2**20  # widest value range (max - min + 1) coded here; coefficients stay below 2**30
_HEAD = struct.Struct("<BB")
_PLANAR = 0x80
_LEARNED = 0x40  # coded under the array's learned context model
_LONG = 0x20  # the 9/7-M transform (else 5/3)
_COMPILED = 0x10  # the hand-set classes' stream is the compiled coder's (format 10)
_CLASSES = 24
_UNIT = 64  # the magnitude estimate in 1/64ths: integer arithmetic, identical on every platform
_HALF_OCTAVE = np.sqrt(0.5)
_EDGE = 63  # largest |hi| coded through the table; beyond, an escape and a parametric Laplace
_ESCAPE = 2 * _EDGE + 1
_max_of = np.maximum.reduce  # ndarray.max without its Python wrapper: a run is often a few symbols
# The hand-set classes' bits over the coefficients' first-order entropy: never below 0.91 on EM and
# head CT levels at E = 1-16 (learned codes: 0.86-0.98, or above 1 on a chunk unlike the model's
# sample). A learned code under this share of the first-order bits is kept without planning them.
CLASSES_FLOOR = 0.9


class _Band:
    """One band's context sources: its lattice, parent magnitudes and siblings' magnitude sum
    (``siblings``: the sum of ``count`` of them, of this band's shape or larger along any axis)."""

    def __init__(self, lattice: Lattice, parent: np.ndarray | None, siblings: np.ndarray, count: int) -> None:
        self.lattice = lattice
        self.known = parent is not None
        self.sources = int(self.known) + count
        self.base = lattice.parent(parent)  # a new int64 array: the siblings add into it
        if count:
            self.base += lattice.fit(siblings)

    def classes(self, first: np.ndarray | None, index: np.ndarray) -> np.ndarray:
        """The class of each flat position in ``index``: from parent and siblings (first half,
        ``first`` None), plus the decoded first-half neighbours (second half)."""
        if first is None:
            if not self.sources:
                return np.zeros(index.size, np.uint8)
            estimate = (_UNIT * self.base.reshape(-1)[index]) // self.sources
        else:
            count = 2 * len(self.lattice.axes)
            near = self.lattice.neighbours(first).reshape(-1)[index]
            estimate = (_UNIT * (count * self.base.reshape(-1)[index] + 2 * near)) // (count * (self.sources + 2))
        return _CLASS_OF[np.minimum(estimate, _CLASS_OF.size - 1)]


def _classify(estimate: np.ndarray) -> np.ndarray:
    """Half-octave class of ``1 + estimate / _UNIT``: exact (frexp and one comparison), so encoder
    and decoder agree on every platform; uint8, so the stable sort by class is a radix sort."""
    mantissa, exponent = np.frexp((estimate + _UNIT).astype(np.float64))
    classes = 2 * (exponent.astype(np.int16) - 7) + (mantissa >= _HALF_OCTAVE)
    return np.clip(classes, 0, _CLASSES - 1).astype(np.uint8)


# _classify of every estimate up to the first in the top class (all larger ones are in it too):
# a table lookup instead of frexp over every position.
_CLASS_OF = _classify(np.arange(int(np.ceil(_UNIT * 2 ** ((_CLASSES - 1) / 2))) - _UNIT + 1))


def _contexts(
    shapes: list[tuple[int, ...]], shape: tuple[int, ...], levels: int, planar: bool
) -> Iterator[Callable[[list[np.ndarray]], _Band]]:
    """For each band in decode order, a function of the bands decoded so far giving its _Band:
    called at most once each, in band order (a level's sibling sum grows with the calls)."""
    band_lattices = lattices(shapes, transform_axes(shape, planar))
    per_level = (len(shapes) - 1) // levels
    sums = LevelSums([shapes[0]])
    for i, (lattice, parent) in enumerate(zip(band_lattices, parents(len(shapes), levels), strict=True)):
        first = level_start(i, per_level)
        if i == first and i:
            sums = LevelSums(shapes[first : first + per_level])
        yield partial(_context, lattice=lattice, parent=parent, sums=sums, first=first, i=i)


def _context(
    done: list[np.ndarray], lattice: Lattice, parent: int | None, sums: LevelSums, first: int, i: int
) -> _Band:
    while sums.count < i - first:  # the level's bands decoded since the last call
        sums.add(done[first + sums.count])
    return _Band(lattice, None if parent is None else done[parent], sums.total, sums.count)


@lru_cache(maxsize=4096)
def _model(bits: int, code: int) -> tuple[int, object, object, object]:
    """The bin width exponent k, the table over ``hi``, the escape model and the low bits' model
    of scale code ``code`` for symbols below ``2**bits`` (cached: every chunk reuses them)."""
    exponents, weights = _tables()
    k = int(exponents[code])
    width = 1 << k
    table = constriction.stream.model.Categorical(weights[code], perfect=False)
    top = (((1 << bits) - 1) >> k) + 1
    tail = constriction.stream.model.QuantizedLaplace(-top, top + 1, -0.5, float(scale_of(code)) / width)
    return k, table, tail, constriction.stream.model.Uniform(width) if k else None


@lru_cache(maxsize=1)
def _tables() -> tuple[np.ndarray, np.ndarray]:
    """Per scale code (row ``code``, every value its stored byte can hold): the bin width exponent k
    and the table's integer weights over ``hi`` (the escape's last), all codes in one pass: code by
    code they cost a fresh process's first read of a small array a tenth of its time (the same
    values: elementwise arithmetic)."""
    scale = scale_of(np.arange(256))[:, None]
    exponents = np.maximum(0, np.floor(np.log2(scale)).astype(np.int64) - 2)
    width = (1 << exponents).astype(np.float64)
    j = np.arange(-_EDGE, _EDGE + 1, dtype=np.float64)
    cdf = _cdf(scale, (j + 1) * width - 1) - _cdf(scale, j * width - 1)
    escape = _cdf(scale, -_EDGE * width - 1) + 1.0 - _cdf(scale, (_EDGE + 1) * width - 1)
    weights = np.maximum(np.round(np.concatenate([cdf, escape], axis=1) * 2.0**24), 1.0)
    return exponents[:, 0], weights


@lru_cache(maxsize=1)
def _compiled_table():
    """Every scale code's row for the compiled coder: ``hi`` through the table, an escaped ``hi``'s
    excess past it, then k low bits (:func:`streamcomp.coding.rans.fold`)."""
    exponents, weights = _tables()
    return rans.table(weights, _ESCAPE, np.full(len(weights), 2), exponents)


def _cdf(scale: float | np.ndarray, v: np.ndarray | float) -> np.ndarray:
    """P(V <= v) for the Laplace over unit bins centred on the integers."""
    v = np.asarray(v, np.float64)
    tail = 0.5 * np.exp(-(np.abs(v) + np.where(v >= 0, 0.5, -0.5)) / scale)
    return np.where(v >= 0, 1.0 - tail, tail)


def _decode_run(coder, count: int, bits: int, code: int) -> np.ndarray:
    """A run of a chunk written before the compiled coder: table symbols, escapes, low bits."""
    k, table, tail, low = _model(bits, code)
    hi = coder.decode(table, count)
    if _max_of(hi) == _ESCAPE:  # the table's last symbol
        escaped = hi == _ESCAPE
        hi[escaped] = coder.decode(tail, int(escaped.sum())) + _EDGE
    hi -= _EDGE
    if k:
        hi <<= k
        hi += coder.decode(low, count)
    return hi


def _runs(band: _Band, q: np.ndarray, half: bool) -> tuple[np.ndarray, np.ndarray]:
    """The half's positions sorted by class (stable), and how many fall in each class: the runs
    of a chunk written before the compiled coder, one constriction call each."""
    index = band.lattice.half_index(half)
    classes = band.classes(q if half else None, index)
    order = np.argsort(classes, kind="stable")
    return index[order], np.bincount(classes, minlength=_CLASSES)


def _halves(band: _Band, q: np.ndarray) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray]], float]:
    """Per half: (positions, their classes, the classes' scale codes), and the estimated bits."""
    out, bits = [], 0.0
    flat = np.abs(q).reshape(-1)
    for half in (False, True):
        index = band.lattice.half_index(half)
        classes = band.classes(q if half else None, index)
        codes, b = group_codes(flat[index], classes, _CLASSES)
        out.append((index, classes, codes))
        bits += b
    return out, bits


def _plan(shape: tuple[int, ...], planar: bool, bands: list[np.ndarray]) -> tuple[list, float]:
    """Per band, its halves' runs and scale codes (:func:`_halves`), and the estimated bits."""
    plans, bits = [], 0.0
    levels = levels_for(shape, planar)
    for context, q in zip(_contexts([b.shape for b in bands], shape, levels, planar), bands, strict=True):
        halves, b = _halves(context(bands), q)
        plans.append(halves)
        bits += b
    return plans, bits


def _checked(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"exact coding takes integers, not {x.dtype}")
    if x.size and int(x.max()) - int(x.min()) >= MAX_RANGE:
        raise ValueError(f"values span {MAX_RANGE} or more: too wide for the exact wavelet coder")
    return x.astype(np.int32)


def _chosen(
    x: np.ndarray, transform: tuple[bool, str] | None = None, learned: bool = False
) -> tuple[bool, str, list[np.ndarray], tuple[list, float] | None]:
    """(planar, integer transform, bands, their plan and estimated bits where the choice needed
    them). Volumetric or planar 9/7-M, whichever codes shorter (planar wins on serial-section EM,
    whose sections barely correlate): by their summed log-magnitudes where those differ clearly,
    else by both plans' estimated bits, or where the array's ``learned`` model will code them
    (whose estimate is their first-order entropy, not the hand-set classes') by both first-order
    estimates, a tenth of the plans' cost; 5/3 over the same axes replaces it where
    its coefficients' summed log-magnitudes are smaller (piecewise-constant data such as labels:
    9/7-M's longer predict rings at edges). 9/7-M codes smooth data shorter: EM and head CT ~1.4 %
    losslessly, thorax CT even. A caller that knows the answer names it (``transform``: planar,
    integer transform) and the others are not tried."""
    if transform is not None:
        planar, integer = transform
        return planar, integer, subbands(x, levels_for(x.shape, planar), planar, integer), None
    bands = {p: subbands(x, levels_for(x.shape, p), p, "9/7-M") for p in (False, True)}
    sizes = {p: log_magnitudes(b) for p, b in bands.items()}
    planar, plans = clear_winner(sizes), None
    if planar is None and learned:
        planar = bool(_first_order_bits(bands[True]) < _first_order_bits(bands[False]))
    if planar is None:
        planned = {p: _plan(x.shape, p, b) for p, b in bands.items()}
        planar = planned[True][1] < planned[False][1]
        plans = planned[planar]
    short = subbands(x, levels_for(x.shape, planar), planar, "5/3")
    if log_magnitudes(short) < sizes[planar]:
        return planar, "5/3", short, None
    return planar, "9/7-M", bands[planar], plans


def _first_order_bits(bands: list[np.ndarray]) -> float:
    return 8 * first_order_bytes([np.abs(b).reshape(-1) for b in bands if b.size], 0.0)


def _flags(shape: tuple[int, ...], planar: bool, integer: str) -> int:
    return levels_for(shape, planar) | (_PLANAR if planar else 0) | (_LONG if integer == "9/7-M" else 0)


def _bits(bands: list[np.ndarray]) -> int:
    return max((int(np.abs(b).max()) for b in bands if b.size), default=0).bit_length()


def _learned_code(
    shape: tuple[int, ...], planar: bool, integer: str, bands: list[np.ndarray], model: ContextModel
) -> bytes:
    levels, bits = levels_for(shape, planar), _bits(bands)
    band_lattices = lattices([b.shape for b in bands], transform_axes(shape, planar))
    stream = learned_bands.encode(model, band_lattices, parents(len(bands), levels), levels, bands, bits)
    return _HEAD.pack(_flags(shape, planar, integer) | _LEARNED, bits) + stream


class ExactPlan:
    """An integer array planned for exact coding: its transform chosen and its bytes estimated
    (:attr:`bits`, without the band descriptors), so that a caller can compare sections before
    coding any (:func:`streamcomp.format.bounded.encode_bounded` does).

    Without a model the estimate is the hand-set classes' bits. Under the array's context
    ``model`` it is the coefficients' first-order entropy, a tenth of the cost, and the classes
    are planned only for a section that is coded, where the learned code may lose to them (not
    when it is under CLASSES_FLOOR of the first-order bits)."""

    def __init__(
        self, x: np.ndarray, model: ContextModel | None = None, transform: tuple[bool, str] | None = None
    ) -> None:
        """``transform``: (planar, integer transform) to use, where the caller knows which codes
        ``x`` shortest; None: chosen by :func:`_chosen`."""
        x = _checked(x)
        self.shape = x.shape
        self.model = model
        self.planar, self.integer, self.bands, planned = _chosen(x, transform, model is not None)
        self._planned = planned
        self.bits = self._hand_set_plan()[1] if model is None else _first_order_bits(self.bands)

    def _hand_set_plan(self) -> tuple[list, float]:
        """The hand-set classes' plan and estimated bits (planned once)."""
        if self._planned is None:
            self._planned = _plan(self.shape, self.planar, self.bands)
        return self._planned

    def code(self, model: ContextModel | None = None) -> bytes:
        """The array's code under the plan's model (else ``model``) where that codes shorter than
        the hand-set classes, which are coded too only when the learned code is longer than their
        estimate (a chunk unlike the model's sample)."""
        model = self.model if self.model is not None else model
        if model is None:
            return self._hand_set()
        learned = _learned_code(self.shape, self.planar, self.integer, self.bands, model)
        if self._planned is None and 8 * len(learned) <= CLASSES_FLOOR * self.bits:
            return learned  # shorter than the classes can be: no need to plan them
        if 8 * len(learned) < self._hand_set_plan()[1]:
            return learned
        return min(learned, self._hand_set(), key=len)

    def _hand_set(self) -> bytes:
        return _hand_set_code(self.shape, self.planar, self.integer, self.bands, self._hand_set_plan()[0])


def encode_exact(x: np.ndarray, model: ContextModel | None = None) -> bytes:
    """Code an integer array (values within :data:`MAX_RANGE` of each other) exactly; under the
    array's context ``model`` where that codes shorter (:class:`ExactPlan`)."""
    return ExactPlan(x, model).code()


def _hand_set_code(shape: tuple[int, ...], planar: bool, integer: str, bands: list[np.ndarray], plans: list) -> bytes:
    head = bytearray(_HEAD.pack(_flags(shape, planar, integer) | _COMPILED, _bits(bands)))
    segments: list[tuple[np.ndarray, np.ndarray]] = []
    exponents = _tables()[0]
    for q, halves in zip(bands, plans, strict=True):
        if not q.any():
            head.append(0)
            continue
        head.append(1)
        flat = q.reshape(-1)
        for index, classes, codes in halves:
            used = np.flatnonzero(codes)
            lo, n = (int(used[0]), int(used[-1] - used[0] + 1)) if used.size else (0, 0)
            head += bytes([lo, n, *codes[lo : lo + n].tolist()])
            rows = codes[classes]
            coded = np.flatnonzero(rows)
            if coded.size:
                rows = rows[coded]
                segments.append((rans.fold(flat[index[coded]], _EDGE, exponents[rows]), rows))
    if segments:
        coder = rans.Encoder()
        for symbols, rows in reversed(segments):
            coder.push(symbols, rows, _compiled_table())
        head += coder.finish()
    return bytes(head)


def _read_codes(data: bytes, pos: int) -> tuple[np.ndarray, int]:
    if pos + 2 > len(data):
        raise ChunkFormatError("exact-coded section is shorter than its band descriptors")
    lo, n = data[pos], data[pos + 1]
    if lo + n > _CLASSES or pos + 2 + n > len(data):
        raise ChunkFormatError("exact-coded section has an invalid band descriptor")
    codes = np.zeros(_CLASSES, np.int64)
    codes[lo : lo + n] = np.frombuffer(data, np.uint8, n, pos + 2)
    return codes, pos + 2 + n


def decode_exact(data: bytes, shape: tuple[int, ...], model: ContextModel | None = None) -> np.ndarray:
    """Inverse of :func:`encode_exact` for an array of ``shape`` (int32), under the same ``model``."""
    shape = tuple(shape)
    if len(data) < _HEAD.size:
        raise ChunkFormatError("exact-coded section is shorter than its header")
    flags, bits = _HEAD.unpack_from(data, 0)
    planar = bool(flags & _PLANAR)
    integer = "9/7-M" if flags & _LONG else "5/3"
    levels = levels_for(shape, planar)
    both = flags & _LEARNED and flags & _COMPILED  # a learned section's stream is its model's
    if flags & ~(_PLANAR | _LEARNED | _LONG | _COMPILED) != levels or bits > 30 or both:
        raise ChunkFormatError("exact-coded section has an invalid header")
    shapes = subband_shapes(shape, levels, planar)
    if flags & _LEARNED:
        if model is None:
            raise ChunkFormatError(
                "exact-coded section was coded under a learned context model that the array's codec "
                "configuration does not carry: the metadata is damaged or from another array"
            )
        band_lattices = lattices(shapes, transform_axes(shape, planar))
        body = data[_HEAD.size :]
        bands = learned_bands.decode(model, band_lattices, parents(len(shapes), levels), levels, body, bits)
        return reconstruct(bands, shape, levels, planar, integer)
    descriptors, pos = [], _HEAD.size
    for _ in shapes:
        if pos >= len(data) or data[pos] > 1:
            raise ChunkFormatError("exact-coded section has an invalid band descriptor")
        pos += 1
        if not data[pos - 1]:
            descriptors.append(None)
            continue
        first, pos = _read_codes(data, pos)
        second, pos = _read_codes(data, pos)
        descriptors.append((first, second))
    body = data[pos:]
    if len(body) % 4:
        raise ChunkFormatError("exact-coded section is not a whole number of 32-bit words")
    read = _CompiledReader(body) if flags & _COMPILED else _RunReader(body, bits)
    bands: list[np.ndarray] = []
    for context, band_shape, desc in zip(_contexts(shapes, shape, levels, planar), shapes, descriptors, strict=True):
        q = np.zeros(band_shape, np.int32)
        if desc is not None:
            band = context(bands)
            for half, codes in zip((False, True), desc, strict=True):
                read(band, q, half, codes)
        bands.append(q)
    read.finish()
    return reconstruct(bands, shape, levels, planar, integer)


class _CompiledReader:
    """Decodes a half's coded positions, in index order, from the compiled coder's stream."""

    def __init__(self, body: bytes) -> None:
        self.coder = rans.Decoder(body) if body else None
        self.finish = self.coder.finish if body else lambda: None

    def __call__(self, band: _Band, q: np.ndarray, half: bool, codes: np.ndarray) -> None:
        index = band.lattice.half_index(half)
        rows = codes[band.classes(q if half else None, index)]
        coded = np.flatnonzero(rows)
        if coded.size:
            if self.coder is None:
                raise ChunkFormatError("exact-coded section names coded classes but carries no stream")
            rows = rows[coded]
            symbols = self.coder.pop(rows, _compiled_table())
            q.reshape(-1)[index[coded]] = rans.unfold(symbols, _EDGE, _tables()[0][rows])


class _RunReader:
    """Decodes a half's runs of equal classes from a chunk written before the compiled coder."""

    def __init__(self, body: bytes, bits: int) -> None:
        self.coder = constriction.stream.stack.AnsCoder(np.frombuffer(body, np.uint32).copy())
        self.bits = bits

    def __call__(self, band: _Band, q: np.ndarray, half: bool, codes: np.ndarray) -> None:
        positions, counts = _runs(band, q, half)
        present = counts > 0
        runs = [
            _decode_run(self.coder, n, self.bits, code) if code else np.zeros(n, np.int32)
            for n, code in zip(counts[present].tolist(), codes[present].tolist(), strict=True)
        ]
        if runs:
            q.reshape(-1)[positions] = np.concatenate(runs)

    def finish(self) -> None:
        """Chunks before the compiled coder were not checked for trailing words."""
