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
"""

from __future__ import annotations

import functools
import itertools

import numpy as np

_ALPHA, _BETA, _GAMMA, _DELTA = -1.586134342059924, -0.052980118572961, 0.882911075530934, 0.443506852043971
_K = 1.230174104914001
_LOW, _HIGH = np.float32(np.sqrt(2.0) / _K), np.float32(_K / np.sqrt(2.0))


class Shifts:
    """Per-sample offsets along the last axis for one pass's high (or low) rows, prepared once:
    the flat positions where an offset is set (``at``) and those of the samples it points to, in
    the row before (at +offset, ``before``) and in the row after (at -offset, ``after``), clamped
    to the sample's half of ``split`` (to the axis where None)."""

    def __init__(self, at: np.ndarray, before: np.ndarray, after: np.ndarray) -> None:
        self.at, self.before, self.after = at, before, after

    @classmethod
    def of(cls, offsets: np.ndarray, split: int | None) -> Shifts:
        """From an offset for every sample."""
        at = np.flatnonzero(offsets)
        n = offsets.shape[-1]
        column, offset = at % n, offsets.reshape(-1)[at]
        before, after = _clamped(column, offset, n, split)
        return cls(at, at - column + before, at - column + after)

    @classmethod
    def of_blocks(
        cls, offsets: np.ndarray, block: tuple[int, ...], shape: tuple[int, ...], split: int | None
    ) -> Shifts:
        """From one offset per block of ``block`` samples over an array of ``shape``. Built from
        the steered blocks alone and clamped along a block's row only, then broadcast over its
        other axes: spreading the grid over the whole array and clamping every sample took 6 % of
        a CT chunk's decode."""
        steered = np.flatnonzero(offsets)
        corners = np.unravel_index(steered, offsets.shape)
        strides = np.cumprod((1, *shape[:0:-1]))[::-1]
        ndim = len(shape)
        rows = np.zeros((len(steered), *[1] * ndim), np.int64)  # a sample's flat position less its column
        inside = np.ones(rows.shape, bool)
        for ax, (corner, size, n, stride) in enumerate(zip(corners, block, shape, strides, strict=True)):
            coord = (corner[:, None] * size + np.arange(size)).reshape(-1, *[1] * ax, size, *[1] * (ndim - 1 - ax))
            inside = inside & (coord < n)
            if ax < ndim - 1:
                rows = rows + coord * stride
        column = coord
        offset = offsets.reshape(-1)[steered].astype(np.int64).reshape(-1, *[1] * ndim)
        before, after = _clamped(column, offset, shape[-1], split)
        return cls(*(np.broadcast_to(rows + x, inside.shape)[inside] for x in (column, before, after)))


