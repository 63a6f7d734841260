"""Error-bounded scientific compressors (ZFP, SZ3) on the volume as float32, in 3D/4D at once.

These are what HPC users reach for: they take the whole array (not slices) and bound the error.
Integer data is converted to float32 (exact for the 8-16-bit values here); the decoded floats are
rounded and clipped back to the original dtype, as a user restoring integer data would. The knob
is the absolute error bound expressed relative to the data's range (max - min), so one knob range
fits all volumes. ZFP runs in fixed-accuracy mode (its best rate-distortion mode, but its ratio
saturates: even a tolerance of the whole range keeps a few bits per value) and in fixed-rate mode
(any ratio down to 0.25 bit/value; zfpy crashes below ~0.14 bit/value in 3D, so the range stops
there). SZ3 uses its absolute error bound.
"""

from __future__ import annotations

import time
from functools import partial

import numpy as np

from benchmarks.codec_api import Baseline, CodecResult, Knob, header_bytes
from benchmarks.intmap import cast_like


def _zfpy_reason() -> str | None:
    try:
        import zfpy  # noqa: F401
    except ImportError as exc:
        return f"zfpy not importable ({exc}); pip install zfpy"
    return None


def _pysz_reason() -> str | None:
    try:
        from pysz import sz  # noqa: F401
    except ImportError as exc:
        return f"SZ3 Python binding not importable ({exc}); pip install pysz"
    return None


def _span(volume: np.ndarray) -> float:
    span = float(volume.max()) - float(volume.min())
    return span if span > 0 else 1.0


def _up_to_4d(volume: np.ndarray) -> str | None:
    if volume.ndim > 4:
        return f"{volume.ndim}-D arrays exceed the 4-D maximum"
    return None


def _zfp(volume: np.ndarray, knob: float, *, mode: str) -> CodecResult:
    """zfpy in fixed-accuracy (``mode="tolerance"``, ``knob`` relative to the range) or fixed-rate
    (``mode="rate"``, ``knob`` bits per value) mode."""
    import zfpy

    t0 = time.perf_counter()
    data = np.ascontiguousarray(volume, dtype=np.float32)
    setting = {"tolerance": knob * _span(volume)} if mode == "tolerance" else {"rate": knob}
    # The zfpy stream carries a header with shape and type: it is self-describing.
    stream = zfpy.compress_numpy(data, **setting)
    t1 = time.perf_counter()
    decoded = cast_like(zfpy.decompress_numpy(stream), volume.dtype)
    t2 = time.perf_counter()
    return CodecResult(len(stream), decoded, t1 - t0, t2 - t1)


def _sz3(volume: np.ndarray, rel_tol: float) -> CodecResult:
    from pysz import sz, szConfig, szErrorBoundMode

    t0 = time.perf_counter()
    data = np.ascontiguousarray(volume, dtype=np.float32)
    config = szConfig()
    config.errorBoundMode = szErrorBoundMode.ABS
    config.absErrorBound = rel_tol * _span(volume)
    stream, _ = sz.compress(data, config)
    t1 = time.perf_counter()
    out, _ = sz.decompress(stream, np.float32, data.shape)
    decoded = cast_like(np.asarray(out).reshape(volume.shape), volume.dtype)
    t2 = time.perf_counter()
    # pysz's decompress needs shape and dtype from outside: charge a minimal header for them.
    return CodecResult(int(stream.nbytes) + header_bytes(volume), decoded, t1 - t0, t2 - t1)


BASELINES: list[Baseline] = [
    Baseline(
        name="zfp",
        family="float",
        description="ZFP fixed-accuracy on float32 (zfpy), whole array, tolerance relative to range",
        run=partial(_zfp, mode="tolerance"),
        knob=Knob("rel_tolerance", 1e-5, 1.0, increasing=True, log=True),
        unavailable=_zfpy_reason,
        unsupported=_up_to_4d,
    ),
    Baseline(
        name="zfp-rate",
        family="float",
        description="ZFP fixed-rate on float32 (zfpy), whole array, bits per value",
        run=partial(_zfp, mode="rate"),
        knob=Knob("bits_per_value", 0.25, 16.0, increasing=False, log=True),
        unavailable=_zfpy_reason,
        unsupported=_up_to_4d,
    ),
    Baseline(
        name="sz3",
        family="float",
        description="SZ3 absolute error bound on float32 (pysz), whole array, bound relative to range",
        run=_sz3,
        knob=Knob("rel_error_bound", 1e-5, 0.5, increasing=True, log=True),
        unavailable=_pysz_reason,
        unsupported=_up_to_4d,
    ),
]
