"""Direction-adaptive lifting: the in-plane passes of the CDF 9/7 transform steered along edges.

Why: a separable wavelet predicts a sample from the rows above and below it, which along a
curved, oblique edge (a skull's outline on CT) leaves a large high-pass coefficient at every row
the edge crosses, and its ringing where those are quantized. Adaptive directional lifting (Ding,
Wu, Xu, Li, IEEE TIP 2007; Chang and Girod's DA-DWT, TIP 2007) takes the neighbour rows' samples
along the edge instead, block by block, which keeps the lifting invertible (each step still adds
a function of the other rows only). Video codecs get the same from their directional intra
prediction. Here each level's passes along the last two axes (and a volumetric transform's z
passes, steered along x) choose, per block of
:data:`BLOCK` samples, one of :data:`DIRECTIONS` (offsets of whole samples per row) by what
a linear predict along it leaves; the grids are side information of the chunk's section.
"""

from __future__ import annotations

import functools
import math
import struct

import constriction
import numpy as np

from streamcomp.coding.lifting import Shifts, Steer, Steering, _next, _sizes
from streamcomp.errors import ChunkFormatError

DIRECTIONS = np.array([-2, -1, 0, 1, 2], np.int64)  # offset along the steered axis per row
REACH = int(np.abs(DIRECTIONS).max())
STRAIGHT = 2  # the code of offset 0: the plain transform
BLOCK = 16  # a block's side, in samples of its level (its rows: BLOCK / 2 low and high rows each)
# A direction replaces the straight pass of a block only where it leaves at most this share of
# the straight pass's high-pass magnitude: on noise every direction scores alike and straight,
# the cheapest code, wins.
MARGIN = 0.9
MIN_SAMPLES = 128  # high-pass samples a block needs to leave straight: fewer (coarse levels' blocks) judge noise
_COUNTS = struct.Struct(f"<{len(DIRECTIONS)}I")  # how often each direction is used: the codes' model


