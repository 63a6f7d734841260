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
import numba
import numpy as np

from streamcomp.coding.lifting import Steer, Steering, _along, _segments_of, _sizes
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


def _block_sums(values: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Sums of ``values`` over blocks of BLOCK samples along ``axes`` (the last block partial)."""
    for ax in axes:
        n = values.shape[ax]
        blocks = math.ceil(n / BLOCK)
        pad = [(0, 0)] * values.ndim
        pad[ax] = (0, blocks * BLOCK - n)
        padded = np.pad(values, pad) if blocks * BLOCK > n else values
        values = padded.reshape(*values.shape[:ax], blocks, BLOCK, *values.shape[ax + 1 :]).sum(axis=ax + 1)
    return values


@numba.njit(nogil=True, cache=True)
def _residual_sums(x: np.ndarray, first: np.ndarray, last: np.ndarray, across: bool) -> np.ndarray:
    """What each direction leaves, summed: |high row - the mean of its neighbour rows' samples along
    the direction| (the linear predict; the 9/7's own first step is no predictor on its own), over
    the high rows of a pass along the middle axis of (outer, n, inner) ``x``, clamped to each
    sample's half of the steered axis (``first``/``last``) as the lifting clamps it. Summed per
    block row (BLOCK samples of the pass's axis) and per BLOCK samples of the steered axis, the
    fastest of ``inner``, or where ``across`` (a pass along the last axis) of ``outer``: (directions,
    outer or its lines' blocks, block rows, inner's blocks)."""
    outer, n, inner = x.shape
    m, nd = (n + 1) // 2, n // 2
    length = len(first)
    per_line = (length + BLOCK - 1) // BLOCK
    rows = (n + BLOCK - 1) // BLOCK
    if across:
        sums = np.zeros((len(DIRECTIONS), outer // length * per_line, rows, 1))
    else:
        sums = np.zeros((len(DIRECTIONS), outer, rows, inner // length * per_line))
    half = np.float32(0.5)
    count = len(DIRECTIONS)
    for o in range(outer):
        if across:  # every sample of this line takes its neighbours from the same lines
            c = o % length
            ahead, behind = np.empty(count, np.int64), np.empty(count, np.int64)
            for di in range(count):
                ahead[di] = o + min(max(c + DIRECTIONS[di], first[c]), last[c]) - c
                behind[di] = o + min(max(c - DIRECTIONS[di], first[c]), last[c]) - c
            at = o // length * per_line + c // BLOCK
            for k in range(nd):
                row, up, down = (2 * k + 1) // BLOCK, 2 * k, 2 * min(k + 1, m - 1)
                for di in range(count):
                    left = x[o, 2 * k + 1, 0] - half * (x[ahead[di], up, 0] + x[behind[di], down, 0])
                    sums[di, at, row, 0] += abs(left)
            continue
        for k in range(nd):
            row = (2 * k + 1) // BLOCK
            high, before, after = x[o, 2 * k + 1], x[o, 2 * k], x[o, 2 * min(k + 1, m - 1)]
            for line in range(inner // length):
                for block in range(per_line):
                    at = line * per_line + block
                    lo, hi = block * BLOCK, min(block * BLOCK + BLOCK, length)
                    inside = first[lo] <= lo - REACH and hi - 1 + REACH <= last[hi - 1] and first[lo] == first[hi - 1]
                    for di in range(count):
                        off, total = DIRECTIONS[di], np.float32(0.0)
                        if inside:  # no neighbour needs clamping
                            for i in range(line * length + lo, line * length + hi):
                                total += abs(high[i] - half * (before[i + off] + after[i - off]))
                        else:
                            for c in range(lo, hi):
                                i = line * length + c
                                ahead = i + min(max(c + off, first[c]), last[c]) - c
                                behind = i + min(max(c - off, first[c]), last[c]) - c
                                total += abs(high[i] - half * (before[ahead] + after[behind]))
                        sums[di, o, row, at] += total
    return sums


def _direction_costs(a: np.ndarray, ax: int, split: int | None) -> np.ndarray:
    """:func:`_residual_sums` of a pass along ``ax`` of C-ordered ``a`` over the blocks of its grid
    (the moved layout: :func:`_grid_shape`), one grid per direction."""
    across = ax == a.ndim - 1
    first, last = _segments_of(a.shape[-2] if across else a.shape[-1], split)
    sums = _residual_sums(_along(a, ax), first, last, across)
    shape = a.shape
    if across:  # (directions, lines' blocks, block rows): the lines run along the second last axis
        sums = sums.reshape(len(DIRECTIONS), *shape[:-2], -1, sums.shape[2])
        sums = _block_sums(sums, tuple(range(1, a.ndim - 1)))
        return np.moveaxis(sums, -1, 1)
    sums = sums.reshape(len(DIRECTIONS), *shape[:ax], sums.shape[2], *shape[ax + 1 : -1], -1)
    sums = _block_sums(sums, tuple(i + 1 for i in range(a.ndim - 1) if i != ax))
    return np.moveaxis(sums, ax + 1, 1)


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
        costs = _direction_costs(np.ascontiguousarray(np.moveaxis(v, 0, ax)), ax, split)
        best = np.argmin(costs, axis=0)
        clear = np.take_along_axis(costs, best[None], 0)[0] < MARGIN * costs[STRAIGHT]
        enough = _block_counts((len(v) // 2, *v.shape[1:]), _grid_shape(v.shape)) >= MIN_SAMPLES
        chosen = np.where(clear & enough, best, STRAIGHT)
        self.grids[(level, ax)] = chosen.astype(np.uint8)
        return self._steer(chosen, ax, v.shape, split)

    def inverse(self, level: int, ax: int, shape: tuple[int, ...], split: int | None) -> Steer | None:
        grid = self.grids.get((level, ax))
        return None if grid is None else self._steer(grid, ax, shape, split)

    @staticmethod
    def _steer(grid: np.ndarray, ax: int, shape: tuple[int, ...], split: int | None) -> Steer | None:
        """The pass's :class:`Steer` from its grid, for an input of ``shape`` in the moved layout."""
        if not (grid != STRAIGHT).any():
            return None
        original = (*shape[1 : ax + 1], shape[0], *shape[ax + 1 :])
        return Steer.of_blocks(DIRECTIONS[grid], ax, original, BLOCK, split)

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
