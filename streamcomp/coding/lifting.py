"""The CDF 9/7 wavelet by lifting, with whole-sample symmetric extension (JPEG 2000's irreversible
transform), over any subset of an array's axes; and integer-to-integer siblings, LeGall 5/3 (JPEG
2000's lossless transform) and 9/7-M (its Part 2's), which map integers to integers and back exactly.

Why not pywt's periodization: it wraps each chunk around on itself, so a head-CT chunk whose top
rows are brain and whose bottom rows are skull and air gets an artificial edge along its border,
and the ringing of that edge costs bytes and error along every chunk face. Mirroring at the
border adds no edge, and unlike pywt's symmetric modes it is non-expansive: n samples give
ceil(n/2) low-pass and floor(n/2) high-pass coefficients. Scaled like pywt's ``bior4.4``
(synthesis nearly orthonormal), so one quantizer step suits every subband.

Layout: ``wavedec`` returns the coarsest approximation, then each level's detail bands from the
coarsest level to the finest, a level's bands in the order of their ``a``/``d`` keys over the
transformed axes (``aad``, ``ada``, ``add``, ``daa``, ...), as pywt's ``wavedecn`` orders them.

Each pass is compiled (numba, releasing the GIL) and runs along one axis of the C-ordered array in
place of numpy steps over whole chunks; its float32 operations are the numpy steps' in their order,
so transforms are bit for bit what they were (arrays written before decode unchanged).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numba
import numpy as np

_ALPHA, _BETA, _GAMMA, _DELTA = -1.586134342059924, -0.052980118572961, 0.882911075530934, 0.443506852043971
_K = 1.230174104914001
_LOW, _HIGH = np.float32(np.sqrt(2.0) / _K), np.float32(_K / np.sqrt(2.0))


@dataclass(frozen=True, eq=False)
class Steer:
    """How one pass is steered (:mod:`streamcomp.coding.directions`): for the pass's input viewed
    as (outer, n, inner) (:func:`_along`), an offset along the steered axis (the array's last, or
    for a pass along the last the one before it) per ``block`` samples along the pass
    (``offsets``: int8, (outer, ceil(n / block), inner)); and where an earlier pass of the level
    split the steered axis into low and high (a neighbour never crosses it), if one did. A sample's
    neighbours in the rows before and after it are taken that offset along the edge and back,
    clamped to the sample's half of the axis."""

    offsets: np.ndarray
    block: int
    split: int | None

    @classmethod
    def of_blocks(cls, grid: np.ndarray, ax: int, shape: tuple[int, ...], block: int, split: int | None) -> Steer:
        """From one offset per ``block`` samples along every axis of an array of ``shape``, ``grid``
        in the pass's moved layout (the axis it runs along first, the others in order)."""
        spread = np.moveaxis(np.asarray(grid, np.int8), 0, ax)
        for axis, n in enumerate(shape):
            if axis != ax:
                spread = np.repeat(spread, block, axis=axis)[(slice(None),) * axis + (slice(0, n),)]
        return cls(_along(np.ascontiguousarray(spread), ax), block, split)


def _segments_of(n: int, split: int | None) -> tuple[np.ndarray, np.ndarray]:
    """First and last index of each index's half of an axis of ``n`` split at ``split``."""
    column = np.arange(n)
    if split is None:
        return np.zeros(n, np.int64), np.full(n, n - 1, np.int64)
    return np.where(column < split, 0, split), np.where(column < split, split - 1, n - 1)


# The integer-to-integer transforms, by name: LeGall 5/3 (JPEG 2000's lossless transform) and
# 9/7-M (its Part 2's, whose longer predict suits smooth data better), as whether the predict is
# the longer one; both update with 5/3's.
INTEGER = {"5/3": False, "9/7-M": True}

# Compiled passes: one level along the middle axis of a C-ordered (outer, n, inner) view, the fast
# axis innermost. Written out rather than as numpy steps, which run over whole chunks once per step
# (a 5/3 level of a 64x256x256 chunk took three times as long); the arithmetic and its order are
# the numpy steps', so the results are identical bit for bit. Along the last axis (inner 1), rows
# are lifted TILE at a time, transposed into an (n, TILE) slab so that the loops run along rows.
_TILE = 64


