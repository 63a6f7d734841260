"""A learned entropy model for quantized wavelet subbands, evaluated in integers.

Why: the hand-set coder (:mod:`streamcomp.coding.residual`) gives each subband a few context
classes and one Laplace scale per class, chosen per chunk and stored. A small network that maps
richer contexts (parent, the parent's neighbourhood, the siblings already decoded at the same
position, decoded neighbours) straight to a distribution needs no per-chunk side information and
fits the dead-zone quantizer's wide zero cell, which one Laplace over unit bins cannot.

What a coefficient's magnitude's distribution is: P(0) = p0, P(k) = (1 - p0) * (1 - t) * t**(k - 1),
t = exp(-1 / s) (a zero flag and a geometric tail, which is what dead-zone quantized Laplacian
coefficients follow). The network predicts logit(p0) and log2(s) per context; both are rounded to
codes, and each (p0, s) code pair has one integer-weighted table. A nonzero's sign is then coded by
the model's sign part (:mod:`streamcomp.coding.sign_model`); a version 1 model has none and its
tables cover signed values, P(+-k) = P(k) / 2.

Why integers: encoder and decoder must compute identical probabilities on any CPU. Context
features are half-octave buckets of integer magnitude sums and the network has integer weights,
evaluated exactly (see :meth:`ContextModel.outputs`), so codes are bit-identical everywhere; and
since a band's context is four 4-bit buckets, the network runs once per distinct context of a
band class and is cached, which makes decode cost a table lookup per coefficient whatever the
network's size.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cached_property, lru_cache

import constriction
import numba
import numpy as np

from streamcomp.coding import rans
from streamcomp.coding.bands import (
    _BUCKET,
    BUCKETS,
    MAX_LEVELS,
    Lattice,
    LevelSums,
    buckets,
    lattices,
    level_start,
    neighbour_index,
)
from streamcomp.coding.lifting import detail_keys
from streamcomp.coding.sign_model import SignModel, sign_class, sign_features
from streamcomp.errors import ChunkFormatError

FEATURES = 4  # parent, parent neighbourhood, decoded neighbours, decoded siblings
KEYS = BUCKETS**FEATURES
# Class features: approximation band, detail level (one-hot, finest first), high-pass axes / axes,
# first axis high-pass, two-axis (planar) transform, then the phase (one-hot: second, third).
CLASS_FEATURES = 1 + MAX_LEVELS + 5
PHASES = 3
INPUTS = FEATURES + CLASS_FEATURES
IN_SHIFT = 4  # inputs are features * 2**IN_SHIFT (buckets 0..15 -> [0, 1))
W_SHIFT = 8  # weights and hidden activations are fixed point with 8 fractional bits
# Codes in half steps: finer ones code the CT sample 0.08 % shorter but make ~30 % more runs to code.
A_STEPS, A_MAX = 2, 24  # logit(p0) codes in 1/2 steps, |logit| <= 12
S_STEPS, S_MIN, S_MAX = 2, -12, 20  # log2(s) codes in 1/2 steps, s in [2**-6, 2**10]
S_CODES = S_MAX - S_MIN + 1
PAIRS = (2 * A_MAX + 1) * S_CODES
DIRECT = 63  # largest magnitude coded through a table; larger ones escape to a Laplace
LEAK_BITS = 24.0  # constriction's models give every symbol at least 2**-24: no symbol costs more
_HEAD = struct.Struct("<4sBB")  # magic, version, hidden units
# 1: signed values under symmetric tables; 2: magnitudes, then the nonzeros' signs under the
# model's sign part (:mod:`streamcomp.coding.sign_model`), which follows the weights; 3: the same
# model, its sections coded by the compiled coder (:mod:`streamcomp.coding.rans`), a table per
# position instead of runs of equal codes through constriction.
VERSION = 3
_MAGIC = b"SCCM"


def band_classes(count: int, levels: int, axes: int) -> list[np.ndarray]:
    """Class features (without the half flag) of each of ``count`` bands in :func:`wavedec` order."""
    keys = detail_keys(axes)
    out = []
    for i in range(count):
        f = np.zeros(CLASS_FEATURES, np.int64)
        if i == 0:
            f[0] = 1
        else:
            level = levels - 1 - (i - 1) // len(keys)  # 0 = finest
            key = keys[(i - 1) % len(keys)]
            f[1 + level] = 1
            f[1 + MAX_LEVELS] = key.count("d") * BUCKETS // axes
            f[2 + MAX_LEVELS] = BUCKETS * (key[0] == "d")
        f[3 + MAX_LEVELS] = BUCKETS * (axes == 2)  # the last two slots: the phase
        out.append(f)
    return out


def class_vector(base: np.ndarray, phase: int) -> np.ndarray:
    f = base.copy()
    f[-2:] = 0
    if phase:
        f[-3 + phase] = BUCKETS
    return f


def class_id(base: np.ndarray, phase: int) -> bytes:
    return class_vector(base, phase).tobytes()


def _box(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Sum over the 3x3(x3) neighbourhood along ``axes`` (zero outside), by shifted slices."""
    out = x
    for ax in axes:
        summed = out.copy()
        later = tuple(slice(1, None) if a == ax else slice(None) for a in range(x.ndim))
        earlier = tuple(slice(None, -1) if a == ax else slice(None) for a in range(x.ndim))
        summed[later] += out[earlier]
        summed[earlier] += out[later]
        out = summed
    return out


