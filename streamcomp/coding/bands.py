"""Subband layout and context sources shared by the lossy residual coder and the exact coder.

Both code a chunk's wavelet subbands band by band, coarsest first, each in two interleaved halves
(a checkerboard over the transformed axes) so that both halves decode in one vectorized call
each; a coefficient's context comes from its parent (the same orientation one level coarser) and,
for the second half, from its decoded neighbours in the first. Distributions are Laplace, one
scale per context group, stored as a one-byte code (log2 scale in 1/8 steps).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from streamcomp.coding.lifting import Steering, band_shapes, wavedec, waverec

MAX_LEVELS = 4
SCALE_STEPS = 8  # scale codes are log2(scale) in 1/8 steps, offset so that code 1 is ~2^-10
SCALE_OFFSET = 10.0
NO_SCALE = 255  # never a scale code: the coders use it as a marker
BUCKETS = 16  # half-octave buckets of a learned context feature (4 bits)
# Largest neighbour magnitude summed by Lattice.neighbours: 8 of them (4D) stay below 2**31, and a
# neighbour this large puts the exact coder's estimate above its top class threshold (~185k in
# 1/64ths) even over 8 neighbours and 17 sources (the lossy coder's symbols stay under 2**20).
NEIGHBOUR_CAP = 1 << 24


def _bucket_table() -> np.ndarray:
    x = np.arange(256)
    mant, exp = np.frexp(x.astype(np.float64))
    return np.minimum(np.where(x > 1, 2 * (exp - 1) + (mant >= 0.75), x), BUCKETS - 1).astype(np.int64)


_BUCKET = _bucket_table()


def buckets(x: np.ndarray) -> np.ndarray:
    """Half-octave bucket of non-negative integers: 0, 1, 2, 3, 4-5, 6-7, 8-11, ... capped at 15
    (reached at 192), by table lookup (``take`` clipping to the table's end: one pass, 6x faster
    than clipping first and indexing, on int64 input)."""
    return np.take(_BUCKET, x, mode="clip")


_NEIGHBOURS: dict[tuple, np.ndarray] = {}


def neighbour_index(shape: tuple[int, ...], axes: tuple[int, ...], phase: int, positions: np.ndarray) -> np.ndarray:
    """(pairs, 2, len(positions)) flat indices of the decoded neighbours of a band phase's
    ``positions`` (:func:`~streamcomp.coding.context_model.phase_index`): none for phase 0, the
    two in-plane diagonal pairs for phase 1, the face-neighbour pair along each transformed axis
    for phase 2; wrapping at the band's faces. Both learned models read them: the magnitudes'
    context sums them, the sign model each pair's signed sum. Cached per band shape and phase."""
    key = (shape, axes, phase)
    if key not in _NEIGHBOURS:
        coords = np.unravel_index(positions, shape)
        strides = [math.prod(shape[ax + 1 :]) for ax in range(len(shape))]

        def at(offsets: dict[int, int]) -> np.ndarray:
            flat = positions.astype(np.int64)
            for ax, step in offsets.items():  # a step of one voxel, wrapped at the faces
                moved = coords[ax] + step
                flat += strides[ax] * (step - shape[ax] * (moved >= shape[ax]) + shape[ax] * (moved < 0))
            return flat

        if phase == 0 or (phase == 1 and len(axes) < 2):
            pairs = []
        elif phase == 1:
            a, b = axes[-2], axes[-1]
            pairs = [(at({a: 1, b: 1}), at({a: -1, b: -1})), (at({a: 1, b: -1}), at({a: -1, b: 1}))]
        else:
            pairs = [(at({ax: 1}), at({ax: -1})) for ax in axes]
        _NEIGHBOURS[key] = np.array(pairs, np.int64).reshape(len(pairs), 2, len(positions))
    return _NEIGHBOURS[key]


def transform_axes(shape: tuple[int, ...], planar: bool) -> tuple[int, ...]:
    """The axes to transform: all but thin ones (a single section, say), or the last two (planar)."""
    candidates = range(len(shape) - 2, len(shape)) if planar else range(len(shape))
    return tuple(i for i in candidates if shape[i] >= 4) or tuple(candidates)


def levels_for(shape: tuple[int, ...], planar: bool = False) -> int:
    """Decomposition depth: as deep as the shortest transformed axis allows, at most MAX_LEVELS."""
    shortest = min(shape[i] for i in transform_axes(shape, planar))
    return max(1, min(MAX_LEVELS, int(math.log2(max(shortest, 2))) - 1))


def subbands(
    x: np.ndarray, levels: int, planar: bool, integer: str | None = None, steering: Steering | None = None
) -> list[np.ndarray]:
    return wavedec(x, levels, transform_axes(x.shape, planar), integer, steering)