def _clamped(column: np.ndarray, offset: np.ndarray, n: int, split: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The columns ``offset`` after and before ``column``, clamped to its half of ``split``."""
    lo, hi = _segment(column, n, split)
    return np.clip(column + offset, lo, hi), np.clip(column - offset, lo, hi)


def _segment(column: np.ndarray, n: int, split: int | None) -> tuple[np.ndarray, np.ndarray]:
    """First and last column of each column's half of ``split`` (the whole axis where None)."""
    if split is None:
        return np.zeros_like(column), np.full_like(column, n - 1)
    return np.where(column < split, 0, split), np.where(column < split, split - 1, n - 1)


def _shifted(a: np.ndarray, offset: int, split: int | None) -> np.ndarray:
    """``a`` with every sample taken ``offset`` further along the last axis, clamped to its half."""
    if offset == 0:
        return a
    n = a.shape[-1]
    out = np.empty_like(a)
    for lo, hi in ((0, n),) if split is None else ((0, split), (split, n)):
        if hi <= lo:
            continue
        k = min(abs(offset), hi - lo)
        seg, dst = a[..., lo:hi], out[..., lo:hi]
        if offset > 0:
            dst[..., : hi - lo - k] = seg[..., k:]
            dst[..., hi - lo - k :] = seg[..., -1:]
        else:
            dst[..., k:] = seg[..., : hi - lo - k]
            dst[..., :k] = seg[..., :1]
    return out


# Steering of one lifting pass (:mod:`streamcomp.coding.directions`): the high rows' and the low
# rows' offsets, along an edge that crosses the rows (one offset for every sample, an int, or
# :class:`Shifts`), and the split point of the axis they run along (a neighbour never crosses it:
# the halves of an earlier pass).
Steer = tuple[Shifts | int, Shifts | int, int | None]


def _steered_sum(before: np.ndarray, after: np.ndarray, shifts: Shifts | int, split: int | None) -> np.ndarray:
    """``before`` taken at +offset plus ``after`` taken at -offset, sample by sample."""
    if isinstance(shifts, int):
        return _shifted(before, shifts, split) + _shifted(after, -shifts, split)
    before, after = np.ascontiguousarray(before), np.ascontiguousarray(after)  # flat positions are C order
    out = before + after
    out.reshape(-1)[shifts.at] = before.reshape(-1)[shifts.before] + after.reshape(-1)[shifts.after]
    return out


def _rows_like(a: np.ndarray, rows: int) -> np.ndarray:
    """An empty array of ``rows`` rows shaped and laid out in memory like ``a`` (a view moved from
    another axis keeps its layout: a transposing copy along the fastest axis costs three times
    the lifting step itself)."""
    return np.empty_like(a, shape=(rows, *a.shape[1:]))


def _next(s: np.ndarray, n: int) -> np.ndarray:
    """``s[i + 1]`` for ``i < n``, mirrored past the end."""
    if len(s) > n:
        return s[1 : n + 1]
    out = _rows_like(s, n)
    out[:-1], out[-1] = s[1:], s[-1]
    return out


def _neighbours(s: np.ndarray, n: int, steer: Steer | None) -> np.ndarray:
    """``s[i] + s[i + 1]`` for ``i < n`` (the samples around high row i), steered."""
    if steer is None:
        return s[:n] + _next(s, n)
    return _steered_sum(s[:n], _next(s, n), steer[0], steer[2])


def _pair(d: np.ndarray, m: int, steer: Steer | None = None) -> np.ndarray:
    """``d[i - 1] + d[i]`` for ``i < m`` (the samples around low row i), mirrored at both ends, steered."""
    left = _rows_like(d, m)
    left[0], left[1:] = d[0], d[: m - 1]
    right = d
    if len(d) != m:
        right = _rows_like(d, m)
        right[:-1], right[-1] = d, d[-1]
    if steer is None:
        left += right
        return left
    return _steered_sum(left, right, steer[1], steer[2])


def _forward(x: np.ndarray, steer: Steer | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One level along axis 0: (low, high). A single sample is its own low band."""
    order = "K" if steer is None else "C"  # steered steps address samples by their flat C-order positions
    s, d = x[0::2].copy(order=order), x[1::2].copy(order=order)
    if not len(d):
        return s, d
    n, m = len(d), len(s)
    d += np.float32(_ALPHA) * _neighbours(s, n, steer)
    s += np.float32(_BETA) * _pair(d, m, steer)
    d += np.float32(_GAMMA) * _neighbours(s, n, steer)
    s += np.float32(_DELTA) * _pair(d, m, steer)
    return s * _LOW, d * _HIGH


def _inverse(low: np.ndarray, high: np.ndarray, steer: Steer | None = None) -> np.ndarray:
    if not len(high):
        return low.copy()
    if steer is None:
        s, d = low / _LOW, high / _HIGH
    else:  # steered steps address samples by their flat C-order positions
        s, d = np.divide(low, _LOW, order="C"), np.divide(high, _HIGH, order="C")
    n, m = len(d), len(s)
    s -= np.float32(_DELTA) * _pair(d, m, steer)
    d -= np.float32(_GAMMA) * _neighbours(s, n, steer)
    s -= np.float32(_BETA) * _pair(d, m, steer)
    d -= np.float32(_ALPHA) * _neighbours(s, n, steer)
    x = _rows_like(low, n + m)
    x[0::2], x[1::2] = s, d
    return x


def _predict_53(s: np.ndarray, n: int) -> np.ndarray:
    """The 5/3 predict: ``(s[i] + s[i+1]) >> 1``."""
    return (s[:n] + _next(s, n)) >> 1


def _mirrored_evens(s: np.ndarray, n: int) -> np.ndarray:
    """``s[i - 1], ..., s[i + 2]`` stacked for ``i < n`` (rows ``i .. i + 3`` of the result), the even
    samples of a signal of ``len(s) + n`` samples extended whole-sample symmetrically."""
    size = len(s) + n
    period = max(2 * (size - 1), 1)
    at = np.abs(2 * np.arange(-1, n + 2)) % period
    rows = np.where(at > size - 1, period - at, at) // 2
    out = _rows_like(s, n + 3)
    runs = [0, *(np.flatnonzero(np.diff(rows) != 1) + 1), len(rows)]  # copied as slices, not gathered
    for a, b in itertools.pairwise(runs):
        out[a:b] = s[rows[a] : rows[a] + b - a]
    return out


def _predict_97m(s: np.ndarray, n: int) -> np.ndarray:
    """The 9/7-M predict (JPEG 2000 Part 2): ``(9 (s[i] + s[i+1]) - (s[i-1] + s[i+2]) + 8) >> 4``."""
    e = _mirrored_evens(s, n)
    out = e[1 : n + 1] + e[2 : n + 2]  # in place from here: these run over whole chunks
    out *= 9
    out -= e[:n]
    out -= e[3 : n + 3]
    out += 8
    out >>= 4
    return out


# The integer-to-integer transforms, by name, as their predict steps (both update with 5/3's):
# LeGall 5/3 (JPEG 2000's lossless transform) and 9/7-M (its Part 2's), whose longer predict
# suits smooth data better.
INTEGER = {"5/3": _predict_53, "9/7-M": _predict_97m}


def _forward_int(x: np.ndarray, integer: str, out: np.ndarray) -> None:
    """One reversible level along axis 0, in ``x``'s integer dtype, written to ``out`` (low rows,
    then high): floor-rounded lifting steps, each a function of the other half only, so
    :func:`_inverse_int` undoes them exactly."""
    s, d = x[0::2], x[1::2]
    m = len(s)
    if not len(d):
        out[...] = x
        return
    high = np.subtract(d, INTEGER[integer](s, len(d)), out=out[m:])
    update = _pair(high, m)
    update += 2
    update >>= 2
    np.add(s, update, out=out[:m])


def _inverse_int(low: np.ndarray, high: np.ndarray, integer: str) -> np.ndarray:
    x = _rows_like(low, len(low) + len(high))
    if not len(high):
        x[...] = low
        return x
    update = _pair(high, len(low))
    update += 2
    update >>= 2
    s = low - update  # contiguous: the predict reads it four times
    x[0::2] = s
    np.add(high, INTEGER[integer](s, len(high)), out=x[1::2])
    return x


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
        for ax in axes:
            v = np.moveaxis(a, ax, 0)
            if integer:
                a = np.empty(a.shape, a.dtype)
                _forward_int(v, integer, np.moveaxis(a, ax, 0))
                continue
            steer = None if steering is None else steering.forward(level, ax, v, _split(a.ndim, ax, axes, half))
            low, high = _forward(v, steer)
            a = np.empty(a.shape, np.float32)
            out = np.moveaxis(a, ax, 0)
            out[: len(low)], out[len(low) :] = low, high
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
    inverse = functools.partial(_inverse_int, integer=integer) if integer else _inverse
    for i, (size, half) in enumerate(zip(sizes[-2::-1], sizes[:0:-1], strict=True)):
        full = np.empty(size, a.dtype)
        full[_region(size, "a" * len(axes), half, axes)] = a
        for key, band in zip(keys, bands[1 + i * len(keys) : 1 + (i + 1) * len(keys)], strict=True):
            full[_region(size, key, half, axes)] = band
        level = levels - 1 - i
        for ax in reversed(axes):
            v = np.moveaxis(full, ax, 0)
            split = _split(len(size), ax, axes, half)
            steer = None if steering is None else steering.inverse(level, ax, v.shape, split)
            low, high = v[: half[ax]], v[half[ax] :]
            full = np.moveaxis(inverse(low, high) if steer is None else _inverse(low, high, steer), 0, ax)
        a = full
    return a