class BandContexts:
    """Context keys of a band's coefficients, from what a decoder has at that point.

    A band is decoded in three phases, each one vectorized call: the checkerboard's first half split
    by the parity of its row (phase 0, then phase 1), then the second half (phase 2). Every phase
    sees the parent (magnitude and 3x3(x3) neighbourhood) and the siblings decoded before it; phase
    1 also its four in-plane diagonal neighbours from phase 0, phase 2 its face neighbours from both.
    So a quarter of the coefficients, not half, are coded without neighbours.
    """

    def __init__(self, lattice: Lattice, parent: np.ndarray | None, siblings: LevelSums) -> None:
        """``siblings``: the magnitudes of the level's bands decoded before this one."""
        self.lattice = lattice
        # the parent's buckets taken at its own resolution, then spread over its children once
        if parent is None:
            self._fixed = np.zeros(lattice.shape, np.int64)
        else:
            mag = np.abs(parent).astype(np.int64)
            self._fixed = lattice.parent(buckets(mag) | buckets(_box(mag, lattice.axes)) << 4)
        if siblings.count:
            self._fixed |= buckets(lattice.fit(siblings.total)) << 12

    def positions(self, phase: int) -> np.ndarray:
        return phase_index(self.lattice, phase)

    def keys(self, phase: int, around: np.ndarray) -> np.ndarray:
        """Keys (16-bit) of ``phase``'s positions; ``around``: the decoded values at their
        :func:`neighbour_index`."""
        index = phase_index(self.lattice, phase)
        if not len(around):
            return self._fixed.reshape(-1)[index]
        return _phase_keys(self._fixed.reshape(-1), index, around)


@numba.njit(nogil=True, cache=True)
def _phase_keys(fixed: np.ndarray, index: np.ndarray, around: np.ndarray) -> np.ndarray:
    """``fixed[index]`` with the bucket of each position's summed neighbour magnitudes (``around``:
    (pairs, 2, positions)) in bits 8-11: one pass where numpy took five."""
    out = np.empty(len(index), np.int64)
    for i in range(len(index)):
        total = 0
        for p in range(around.shape[0]):
            total += abs(np.int64(around[p, 0, i])) + abs(np.int64(around[p, 1, i]))
        out[i] = fixed[index[i]] | _BUCKET[min(total, len(_BUCKET) - 1)] << 8
    return out


def phase_index(lattice: Lattice, phase: int) -> np.ndarray:
    """Flat positions of a band's phase (see :class:`BandContexts`), cached per band shape."""
    return _phases(lattice.shape, lattice.axes)[phase]