@numba.njit(nogil=True, cache=True)
def _mirrored(j: np.ndarray, n: int) -> np.ndarray:
    """Indices ``j`` into a signal of ``n`` samples extended whole-sample symmetrically."""
    period = max(2 * (n - 1), 1)
    out = np.empty_like(j)
    for i in range(len(j)):
        a = abs(j[i]) % period
        out[i] = period - a if a > n - 1 else a
    return out


@numba.njit(nogil=True, cache=True)
def _gather(rows: np.ndarray, o0: int, slab: np.ndarray) -> None:
    """``rows[o0 + g, k]`` into ``slab[k, g]``, as many rows as fit: a transposing copy, in
    blocks of 16 samples a row (a sample at a time, it took four times as long)."""
    n, groups = slab.shape[0], min(slab.shape[1], rows.shape[0] - o0)
    for k0 in range(0, n, 16):
        k1 = min(k0 + 16, n)
        for g in range(groups):
            for k in range(k0, k1):
                slab[k, g] = rows[o0 + g, k]


@numba.njit(nogil=True, cache=True)
def _scatter(slab: np.ndarray, rows: np.ndarray, o0: int) -> None:
    """Inverse of :func:`_gather`."""
    n, groups = slab.shape[0], min(slab.shape[1], rows.shape[0] - o0)
    for k0 in range(0, n, 16):
        k1 = min(k0 + 16, n)
        for g in range(groups):
            for k in range(k0, k1):
                rows[o0 + g, k] = slab[k, g]


@numba.njit(nogil=True, cache=True)
def _integer_rows(x: np.ndarray, out: np.ndarray, longer: bool, inverse: bool) -> None:
    """One reversible level along the rows of 2D ``x`` into ``out``: forward (interleaved samples
    to low rows then high), floor-rounded lifting steps, each a function of the other half only,
    so that ``inverse`` (low then high to interleaved) undoes them exactly. The predict is 5/3's or,
    where ``longer``, 9/7-M's; sums in int64 (the dtype must hold the coefficients: :func:`wavedec`)."""
    n, width = x.shape
    m, nd = (n + 1) // 2, n // 2
    odd = 2 * np.arange(nd) + 1
    near, far_left, far_right = _mirrored(odd + 1, n), _mirrored(odd - 3, n), _mirrored(odd + 3, n)
    # where sample j of the interleaved signal is read from: ``x`` forward, ``out`` (its evens
    # restored first) going back
    evens = out if inverse else x
    if inverse:
        for k in range(m):
            left, right = m + max(k - 1, 0), m + min(k, nd - 1)
            for i in range(width):
                out[2 * k, i] = x[k, i] - ((np.int64(x[left, i]) + x[right, i] + 2) >> 2)
    for k in range(nd):
        j, a, b, c = odd[k], near[k], far_left[k], far_right[k]
        source, target = (x[m + k], out[j]) if inverse else (x[j], out[m + k])
        sign = 1 if inverse else -1
        if longer:
            for i in range(width):
                pair = np.int64(evens[j - 1, i]) + evens[a, i]
                target[i] = source[i] + sign * ((9 * pair - (np.int64(evens[b, i]) + evens[c, i]) + 8) >> 4)
        else:
            for i in range(width):
                target[i] = source[i] + sign * ((np.int64(evens[j - 1, i]) + evens[a, i]) >> 1)
    if not inverse:
        for k in range(m):
            left, right = m + max(k - 1, 0), m + min(k, nd - 1)
            for i in range(width):
                out[k, i] = x[2 * k, i] + ((np.int64(out[left, i]) + out[right, i] + 2) >> 2)


@numba.njit(nogil=True, cache=True)
def _integer_pass(x: np.ndarray, out: np.ndarray, longer: bool, inverse: bool) -> None:
    """:func:`_integer_rows` along the middle axis of (outer, n, inner) ``x``."""
    outer, n, inner = x.shape
    if n < 2:
        out[:] = x
    elif inner > 1 or outer == 1:
        for o in range(outer):
            _integer_rows(x[o], out[o], longer, inverse)
    else:
        rows, out_rows = x.reshape(outer, n), out.reshape(outer, n)
        source, target = np.zeros((n, _TILE), x.dtype), np.zeros((n, _TILE), out.dtype)
        for o0 in range(0, outer, _TILE):
            _gather(rows, o0, source)
            _integer_rows(source, target, longer, inverse)
            _scatter(target, out_rows, o0)


_STEPS = np.array([_ALPHA, _BETA, _GAMMA, _DELTA], np.float32)
_SCALES = np.array([_LOW, _HIGH], np.float32)


