"""Lossless floors: zstd and blosc (zstd + bit-shuffle), what a plain zarr store gives for free.

Any lossy method must beat these ratios to be worth its error; they run once per volume (no knob)
on the raw little-endian bytes, plus the shape/dtype header the raw streams lack.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.codec_api import Baseline, CodecResult, any_volume, header_bytes

ZSTD_LEVEL = 19
BLOSC_LEVEL = 9


def _numcodecs_reason(name: str) -> str | None:
    try:
        import numcodecs
    except ImportError as exc:
        return f"numcodecs not importable ({exc}); pip install numcodecs"
    if not hasattr(numcodecs, name):
        return f"numcodecs {numcodecs.__version__} has no {name} codec"
    return None


def _roundtrip(volume: np.ndarray, codec: object) -> CodecResult:
    t0 = time.perf_counter()
    data = np.ascontiguousarray(volume)
    stream = codec.encode(data)  # type: ignore[attr-defined]
    t1 = time.perf_counter()
    decoded = np.frombuffer(codec.decode(stream), dtype=volume.dtype).reshape(volume.shape)  # type: ignore[attr-defined]
    t2 = time.perf_counter()
    return CodecResult(len(stream) + header_bytes(volume), decoded, t1 - t0, t2 - t1)


def _zstd(volume: np.ndarray, _knob: float) -> CodecResult:
    from numcodecs import Zstd

    return _roundtrip(volume, Zstd(level=ZSTD_LEVEL))


def _blosc(volume: np.ndarray, _knob: float) -> CodecResult:
    from numcodecs import Blosc

    # typesize follows the dtype so the shuffle groups bytes of one sample, as zarr does.
    codec = Blosc(cname="zstd", clevel=BLOSC_LEVEL, shuffle=Blosc.BITSHUFFLE)
    return _roundtrip(volume, codec)


BASELINES: list[Baseline] = [
    Baseline(
        name="zstd",
        family="lossless",
        description=f"zstd level {ZSTD_LEVEL} on the raw bytes (numcodecs)",
        run=_zstd,
        knob=None,
        unavailable=lambda: _numcodecs_reason("Zstd"),
        unsupported=any_volume,
    ),
    Baseline(
        name="blosc",
        family="lossless",
        description=f"blosc zstd clevel {BLOSC_LEVEL} with bit-shuffle (numcodecs)",
        run=_blosc,
        knob=None,
        unavailable=lambda: _numcodecs_reason("Blosc"),
        unsupported=any_volume,
    ),
]