# Two transforms' summed log-magnitudes (:func:`log_magnitudes`) differing by more than this factor
# pick between them as coding both would: checked on EM, CT and MRI chunks, exact levels at
# E = 0-16 and lossy layers at E = 8-32, where the sums differ about twice as much as the bits do.
# Closer, the coders code (or plan) both and keep the shorter.
CLEAR_CHOICE = 1.06
# log2(1 + m) in float32 for every magnitude below 2**16, as the formula gives it: looking it up
# takes a third of the formula's time (a log2 per coefficient), for the same sums.
_LOG2_1P = np.log2(1.0 + np.arange(1 << 16, dtype=np.float32))


def log_magnitudes(bands: list[np.ndarray]) -> float:
    """A cheap stand-in for the bits of integer coefficients: the sum of log2(1 + |c|)."""
    total = 0.0
    for b in bands:
        if b.dtype.kind in "iu":
            magnitudes = np.abs(b).view(f"u{b.dtype.itemsize}")  # unsigned: |min| wraps to itself
            if not magnitudes.size or magnitudes.max() < _LOG2_1P.size:
                total += float(_LOG2_1P[magnitudes].sum(dtype=np.float64))
                continue
        total += float(np.log2(1.0 + np.abs(b, dtype=np.float32)).sum(dtype=np.float64))
    return total


def clear_winner(sizes: dict[bool, float]) -> bool | None:
    """The key of the clearly smaller of two :func:`log_magnitudes`, None when they are close."""
    small, large = sorted(sizes.values())
    return min(sizes, key=sizes.__getitem__) if small * CLEAR_CHOICE < large else None


def subband_shapes(shape: tuple[int, ...], levels: int, planar: bool) -> list[tuple[int, ...]]:
    return band_shapes(shape, levels, transform_axes(shape, planar))


def reconstruct(
    bands: list[np.ndarray],
    shape: tuple[int, ...],
    levels: int,
    planar: bool,
    integer: str | None = None,
    steering: Steering | None = None,
) -> np.ndarray:
    return waverec(bands, shape, levels, transform_axes(shape, planar), integer, steering)


def parents(count: int, levels: int) -> list[int | None]:
    """Each band's parent: the same orientation one level coarser (none for the coarsest level)."""
    per_level = (count - 1) // levels
    return [None] * (1 + per_level) + list(range(1, count - per_level))


def scale_of(code: int | np.ndarray) -> np.ndarray:
    return 2.0 ** (np.asarray(code, np.float64) / SCALE_STEPS - SCALE_OFFSET)


_CODES = np.arange(1, NO_SCALE)  # 0: a group of zeros (nothing coded)
_S = scale_of(_CODES)
# Ideal bits of a quantized Laplace(0, s) symbol: for a zero, per nonzero symbol, per unit of |q|.
_BITS_ZERO = -np.log2(-np.expm1(-0.5 / _S))
_BITS_NONZERO = 1.0 - np.log2(2.0 * np.sinh(0.5 / _S))
_BITS_PER_MAGNITUDE = np.log2(np.e) / _S


def _best_codes(zeros: np.ndarray, nonzeros: np.ndarray, magnitude: np.ndarray) -> tuple[np.ndarray, float]:
    """Per group of symbols, the scale code that codes it in the fewest bits (0 for all-zero groups),
    and their total bits. Why not the moment estimate: at low rates most symbols are zero and the
    mean |q| underestimates the Laplace scale badly, costing 15-40 % of the bytes on EM and CT."""
    bits = zeros[:, None] * _BITS_ZERO + nonzeros[:, None] * _BITS_NONZERO + magnitude[:, None] * _BITS_PER_MAGNITUDE
    best = np.argmin(bits, axis=1)
    coded = nonzeros > 0
    codes = np.where(coded, _CODES[best], 0)
    return codes, float(bits[np.arange(len(best)), best][coded].sum())


def group_codes(magnitudes: np.ndarray, groups: np.ndarray | None, count: int = 1) -> tuple[np.ndarray, float]:
    """The best scale code of each of ``count`` groups of symbol magnitudes, and the bits they cost;
    ``groups`` None: all in one group (counted by sums, not by a histogram over a zero index)."""
    if groups is None:
        nonzeros = np.count_nonzero(magnitudes)
        counts = [[magnitudes.size - nonzeros], [nonzeros], [magnitudes.sum(dtype=np.int64)]]
        return _best_codes(*np.array(counts, np.float64))
    nonzeros = np.bincount(groups, weights=magnitudes > 0, minlength=count)
    return _best_codes(
        np.bincount(groups, minlength=count) - nonzeros,
        nonzeros,
        np.bincount(groups, weights=magnitudes, minlength=count),
    )