@numba.njit(nogil=True, cache=True)
def _lift(out: np.ndarray, step: np.float32, at: np.ndarray, left: np.ndarray, right: np.ndarray) -> None:
    """``out[at[k]] += step * (out[left[k]] + out[right[k]])`` row by row, in float32."""
    for k in range(len(at)):
        target, a, b = out[at[k]], out[left[k]], out[right[k]]
        for i in range(len(target)):
            target[i] += step * (a[i] + b[i])


@numba.njit(nogil=True, cache=True)
def _halves(x: np.ndarray, out: np.ndarray, inverse: bool) -> tuple[np.ndarray, np.ndarray]:
    """Start a CDF 9/7 level along the rows of 2D ``x``: its low and high rows placed in ``out``
    (forward: the interleaved samples' evens first, then its odds; ``inverse``: low and high rows
    unscaled and interleaved), and where each half's row k sits in ``out``."""
    n = x.shape[0]
    m, nd = (n + 1) // 2, n // 2
    low = np.arange(m) * 2 if inverse else np.arange(m)
    high = np.arange(nd) * 2 + 1 if inverse else m + np.arange(nd)
    for k in range(m):
        out[low[k]] = x[k] / _SCALES[0] if inverse else x[2 * k]
    for k in range(nd):
        out[high[k]] = x[m + k] / _SCALES[1] if inverse else x[2 * k + 1]
    return low, high


@numba.njit(nogil=True, cache=True)
def _cdf_rows(x: np.ndarray, out: np.ndarray, inverse: bool) -> None:
    """One unsteered CDF 9/7 level (float32) along the rows of 2D ``x`` into ``out``: forward,
    interleaved samples to low rows then high; ``inverse``, back (the steps negated, in reverse)."""
    n = x.shape[0]
    m, nd = (n + 1) // 2, n // 2
    low, high = _halves(x, out, inverse)
    below = low[np.minimum(np.arange(nd) + 1, m - 1)]
    around_left, around_right = high[np.maximum(np.arange(m) - 1, 0)], high[np.minimum(np.arange(m), nd - 1)]
    for s in range(4):
        step = -_STEPS[3 - s] if inverse else _STEPS[s]
        if (s % 2 == 0) != inverse:  # the high samples from the low ones
            _lift(out, step, high, low, below)
        else:
            _lift(out, step, low, around_left, around_right)
    if not inverse:
        out[:m] *= _SCALES[0]
        out[m:] *= _SCALES[1]


@numba.njit(nogil=True, cache=True)
def _cdf_pass(x: np.ndarray, out: np.ndarray, inverse: bool) -> None:
    """:func:`_cdf_rows` along the middle axis of (outer, n, inner) ``x``."""
    outer, n, inner = x.shape
    if n < 2:
        out[:] = x
    elif inner > 1 or outer == 1:
        for o in range(outer):
            _cdf_rows(x[o], out[o], inverse)
    else:
        rows, out_rows = x.reshape(outer, n), out.reshape(outer, n)
        source, target = np.zeros((n, _TILE), x.dtype), np.zeros((n, _TILE), out.dtype)
        for o0 in range(0, outer, _TILE):
            _gather(rows, o0, source)
            _cdf_rows(source, target, inverse)
            _scatter(target, out_rows, o0)


@numba.njit(nogil=True, cache=True)
def _steered_rows(
    x: np.ndarray, out: np.ndarray, offsets: np.ndarray, block: int, first: np.ndarray, last: np.ndarray,
    inverse: bool,
) -> None:
    """:func:`_cdf_rows`, steered: along the rows of 2D ``x`` whose columns run along the steered
    axis (fastest, ``len(first)`` long) and any axes above it; ``offsets``: (ceil(n / block),
    columns), ``first``/``last``: each index's half of the steered axis (:class:`Steer`)."""
    n, width = x.shape
    m, nd = (n + 1) // 2, n // 2
    low, high = _halves(x, out, inverse)
    # each block row's columns to read in the row before (ahead) and the row after (behind)
    column = np.arange(width)
    along = column % len(first)
    ahead, behind = np.empty(offsets.shape, np.int64), np.empty(offsets.shape, np.int64)
    for row in range(len(offsets)):
        off = offsets[row].astype(np.int64)
        ahead[row] = column + np.minimum(np.maximum(along + off, first[along]), last[along]) - along
        behind[row] = column + np.minimum(np.maximum(along - off, first[along]), last[along]) - along
    for s in range(4):
        step = -_STEPS[3 - s] if inverse else _STEPS[s]
        predict = (s % 2 == 0) != inverse  # the high samples from the low ones
        for k in range(nd if predict else m):
            if predict:  # high row k (sample 2k + 1) from low rows k and k + 1
                target, before, after = out[high[k]], out[low[k]], out[low[min(k + 1, m - 1)]]
                row = (2 * k + 1) // block
            else:  # low row k (sample 2k) from high rows k - 1 and k
                target, before, after = out[low[k]], out[high[max(k - 1, 0)]], out[high[min(k, nd - 1)]]
                row = 2 * k // block
            a, b = ahead[row], behind[row]
            for i in range(width):
                target[i] += step * (before[a[i]] + after[b[i]])
    if not inverse:
        out[:m] *= _SCALES[0]
        out[m:] *= _SCALES[1]


