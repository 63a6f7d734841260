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


def _next(s: np.ndarray, n: int) -> np.ndarray:
    """``s[i + 1]`` for ``i < n``, mirrored past the end."""
    return s[1 : n + 1] if len(s) > n else np.concatenate((s[1:], s[-1:]))


def _pair(d: np.ndarray, m: int) -> np.ndarray:
    """``d[i - 1] + d[i]`` for ``i < m``, mirrored at both ends."""
    left = np.concatenate((d[:1], d[: m - 1]))
    right = d if len(d) == m else np.concatenate((d, d[-1:]))
    return left + right


def _forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One level along axis 0: (low, high). A single sample is its own low band."""
    s, d = x[0::2].copy(), x[1::2].copy()
    if not len(d):
        return s, d
    n, m = len(d), len(s)
    d += np.float32(_ALPHA) * (s[:n] + _next(s, n))
    s += np.float32(_BETA) * _pair(d, m)
    d += np.float32(_GAMMA) * (s[:n] + _next(s, n))
    s += np.float32(_DELTA) * _pair(d, m)
    return s * _LOW, d * _HIGH


def _inverse(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    if not len(high):
        return low.copy()
    s, d = low / _LOW, high / _HIGH
    n, m = len(d), len(s)
    s -= np.float32(_DELTA) * _pair(d, m)
    d -= np.float32(_GAMMA) * (s[:n] + _next(s, n))
    s -= np.float32(_BETA) * _pair(d, m)
    d -= np.float32(_ALPHA) * (s[:n] + _next(s, n))
    x = np.empty((n + m, *s.shape[1:]), np.float32)
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
    return s[np.where(at > size - 1, period - at, at) // 2]


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


def _forward_int(x: np.ndarray, integer: str) -> tuple[np.ndarray, np.ndarray]:
    """One reversible level along axis 0, in ``x``'s integer dtype: floor-rounded lifting steps,
    each a function of the other half only, so :func:`_inverse_int` undoes them exactly."""
    s, d = x[0::2].copy(), x[1::2].copy()
    if not len(d):
        return s, d
    n, m = len(d), len(s)
    d -= INTEGER[integer](s, n)
    s += (_pair(d, m) + 2) >> 2
    return s, d


def _inverse_int(low: np.ndarray, high: np.ndarray, integer: str) -> np.ndarray:
    if not len(high):
        return low.copy()
    s, d = low.copy(), high.copy()
    n, m = len(d), len(s)
    s -= (_pair(d, m) + 2) >> 2
    d += INTEGER[integer](s, n)
    x = np.empty((n + m, *s.shape[1:]), s.dtype)
    x[0::2], x[1::2] = s, d
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


def wavedec(x: np.ndarray, levels: int, axes: tuple[int, ...], integer: str | None = None) -> list[np.ndarray]:
    """Bands of a ``levels``-deep decomposition of ``x`` over ``axes`` (layout: module docstring).

    ``integer``: an :data:`INTEGER` transform of an integer array, in its dtype (which must leave
    headroom: coefficients grow by up to two bits per level and axis); None: CDF 9/7 in float32."""
    a = np.asarray(x) if integer else np.asarray(x, np.float32)
    if integer and a.dtype.kind not in "iu":
        raise TypeError(f"the integer transforms take integers, not {a.dtype}")
    forward = functools.partial(_forward_int, integer=integer) if integer else _forward
    per_level = []
    for _ in range(levels):
        for ax in axes:
            low, high = forward(np.moveaxis(a, ax, 0))
            a = np.moveaxis(np.concatenate((low, high)), 0, ax)
        half = _sizes(a.shape, 1, axes)[1]
        per_level.append([a[_region(a.shape, key, half, axes)] for key in detail_keys(len(axes))])
        a = a[_region(a.shape, "a" * len(axes), half, axes)]
    return [a] + [band for level in reversed(per_level) for band in level]


def band_shapes(shape: tuple[int, ...], levels: int, axes: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Shapes of :func:`wavedec`'s bands for an array of ``shape``."""
    sizes = _sizes(shape, levels, axes)
    out = [sizes[-1]]
    for size, half in zip(sizes[-2::-1], sizes[:0:-1], strict=True):
        for key in detail_keys(len(axes)):
            out.append(tuple(len(range(n)[s]) for n, s in zip(size, _region(size, key, half, axes), strict=True)))
    return out


def waverec(
    bands: list[np.ndarray], shape: tuple[int, ...], levels: int, axes: tuple[int, ...], integer: str | None = None
) -> np.ndarray:
    """Inverse of :func:`wavedec` for an array of ``shape`` (``integer`` as there)."""
    sizes = _sizes(shape, levels, axes)
    keys = detail_keys(len(axes))
    a = np.asarray(bands[0]) if integer else np.asarray(bands[0], np.float32)
    inverse = functools.partial(_inverse_int, integer=integer) if integer else _inverse
    for i, (size, half) in enumerate(zip(sizes[-2::-1], sizes[:0:-1], strict=True)):
        full = np.empty(size, a.dtype)
        full[_region(size, "a" * len(axes), half, axes)] = a
        for key, band in zip(keys, bands[1 + i * len(keys) : 1 + (i + 1) * len(keys)], strict=True):
            full[_region(size, key, half, axes)] = band
        for ax in reversed(axes):
            v = np.moveaxis(full, ax, 0)
            full = np.moveaxis(inverse(v[: half[ax]], v[half[ax] :]), 0, ax)
        a = full
    return a