class Lattice:
    """A band's two interleaved halves and the context sources its coefficients may use."""

    def __init__(self, shape: tuple[int, ...], axes: tuple[int, ...]) -> None:
        self.shape, self.axes = shape, axes
        parity = np.zeros((1,) * len(shape), bool)
        for ax in axes:  # the sum of the coordinates along the axes, odd: built as bools, by axis
            parity = parity ^ (np.arange(shape[ax]) % 2 == 1).reshape([-1 if i == ax else 1 for i in range(len(shape))])
        self.second = np.ascontiguousarray(np.broadcast_to(parity, shape))
        self._index: dict[bool, np.ndarray] = {}

    def half_index(self, second: bool) -> np.ndarray:
        """Flat positions of the first (``second`` False) or the second half."""
        if second not in self._index:
            flat = self.second.reshape(-1)
            self._index[second] = np.flatnonzero(flat if second else ~flat)
        return self._index[second]

    def fit(self, other: np.ndarray) -> np.ndarray:
        """``other`` cropped or edge-padded to this band's shape (bands of one level differ by at
        most one sample per axis; a repeated parent by one past an odd axis's end)."""
        if other.shape == self.shape:
            return other
        if not other.size:
            return np.zeros(self.shape, other.dtype)
        short = [(0, max(0, n - m)) for n, m in zip(self.shape, other.shape, strict=True)]
        return np.pad(other, short, mode="edge")[tuple(slice(0, n) for n in self.shape)]

    def parent(self, parent: np.ndarray | None) -> np.ndarray:
        """The parent band's magnitudes, each repeated over the 2x2(x2) children it covers (an odd
        axis's last child, past its parent's cover, takes the nearest parent)."""
        if parent is None:
            return np.zeros(self.shape, np.int64)
        up = np.abs(parent).astype(np.int64)
        view, wide = [], []  # one broadcast copy instead of a np.repeat per transformed axis
        for ax, n in enumerate(up.shape):
            view += [n, 1] if ax in self.axes else [n]
            wide += [n, 2] if ax in self.axes else [n]
        doubled = [n * (2 if ax in self.axes else 1) for ax, n in enumerate(up.shape)]
        # a copy (callers add into it) unless the reshape made one: it stays a view along length-1 axes
        return self.fit(np.ascontiguousarray(np.broadcast_to(up.reshape(view), wide).reshape(doubled)))

    def neighbours(self, first: np.ndarray | None) -> np.ndarray:
        """Per position, the sum of the first half's decoded magnitudes around it along the
        transformed axes (wrapping at the band's faces, identically in encoder and decoder), each
        capped at NEIGHBOUR_CAP so the sums stay in int32 (half the memory traffic of int64): a
        position beside a capped magnitude falls in either coder's top context class either way."""
        total = np.zeros(self.shape, np.int32)
        if first is not None:
            known = np.where(self.second, 0, np.minimum(np.abs(first), NEIGHBOUR_CAP)).astype(np.int32, copy=False)
            for ax in self.axes:  # np.roll by +1 and -1, added in place instead of as two new arrays
                n = self.shape[ax]
                total[_along(ax, 1, None)] += known[_along(ax, 0, n - 1)]
                total[_along(ax, 0, 1)] += known[_along(ax, n - 1, n)]
                total[_along(ax, 0, n - 1)] += known[_along(ax, 1, None)]
                total[_along(ax, n - 1, n)] += known[_along(ax, 0, 1)]
        return total


class LevelSums:
    """The magnitudes of a level's bands decoded so far, summed on the level's widest shape, each
    edge-padded to it: cropped to any band of the level, the sum of what :meth:`Lattice.fit` gives
    for each (padding and cropping are linear), in one addition per band instead of one per sibling
    (a 4D level has 15 bands)."""

    def __init__(self, shapes: list[tuple[int, ...]]) -> None:
        """An empty sum for a level of bands of ``shapes``: ``total`` (int64, the widest shape) of
        ``count`` bands."""
        self.total = np.zeros(tuple(max(n) for n in zip(*shapes, strict=True)), np.int64)
        self.count = 0

    def add(self, band: np.ndarray) -> None:
        """Add the next band of the level (in decode order)."""
        self.count += 1
        if not band.size:  # an empty band adds nothing (Lattice.fit gives it zeros)
            return
        magnitudes = np.abs(band)
        if magnitudes.shape != self.total.shape:
            short = [(0, n - m) for n, m in zip(self.total.shape, magnitudes.shape, strict=True)]
            magnitudes = np.pad(magnitudes, short, mode="edge")
        self.total += magnitudes


def _along(ax: int, start: int, stop: int | None) -> tuple[slice, ...]:
    return (slice(None),) * ax + (slice(start, stop),)


def level_start(i: int, per_level: int) -> int:
    """Index of the first band of band ``i``'s level (bands coarsest first: the approximation, 0,
    then ``per_level`` detail bands a level)."""
    return 1 + (i - 1) // per_level * per_level if i else 0


def lattices(shapes: list[tuple[int, ...]], axes: tuple[int, ...]) -> list[Lattice]:
    """The bands' lattices, shared by every chunk of the same band shapes (a lattice holds only its
    parity mask and the halves' indices, never modified once built)."""
    return [_lattice(tuple(s), tuple(axes)) for s in shapes]


# A lattice keeps ~9 bytes per band voxel (its mask and the halves' int64 indices, once used): 64
# cover an array's band shapes (interior and edge chunks, both orientations) in tens of MiB.
@lru_cache(maxsize=64)
def _lattice(shape: tuple[int, ...], axes: tuple[int, ...]) -> Lattice:
    return Lattice(shape, axes)