@numba.njit(nogil=True, cache=True)
def _steered_pass(
    x: np.ndarray, out: np.ndarray, offsets: np.ndarray, block: int, first: np.ndarray, last: np.ndarray,
    across: bool, inverse: bool,
) -> None:
    """:func:`_steered_rows` along the middle axis of (outer, n, inner) ``x``: the steered axis is
    the fastest of ``inner``, or where ``across`` (a pass along the last axis, inner 1) of ``outer``,
    whose lines along it are then lifted a line at a time, transposed into (n, line) slabs."""
    outer, n = x.shape[:2]
    if n < 2:
        out[:] = x
    elif not across:
        for o in range(outer):
            _steered_rows(x[o], out[o], offsets[o], block, first, last, inverse)
    else:
        length = len(first)
        rows, out_rows, steer_rows = x.reshape(outer, n), out.reshape(outer, n), offsets.reshape(outer, -1)
        source, target = np.zeros((n, length), x.dtype), np.zeros((n, length), out.dtype)
        steer = np.zeros((steer_rows.shape[1], length), offsets.dtype)
        for o0 in range(0, outer, length):
            _gather(rows, o0, source)
            _gather(steer_rows, o0, steer)
            _steered_rows(source, target, steer, block, first, last, inverse)
            _scatter(target, out_rows, o0)


def _pass(x: np.ndarray, out: np.ndarray, ax: int, integer: str | None, steer: Steer | None, inverse: bool) -> None:
    """One level along ``ax`` of C-ordered ``x`` into ``out``: forward, each half's rows together
    along ``ax`` (low first); ``inverse``, back. ``integer`` and ``steer`` as :func:`wavedec` takes them."""
    if steer is not None:
        _steered(x, out, ax, steer, inverse)
    elif integer:
        _integer_pass(_along(x, ax), _along(out, ax), INTEGER[integer], inverse)
    else:
        _cdf_pass(_along(x, ax), _along(out, ax), inverse)


def _steered(x: np.ndarray, out: np.ndarray, ax: int, steer: Steer, inverse: bool) -> None:
    """:func:`_steered_pass` along ``ax`` of C-ordered ``x`` into ``out``."""
    across = ax == x.ndim - 1
    first, last = _segments_of(x.shape[-2] if across else x.shape[-1], steer.split)
    _steered_pass(_along(x, ax), _along(out, ax), steer.offsets, steer.block, first, last, across, inverse)


def _along(a: np.ndarray, ax: int) -> np.ndarray:
    """C-ordered ``a`` viewed as (outer, n, inner) with ``ax`` in the middle."""
    return a.reshape(math.prod(a.shape[:ax]), a.shape[ax], math.prod(a.shape[ax + 1 :]))


def detail_keys(count: int) -> list[str]:
    """Detail-band keys over ``count`` transformed axes, in pywt's order (all-``a`` excluded)."""
    return ["".join(k) for k in itertools.product("ad", repeat=count)][1:]