@lru_cache(maxsize=64)  # as many as the lattices kept (:func:`streamcomp.coding.bands.lattices`)
def _phases(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lattice = lattices([shape], axes)[0]
    first = lattice.half_index(False)
    row_axis = axes[-2] if len(axes) > 1 else axes[0]
    rows = np.unravel_index(first, shape)[row_axis] % 2 == 1
    return first[~rows], first[rows], lattice.half_index(True)


def key_inputs(keys: np.ndarray) -> np.ndarray:
    """The network's feature inputs of context keys: the four buckets, times 2**IN_SHIFT / 16."""
    keys = np.asarray(keys, np.int64)
    return np.stack([(keys >> (4 * i)) & 15 for i in range(FEATURES)], axis=-1)


class ContextModel:
    """The stored student: one hidden layer of integer weights; see the module docstring.
    ``signs``: the sign model (None: a version 1 model, whose tables code the signs at one bit)."""

    def __init__(
        self, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray, signs: SignModel | None = None,
        version: int = VERSION,
    ) -> None:
        self.signs = signs
        self.version = version
        self.w1, self.b1 = np.asarray(w1, np.int64), np.asarray(b1, np.int64)
        self.w2, self.b2 = np.asarray(w2, np.int64), np.asarray(b2, np.int64)
        if self.w1.shape[0] != INPUTS or self.w2.shape != (self.w1.shape[1], 2):
            raise ChunkFormatError("context model weights have inconsistent shapes")
        self._w1, self._b1, self._w2, self._b2 = (a.astype(np.float64) for a in (self.w1, self.b1, self.w2, self.b2))
        self._tables: dict[bytes, np.ndarray] = {}

    @classmethod
    def from_float(cls, w1, b1, w2, b2) -> ContextModel:
        """Round a float network (inputs in [0, 1), as :func:`key_inputs` / 16) to integers."""
        q = 1 << W_SHIFT
        return cls(
            np.clip(np.round(np.asarray(w1) * q), -32768, 32767),
            np.round(np.asarray(b1) * q * (1 << IN_SHIFT)),
            np.clip(np.round(np.asarray(w2) * q), -32768, 32767),
            np.round(np.asarray(b2) * q * q),
        )

    @property
    def hidden(self) -> int:
        return self.w1.shape[1]

    @property
    def compiled(self) -> bool:
        """Whether its sections are coded by the compiled coder (version 3; else constriction's runs)."""
        return self.signs is not None and self.version >= 3

    def outputs(self, inputs: np.ndarray) -> np.ndarray:
        """(logit p0, log2 s) in fixed point (2**(2 * W_SHIFT)) for integer ``inputs`` (n, INPUTS).

        Computed in float64 on integer values: every product and partial sum is an integer below
        2**53, so BLAS gives the exact result in any summation order, on any CPU."""
        pre = np.asarray(inputs, np.float64) @ self._w1 + self._b1
        h = np.floor(np.maximum(pre, 0.0) / (1 << IN_SHIFT))
        return h @ self._w2 + self._b2

    def codes(self, inputs: np.ndarray) -> np.ndarray:
        """Pair codes (see :func:`pair_params`) of integer ``inputs``."""
        out = self.outputs(inputs)
        unit = float(1 << (2 * W_SHIFT))
        a = np.clip(np.floor((out[:, 0] * A_STEPS + unit / 2) / unit), -A_MAX, A_MAX).astype(np.int64)
        s = np.clip(np.floor((out[:, 1] * S_STEPS + unit / 2) / unit), S_MIN, S_MAX).astype(np.int64)
        return ((a + A_MAX) * S_CODES + (s - S_MIN)).astype(np.int16)

    def pairs(self, base: np.ndarray, phase: int, keys: np.ndarray) -> np.ndarray:
        """Pair codes of context ``keys`` (all the positions of one band phase) in one band class.
        The network runs once per distinct key of a class; a table per class keeps the results
        (-1: not computed yet). Where the codes are coded in runs (before version 3), rare codes
        are merged (:func:`_merge_rare`)."""
        cid = class_id(base, phase)
        table = self._tables.get(cid)
        if table is None:
            table = self._tables[cid] = np.full(KEYS, -1, np.int16)
        pairs = table[keys]
        missing = pairs < 0
        if missing.any():
            seen = np.zeros(KEYS, bool)  # the distinct keys by a mask: sorting millions cost more
            seen[keys[missing]] = True
            new = np.flatnonzero(seen)
            inputs = np.concatenate(
                (key_inputs(new), np.broadcast_to(class_vector(base, phase), (len(new), CLASS_FEATURES))), axis=1
            )
            table[new] = self.codes(inputs)
            pairs = table[keys]
        return pairs if self.compiled else _merge_rare(pairs)

    def to_bytes(self) -> bytes:
        parts = [self.w1.astype("<i2"), self.b1.astype("<i4"), self.w2.astype("<i2"), self.b2.astype("<i4")]
        version, tail = (1, b"") if self.signs is None else (self.version, self.signs.to_bytes())
        return _HEAD.pack(_MAGIC, version, self.hidden) + b"".join(p.tobytes() for p in parts) + tail

    @classmethod
    def from_bytes(cls, blob: bytes) -> ContextModel:
        if len(blob) < _HEAD.size:
            raise ChunkFormatError("context model is truncated")
        magic, version, hidden = _HEAD.unpack_from(blob, 0)
        if magic != _MAGIC or not 1 <= version <= VERSION or not hidden:
            raise ChunkFormatError("context model has an unknown header: upgrade streamcomp to read this array")
        sizes = [(INPUTS * hidden, "<i2"), (hidden, "<i4"), (hidden * 2, "<i2"), (2, "<i4")]
        end = _HEAD.size + sum(n * np.dtype(t).itemsize for n, t in sizes)
        if len(blob) < end or (version == 1 and len(blob) != end):
            raise ChunkFormatError("context model has the wrong size")
        pos, arrays = _HEAD.size, []
        for n, t in sizes:
            arrays.append(np.frombuffer(blob, t, n, pos))
            pos += n * np.dtype(t).itemsize
        w1, b1, w2, b2 = arrays
        signs = SignModel.from_bytes(blob[end:]) if version > 1 else None
        return cls(w1.reshape(INPUTS, hidden), b1, w2.reshape(hidden, 2), b2, signs, version)


MIN_RUN = 16  # a code fewer symbols of a band phase share is rounded to a coarse one
COARSE = 4  # the coarse codes' grid, in code steps (two units of logit and of log2 s)


def _coarse_pairs() -> np.ndarray:
    a, s = np.divmod(np.arange(PAIRS), S_CODES)
    a = np.clip(np.round((a - A_MAX) / COARSE) * COARSE + A_MAX, 0, 2 * A_MAX).astype(np.int64)
    s = np.clip(np.round((s + S_MIN) / COARSE) * COARSE - S_MIN, 0, S_CODES - 1).astype(np.int64)
    return (a * S_CODES + s).astype(np.int16)


_COARSE = _coarse_pairs()


def _merge_rare(pairs: np.ndarray) -> np.ndarray:
    """Codes shared by fewer than MIN_RUN symbols of a band phase take their coarse code instead:
    each code is one entropy-coder call, and half the calls coded ~1 % of the symbols. Decided from
    the codes alone, so the decoder merges exactly as the encoder did."""
    counts = np.bincount(pairs, minlength=PAIRS)
    rare = counts[pairs] < MIN_RUN
    if not rare.any():
        return pairs
    merged = pairs.copy()
    merged[rare] = _COARSE[pairs[rare]]
    return merged


def pair_params(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(p0, t) of pair codes."""
    pairs = np.asarray(pairs, np.int64)
    a = (pairs // S_CODES - A_MAX) / A_STEPS
    s = 2.0 ** ((pairs % S_CODES + S_MIN) / S_STEPS)
    return 1.0 / (1.0 + np.exp(-a)), np.exp(-1.0 / s)


@lru_cache(maxsize=16)
def _weights(edge: int, escape: bool, signed: bool) -> np.ndarray:
    """Integer table weights of every pair code over [-edge, edge] (``signed``) or [0, edge], and
    an escape symbol: the coder's models and the rate estimate read the same numbers."""
    p0, t = (v[:, None] for v in pair_params(np.arange(PAIRS)))
    k = np.arange(1, edge + 1, dtype=np.float64)
    side = (1 - p0) / 2 * (1 - t) * t ** (k - 1)
    columns = ([side[:, ::-1], p0, side] if signed else [p0, 2 * side]) + ([(1 - p0) * t**edge] if escape else [])
    return np.maximum(np.round(np.concatenate(columns, axis=1) * 2.0**24), 1.0)


@lru_cache(maxsize=16)
def code_lengths(edge: int, escape: bool, signed: bool) -> np.ndarray:
    w = _weights(edge, escape, signed)
    return -np.log2(w / w.sum(axis=1, keepdims=True))


@lru_cache(maxsize=16)
def compiled_table(edge: int, escape: bool):
    """The compiled coder's table of every pair code over magnitudes [0, edge] and, where
    ``escape``, an escape whose excess takes an exponential-Golomb code of about the pair's scale."""
    orders = np.maximum((np.arange(PAIRS) % S_CODES + S_MIN) // S_STEPS, 0)
    return rans.table(_weights(edge, escape, False), edge + 1 if escape else -1, orders)


@lru_cache(maxsize=4096)
def _table(pair: int, edge: int, escape: bool, signed: bool):
    return constriction.stream.model.Categorical(_weights(edge, escape, signed)[pair], perfect=False)


class PairCoder:
    """Codes symbols under their pair codes: up to ``edge`` through a table (weights rounded to
    integers, so identical on every platform), larger ones as an escape symbol and then a
    magnitude's excess past the edge (the geometric tail is memoryless, so a size does not jump
    where the largest magnitude crosses the edge), or, where ``signed`` (a version 1 model's
    stream), the whole signed value. ``compiled`` (a version 3 model's stream): each symbol under
    its own table row in one call of :mod:`streamcomp.coding.rans`, excesses in
    exponential-Golomb code; otherwise runs of symbols that share a code through constriction,
    excesses under a Laplace of the pair's scale. Magnitudes' signs are coded by the sign model."""

    def __init__(self, bits: int, signed: bool = False, compiled: bool = False) -> None:
        self.top = (1 << bits) - 1
        self.edge = min(self.top, DIRECT)
        self.signed = signed
        self.compiled = compiled
        self.offset = self.edge if signed else 0
        self.escape = self.offset + self.edge + 1
        self.past = 0 if signed else self.edge + 1  # what an escaped magnitude codes less

    @cached_property
    def table(self):
        """The compiled coder's table (a :class:`streamcomp.coding.rans.Table`)."""
        return compiled_table(self.edge, self.top > self.edge)

    def lengths(self) -> np.ndarray:
        """Bits of each (pair code, symbol + offset)."""
        if self.compiled:
            return self.table.lengths
        return code_lengths(self.edge, self.top > self.edge, self.signed)

    def estimate_bits(self, values: np.ndarray, pairs: np.ndarray) -> float:
        """Code length of ``values`` under their pairs' tables (escaped values: their excess's
        code, or its Laplace's approximate cost, capped at the models' leak floor), within a few
        bytes of what is coded."""
        if self.compiled:
            return self.table.bits(values, pairs)
        escaped = np.abs(values) > self.edge
        bits = self.lengths()[pairs, np.where(escaped, self.escape, values + self.offset)].sum()
        if escaped.any():
            scale = 2.0 ** ((pairs[escaped] % S_CODES + S_MIN) / S_STEPS)
            # constriction's Laplace over [0, top] leaves the negative half's mass unused: as dear as signed.
            laplace = (np.abs(values[escaped]) - self.past) / scale * np.log2(np.e) + np.log2(2 * scale)
            bits += np.minimum(laplace, LEAK_BITS).sum()
        return float(bits)

    def _laplace(self, pair: int):
        scale = 2.0 ** ((pair % S_CODES + S_MIN) / S_STEPS)
        low = -self.top if self.signed else 0
        return constriction.stream.model.QuantizedLaplace(low, self.top + 1 - self.past, 0.0, scale)

    def _table(self, pair: int):
        return _table(pair, self.edge, self.top > self.edge, self.signed)

    def encode(self, coder, values: np.ndarray, pair: int) -> None:
        """Push ``values`` so that :meth:`decode` pops them in order (escapes go under the run)."""
        escaped = np.abs(values) > self.edge
        if escaped.any():
            coder.encode_reverse((values[escaped] - self.past).astype(np.int32), self._laplace(pair))
        coder.encode_reverse(np.where(escaped, self.escape, values + self.offset).astype(np.int32), self._table(pair))

    def decode(self, coder, count: int, pair: int) -> np.ndarray:
        """``count`` symbols (int32); few numpy calls, since a chunk decodes thousands of runs."""
        values = coder.decode(self._table(pair), count)
        if self.top > self.edge and values.max() == self.escape:  # the escape is the largest symbol
            escaped = values == self.escape
            values[escaped] = coder.decode(self._laplace(pair), int(escaped.sum())) + self.past + self.offset
        return values - self.offset if self.offset else values


def runs(pairs: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Order that groups equal pair (or sign) codes and the (code, start, stop) of each run in it.
    The codes are sorted as 16-bit integers, which numpy's stable sort radix-sorts (six times
    faster than the merge sort it runs on 64-bit ones)."""
    pairs = pairs.astype(np.int16, copy=False)
    order = np.argsort(pairs, kind="stable")
    ordered = pairs[order]
    cuts = np.flatnonzero(np.diff(ordered)) + 1
    starts = np.concatenate(([0], cuts))
    stops = np.concatenate((cuts, [len(ordered)]))
    return order, [(int(ordered[a]), int(a), int(b)) for a, b in zip(starts, stops, strict=True) if b > a]


@dataclass(frozen=True)
class SignSite:
    """Where a band phase's signs are coded from: its sign class and the decoded values at the
    positions' neighbours (read once, for the magnitudes' keys and the signs)."""

    cls: int
    around: np.ndarray

    @cached_property
    def sums(self) -> np.ndarray:
        """(pairs, positions) each neighbour pair's signed sum: every position's at once, then
        picked, costs less than picking the neighbours of the nonzeros."""
        return self.around[:, 0] + self.around[:, 1]

    def features(self, selected: np.ndarray) -> np.ndarray:
        """Sign features of the phase's positions ``selected`` (indices into them)."""
        return sign_features(self.sums, selected)


def flat_bands(bands: list[np.ndarray]) -> list[np.ndarray]:
    """Each band flattened once (a copy where it is a strided view) for visits by flat index."""
    return [band.reshape(-1) for band in bands]


def walk_bands(lattices: list[Lattice], parents: list[int | None], levels: int, visit) -> list[np.ndarray]:
    """Visit every band phase in decode order with its positions and context keys.

    ``visit(band, base_class, phase, positions, keys, site)`` returns the symbols at ``positions``
    (flat indices in the band): the encoder's known values, or the decoder's freshly decoded ones;
    ``site`` (a :class:`SignSite`) gives the signs' context. Returns the bands as visited.
    """
    per_level = (len(lattices) - 1) // levels
    axes = lattices[0].axes
    classes = band_classes(len(lattices), levels, len(axes))
    bands: list[np.ndarray] = []
    siblings = LevelSums([lattices[0].shape])
    for i, (lattice, parent) in enumerate(zip(lattices, parents, strict=True)):
        if i == level_start(i, per_level) and i:
            siblings = LevelSums([same_level.shape for same_level in lattices[i : i + per_level]])
        elif i:
            siblings.add(bands[i - 1])
        ctx = BandContexts(lattice, None if parent is None else bands[parent], siblings)
        level = levels - 1 - max(i - 1, 0) // per_level  # 0 = finest; the approximation: coarsest
        orientation = 0 if i == 0 else 1 + (i - 1) % per_level
        q = np.zeros(lattice.shape, np.int32)
        for phase in range(PHASES):
            idx = ctx.positions(phase)
            if len(idx):
                around = q.reshape(-1)[neighbour_index(lattice.shape, axes, phase, idx)]
                site = SignSite(sign_class(len(axes), level, orientation, phase), around)
                q.reshape(-1)[idx] = visit(i, classes[i], phase, idx, ctx.keys(phase, around), site)
        bands.append(q)
    return bands