def _grid_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Blocks over a pass's input in its moved layout (the pass's axis first, ``shape``)."""
    return (math.ceil(shape[0] / BLOCK), *(math.ceil(n / BLOCK) for n in shape[1:]))


def _block_sums(values: np.ndarray, grid: tuple[int, ...]) -> np.ndarray:
    """Sums of ``values`` (high rows, moved layout) over the blocks of ``grid``."""
    sizes = (BLOCK // 2, *[BLOCK] * (values.ndim - 1))
    pads = [(0, g * s - n) for g, s, n in zip(grid, sizes, values.shape, strict=True)]
    padded = np.pad(values, pads) if any(after for _, after in pads) else values
    split = [d for g, s in zip(grid, sizes, strict=True) for d in (g, s)]
    return padded.reshape(split).sum(axis=tuple(range(1, 2 * len(grid), 2)))


def _segments(n: int, split: int | None) -> list[tuple[int, int]]:
    """The stretches of a steered axis of ``n`` samples that no neighbour crosses: its halves at
    ``split`` (an earlier pass's low and high), or the whole axis."""
    return [(lo, hi) for lo, hi in ([(0, n)] if split is None else [(0, split), (split, n)]) if hi > lo]


def _edge_padded(a: np.ndarray, split: int | None) -> np.ndarray:
    """``a`` with each segment of its last axis extended by REACH copies of its end samples on both
    sides: a segment shifted by any direction, clamped to itself as the lifting clamps it, is then
    a view (choosing a pass's directions copied each shifted row instead, a third of its time)."""
    segments = _segments(a.shape[-1], split)
    out = np.empty_like(a, shape=(*a.shape[:-1], a.shape[-1] + 2 * REACH * len(segments)))  # a's memory order
    for j, (lo, hi) in enumerate(segments):
        at = lo + (2 * j + 1) * REACH
        out[..., at : at + hi - lo] = a[..., lo:hi]
        out[..., at - REACH : at] = a[..., lo : lo + 1]
        out[..., at + hi - lo : at + hi - lo + REACH] = a[..., hi - 1 : hi]
    return out


def _shifted_sum(before: np.ndarray, after: np.ndarray, offset: int, split: int | None, out: np.ndarray) -> None:
    """Into ``out``: the samples of :func:`_edge_padded` ``before`` taken ``offset`` further along
    the last axis plus those of ``after`` taken ``offset`` back (what the lifting's steered sum
    gives for a block of that offset, the same float32 additions)."""
    for j, (lo, hi) in enumerate(_segments(out.shape[-1], split)):
        at = lo + (2 * j + 1) * REACH
        np.add(before[..., at + offset : at + offset + hi - lo], after[..., at - offset : at - offset + hi - lo],
               out=out[..., lo:hi])  # fmt: skip


def _block_counts(shape: tuple[int, ...], grid: tuple[int, ...]) -> np.ndarray:
    """How many high-row samples of ``shape`` (moved layout) each block of ``grid`` holds: what
    :func:`_block_sums` of ones gives, without summing them."""
    sizes = (BLOCK // 2, *[BLOCK] * (len(shape) - 1))
    per_axis = [np.minimum(s, n - s * np.arange(g)) for g, s, n in zip(grid, sizes, shape, strict=True)]
    return functools.reduce(np.multiply.outer, per_axis)


def _steered(ndim: int, axes: tuple[int, ...]) -> tuple[int, ...]:
    """The axes whose passes are steered: the last two, when the transform runs along both, and
    the one before them when it runs along that too (a volumetric transform's z passes, steered
    along x: a structure that drifts from section to section, as a skull's outline does towards
    the top of the head; head CT -3.5 % bytes, thorax even)."""
    if ndim < 2 or not {ndim - 2, ndim - 1} <= set(axes):
        return ()
    return (ndim - 3, ndim - 2, ndim - 1) if ndim >= 3 and ndim - 3 in axes else (ndim - 2, ndim - 1)


Pass = tuple[tuple[int, int], tuple[int, ...]]  # ((level, axis), grid shape)


def _passes(shape: tuple[int, ...], levels: int, axes: tuple[int, ...]) -> list[Pass]:
    """Every steered pass of a transform of ``shape``, in order."""
    out = []
    for level, size in enumerate(_sizes(shape, levels, axes)[:-1]):
        for ax in axes:
            if ax in _steered(len(shape), axes) and size[ax] >= 2:
                out.append(((level, ax), _grid_shape((size[ax], *size[:ax], *size[ax + 1 :]))))
    return out


class Directions(Steering):
    """The direction grids of a transform (per level and steered axis, over its pass's blocks in
    the moved layout): chosen by :meth:`forward`, replayed by :meth:`inverse`."""

    def __init__(self, ndim: int, axes: tuple[int, ...], grids: dict[tuple[int, int], np.ndarray] | None = None):
        self.steered = _steered(ndim, axes)
        self.grids = {} if grids is None else grids

    def forward(self, level: int, ax: int, v: np.ndarray, split: int | None) -> Steer | None:
        if ax not in self.steered or len(v) < 2:
            return None
        grid = _grid_shape(v.shape)
        costs = []
        s, d = v[0::2], v[1::2]
        before, after = _edge_padded(s[: len(d)], split), _edge_padded(_next(s, len(d)), split)
        left = np.empty_like(d)  # in the moved layout's memory order, as d is read
        for offset in DIRECTIONS.tolist():
            # What the direction leaves: each high row less the mean of its neighbour rows' samples
            # along it (the linear predict; the 9/7's own first step is no predictor on its own).
            _shifted_sum(before, after, offset, split, left)
            left *= np.float32(0.5)
            np.subtract(d, left, out=left)
            costs.append(_block_sums(np.abs(left, out=left), grid))
        costs = np.stack(costs)
        best = np.argmin(costs, axis=0)
        clear = np.take_along_axis(costs, best[None], 0)[0] < MARGIN * costs[STRAIGHT]
        enough = _block_counts(d.shape, grid) >= MIN_SAMPLES
        chosen = np.where(clear & enough, best, STRAIGHT)
        self.grids[(level, ax)] = chosen.astype(np.uint8)
        return self._steer(chosen, v.shape, split)

    def inverse(self, level: int, ax: int, shape: tuple[int, ...], split: int | None) -> Steer | None:
        grid = self.grids.get((level, ax))
        return None if grid is None else self._steer(grid, shape, split)

    @staticmethod
    def _steer(grid: np.ndarray, shape: tuple[int, ...], split: int | None) -> Steer | None:
        if not (grid != STRAIGHT).any():
            return None
        block = (BLOCK // 2, *[BLOCK] * (len(shape) - 1))  # a block's low (or high) rows
        rows = (shape[0] // 2, shape[0] - shape[0] // 2)
        offsets = DIRECTIONS[grid]
        high, low = (Shifts.of_blocks(offsets, block, (n, *shape[1:]), split) for n in rows)
        return high, low, split

    def steers(self) -> bool:
        """Whether any block leaves the straight pass."""
        return any((g != STRAIGHT).any() for g in self.grids.values())

    def to_bytes(self) -> bytes:
        """The grids' codes, in :func:`_passes` order, under a model of their own counts (ANS)."""
        codes = np.concatenate([self.grids[key].reshape(-1) for key in sorted(self.grids)]).astype(np.int32)
        counts = np.bincount(codes, minlength=len(DIRECTIONS))
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(codes, _model(counts))
        return _COUNTS.pack(*counts.tolist()) + coder.get_compressed().tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, shape: tuple[int, ...], levels: int, axes: tuple[int, ...]) -> Directions:
        """Inverse of :meth:`to_bytes` for a transform of ``shape`` over ``axes``."""
        passes = _passes(shape, levels, axes)
        if len(data) < _COUNTS.size or (len(data) - _COUNTS.size) % 4:
            raise ChunkFormatError("direction grids are truncated")
        counts = np.array(_COUNTS.unpack_from(data, 0), np.int64)
        total = sum(math.prod(grid) for _, grid in passes)
        if counts.sum() != total:
            raise ChunkFormatError(f"direction grids hold {counts.sum()} blocks, the transform has {total}")
        words = np.frombuffer(data, np.uint32, offset=_COUNTS.size).copy()
        codes = np.zeros(0, np.int64)
        if total:
            codes = constriction.stream.stack.AnsCoder(words).decode(_model(counts), total)
        if np.bincount(codes, minlength=len(DIRECTIONS)).tolist() != counts.tolist():
            raise ChunkFormatError("direction grids do not decode to their counts: the section is damaged")
        grids, at = {}, 0
        for key, grid in passes:
            grids[key] = codes[at : at + math.prod(grid)].reshape(grid).astype(np.uint8)
            at += math.prod(grid)
        return cls(len(shape), axes, grids)


def _model(counts: np.ndarray):
    return constriction.stream.model.Categorical(np.maximum(counts, 0).astype(np.float64), perfect=False)