def _sizes(shape: tuple[int, ...], levels: int, axes: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The array's shape at each level's input, finest first, then the coarsest approximation's."""
    sizes = [tuple(shape)]
    for _ in range(levels):
        sizes.append(tuple((n + 1) // 2 if i in axes else n for i, n in enumerate(sizes[-1])))
    return sizes


def _region(size: tuple[int, ...], key: str, low: tuple[int, ...], axes: tuple[int, ...]) -> tuple[slice, ...]:
    """Where band ``key`` sits in a level's array laid out low-pass first along each axis."""
    out = [slice(None)] * len(size)
    for ch, ax in zip(key, axes, strict=True):
        out[ax] = slice(0, low[ax]) if ch == "a" else slice(low[ax], size[ax])
    return tuple(out)


def wavedec(
    x: np.ndarray, levels: int, axes: tuple[int, ...], integer: str | None = None, steering: Steering | None = None
) -> list[np.ndarray]:
    """Bands of a ``levels``-deep decomposition of ``x`` over ``axes`` (layout: module docstring).

    ``integer``: an :data:`INTEGER` transform of an integer array, in its dtype (which must leave
    headroom: coefficients grow by up to two bits per level and axis); None: CDF 9/7 in float32.
    ``steering`` (CDF 9/7 only) steers the passes along the last two axes (it chooses how, as
    :class:`streamcomp.coding.directions.Directions` does)."""
    a = np.asarray(x) if integer else np.asarray(x, np.float32)
    if integer and a.dtype.kind not in "iu":
        raise TypeError(f"the integer transforms take integers, not {a.dtype}")
    per_level = []
    for level in range(levels):
        half = _sizes(a.shape, 1, axes)[1]
        a, spare = np.ascontiguousarray(a), None  # each pass writes the array the pass before read
        for ax in axes:
            v = np.moveaxis(a, ax, 0)
            steer = None if steering is None else steering.forward(level, ax, v, _split(a.ndim, ax, axes, half))
            out = np.empty(a.shape, a.dtype) if spare is None else spare
            _pass(a, out, ax, integer, steer, False)
            a, spare = out, (None if a is x else a)
        per_level.append([a[_region(a.shape, key, half, axes)] for key in detail_keys(len(axes))])
        a = a[_region(a.shape, "a" * len(axes), half, axes)]
    return [a] + [band for level in reversed(per_level) for band in level]


def _split(ndim: int, ax: int, axes: tuple[int, ...], half: tuple[int, ...]) -> int | None:
    """Where the axis a pass along ``ax`` steers along (the array's last axis, or for a pass along
    it the one before) was split into low and high by an earlier pass of the level, if it was."""
    other = ndim - 1 if ax != ndim - 1 else ndim - 2
    return half[other] if other in axes and axes.index(other) < axes.index(ax) else None


class Steering:
    """How the passes along the last two axes are steered, level by level (``level`` 0: the finest):
    chosen on the data going forward, recalled by shape going back."""

    def forward(self, level: int, ax: int, v: np.ndarray, split: int | None) -> Steer | None:
        raise NotImplementedError

    def inverse(self, level: int, ax: int, shape: tuple[int, ...], split: int | None) -> Steer | None:
        raise NotImplementedError


def band_shapes(shape: tuple[int, ...], levels: int, axes: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Shapes of :func:`wavedec`'s bands for an array of ``shape``."""
    sizes = _sizes(shape, levels, axes)
    out = [sizes[-1]]
    for size, half in zip(sizes[-2::-1], sizes[:0:-1], strict=True):
        for key in detail_keys(len(axes)):
            out.append(tuple(len(range(n)[s]) for n, s in zip(size, _region(size, key, half, axes), strict=True)))
    return out


def waverec(
    bands: list[np.ndarray],
    shape: tuple[int, ...],
    levels: int,
    axes: tuple[int, ...],
    integer: str | None = None,
    steering: Steering | None = None,
) -> np.ndarray:
    """Inverse of :func:`wavedec` for an array of ``shape`` (``integer`` and ``steering`` as there)."""
    sizes = _sizes(shape, levels, axes)
    keys = detail_keys(len(axes))
    a = np.asarray(bands[0]) if integer else np.asarray(bands[0], np.float32)
    for i, (size, half) in enumerate(zip(sizes[-2::-1], sizes[:0:-1], strict=True)):
        full = np.empty(size, a.dtype)
        full[_region(size, "a" * len(axes), half, axes)] = a
        for key, band in zip(keys, bands[1 + i * len(keys) : 1 + (i + 1) * len(keys)], strict=True):
            full[_region(size, key, half, axes)] = band
        level, spare = levels - 1 - i, None
        for ax in reversed(axes):
            split = _split(len(size), ax, axes, half)
            steer = None if steering is None else steering.inverse(level, ax, np.moveaxis(full, ax, 0).shape, split)
            out = np.empty(size, a.dtype) if spare is None else spare
            _pass(full, out, ax, integer, steer, True)
            full, spare = out, full  # the next pass writes the array this one read
        a = full
    return a
