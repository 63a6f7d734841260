"""Per-slice 2D image codecs (JPEG XL, JPEG 2000, HTJ2K, AVIF) through imagecodecs.

This is what a user stacking TIFF/OME-Zarr slices with a modern image codec gets: every 2D slice
(z, or every (t, z) pair for 4D) is an independent codestream. Stored bytes are the sum of the
codestreams plus a 4-byte offset per slice (to find them), the shape/dtype header and, when the
data had to be shifted/scaled into unsigned samples, the 16 bytes of offset and scale.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np

from benchmarks.codec_api import Baseline, CodecResult, Knob, any_volume, header_bytes
from benchmarks.intmap import from_unsigned, plan, to_unsigned

OFFSET_BYTES = 4
JXL_EFFORT = 7
AVIF_SPEED = 6

Encoder = Callable[[np.ndarray, float, int], bytes]
Decoder = Callable[[bytes], np.ndarray]


def _imagecodecs_reason(attr: str) -> str | None:
    """Why ``imagecodecs.<attr>`` cannot be used here, or None if it can."""
    try:
        import imagecodecs
    except ImportError as exc:
        return f"imagecodecs not importable ({exc}); pip install imagecodecs"
    flag = getattr(imagecodecs, attr.upper(), None)
    if flag is None or not getattr(flag, "available", False):
        return f"imagecodecs {imagecodecs.__version__} was built without {attr}"
    return None


def _slice_roundtrip(
    volume: np.ndarray, knob: float, encode: Encoder, decode: Decoder, allowed_bits: Sequence[int]
) -> CodecResult:
    """Encode every 2D slice independently; time the full encode (with mapping) and decode."""
    t0 = time.perf_counter()
    m = plan(volume, allowed_bits)
    slices = to_unsigned(volume, m).reshape(-1, *volume.shape[-2:])
    streams = [encode(np.ascontiguousarray(s), knob, m.bits) for s in slices]
    t1 = time.perf_counter()
    out = np.empty(slices.shape, dtype=m.container)
    for i, data in enumerate(streams):
        out[i] = decode(data)
    decoded = from_unsigned(out.reshape(volume.shape), m)
    t2 = time.perf_counter()
    stored = sum(len(s) for s in streams) + OFFSET_BYTES * len(streams) + header_bytes(volume) + m.param_bytes
    return CodecResult(stored, decoded, t1 - t0, t2 - t1)


def _jxl_encode(img: np.ndarray, distance: float, bits: int) -> bytes:
    import imagecodecs

    return imagecodecs.jpegxl_encode(img, effort=JXL_EFFORT, distance=distance, bitspersample=bits)


def _jxl_decode(data: bytes) -> np.ndarray:
    import imagecodecs

    return imagecodecs.jpegxl_decode(data)


def _j2k_encode(img: np.ndarray, psnr_db: float, bits: int) -> bytes:
    import imagecodecs

    # level = target PSNR of OpenJPEG's fixed-quality mode; J2K = bare codestream, no JP2 boxes.
    return imagecodecs.jpeg2k_encode(img, level=psnr_db, codecformat="J2K", bitspersample=bits, reversible=False)


def _j2k_decode(data: bytes) -> np.ndarray:
    import imagecodecs

    return imagecodecs.jpeg2k_decode(data)


def _htj2k_encode(img: np.ndarray, qstep: float, _bits: int) -> bytes:
    import imagecodecs

    # OpenJPH has no rate control: level is the irreversible quantization step (relative).
    return imagecodecs.htj2k_encode(img, level=qstep, reversible=False)


def _htj2k_decode(data: bytes) -> np.ndarray:
    import imagecodecs

    return imagecodecs.htj2k_decode(data)


def _avif_encode(img: np.ndarray, quality: float, bits: int) -> bytes:
    import imagecodecs

    # imagecodecs encodes single-channel input losslessly whatever the level; lossy grayscale
    # needs RGB input converted to YUV 4:0:0 (luma only, so the replicated channels cost nothing).
    rgb = np.repeat(img[..., None], 3, axis=-1)
    return imagecodecs.avif_encode(rgb, level=int(quality), speed=AVIF_SPEED, bitspersample=bits, pixelformat="yuv400")


def _avif_decode(data: bytes) -> np.ndarray:
    import imagecodecs

    out = imagecodecs.avif_decode(data)
    return out if out.ndim == 2 else out[..., 0]


def _per_slice(encode: Encoder, decode: Decoder, bits: Sequence[int]) -> Callable[[np.ndarray, float], CodecResult]:
    return partial(_slice_roundtrip, encode=encode, decode=decode, allowed_bits=tuple(bits))


ANY_BITS = tuple(range(8, 17))

BASELINES: list[Baseline] = [
    Baseline(
        name="jpegxl",
        family="image-2d",
        description=f"JPEG XL per slice (libjxl via imagecodecs), effort {JXL_EFFORT}, lossy by distance",
        run=_per_slice(_jxl_encode, _jxl_decode, ANY_BITS),
        knob=Knob("distance", 0.02, 25.0, increasing=True, log=True),
        unavailable=lambda: _imagecodecs_reason("jpegxl"),
        unsupported=any_volume,
    ),
    Baseline(
        name="jpeg2000",
        family="image-2d",
        description="JPEG 2000 per slice (OpenJPEG via imagecodecs), 9/7 wavelet, fixed-quality layer",
        run=_per_slice(_j2k_encode, _j2k_decode, ANY_BITS),
        knob=Knob("psnr_db", 12.0, 90.0, increasing=False),
        unavailable=lambda: _imagecodecs_reason("jpeg2k"),
        unsupported=any_volume,
    ),
    Baseline(
        name="htj2k",
        family="image-2d",
        description="High-throughput JPEG 2000 per slice (OpenJPH via imagecodecs), quantization step",
        run=_per_slice(_htj2k_encode, _htj2k_decode, (8, 16)),
        knob=Knob("qstep", 1e-6, 1.0, increasing=True, log=True),
        unavailable=lambda: _imagecodecs_reason("htj2k"),
        unsupported=any_volume,
    ),
    Baseline(
        name="avif",
        family="image-2d",
        description=f"AVIF per slice (libavif/aom via imagecodecs), YUV 4:0:0, speed {AVIF_SPEED}, 8/10/12-bit",
        run=_per_slice(_avif_encode, _avif_decode, (8, 10, 12)),
        knob=Knob("quality", 0.0, 99.0, increasing=False, integer=True),
        unavailable=lambda: _imagecodecs_reason("avif"),
        unsupported=any_volume,
    ),
]
