"""Video codecs (x265 HEVC, x264 AVC) through the ffmpeg command line, a slice axis as time.

Video codecs exploit inter-slice redundancy with motion-compensated prediction, the strongest
off-the-shelf competitor for volumes. Frames are the 2D slices in array order (z for 3D, (t, z)
for 4D, so z plays time within each volume). Samples are grayscale (4:0:0) at the smallest depth
the encoder takes that holds the data: 8/10/12-bit for x265, 8/10-bit for x264; signed CT is shifted
(and, past the depth, scaled) with the 16 parameter bytes counted. The bitstream is the raw Annex-B
stream with SEI messages stripped (the encoders otherwise write ~1-2 kB of option strings, which
no user archiving data needs and which would unfairly dominate tiny crops); the settings are
``-preset medium -tune psnr`` and CRF is the knob (continuous).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from functools import lru_cache, partial

import numpy as np

from benchmarks.codec_api import Baseline, CodecResult, Knob, any_volume, header_bytes
from benchmarks.intmap import from_unsigned, plan, to_unsigned
from benchmarks.memory import run_child

PRESET = "medium"
TIMEOUT_S = 600.0
_PIX_FMT = {8: "gray", 10: "gray10le", 12: "gray12le"}
_YUV420 = {8: "yuv420p", 10: "yuv420p10le", 12: "yuv420p12le"}


@dataclass(frozen=True)
class VideoCodec:
    """One ffmpeg encoder: its name, raw stream format, depths and how to drop its SEI NAL units."""

    encoder: str
    stream_format: str
    bits: tuple[int, ...]
    sei_types: str
    extra: tuple[str, ...] = ()
    luma_of_yuv420: bool = False


X265 = VideoCodec("libx265", "hevc", (8, 10, 12), "39|40", ("-x265-params", "log-level=error:info=0"))
# Every slice an intra frame: what x265 gets from coding tools within a slice, without prediction
# across slices (the part a plain 3D wavelet has no counterpart for).
X265_INTRA = VideoCodec("libx265", "hevc", (8, 10, 12), "39|40", ("-x265-params", "log-level=error:info=0:keyint=1"))
# ffmpeg's H.264 decoder returns 4:0:0 streams as 4:2:0 with flat chroma; asking it for gray
# would make swscale re-expand "limited-range" luma, so the Y plane is taken from 4:2:0 output.
X264 = VideoCodec("libx264", "h264", (8, 10), "6", luma_of_yuv420=True)


@lru_cache(maxsize=1)
def _encoders() -> str:
    out = subprocess.run(
        ["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=60, check=False
    )
    return out.stdout


def _ffmpeg_reason(codec: VideoCodec) -> str | None:
    if shutil.which("ffmpeg") is None:
        return "ffmpeg not on PATH (apt-get install -y ffmpeg)"
    try:
        listing = _encoders()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"ffmpeg -encoders failed: {exc}"
    if f" {codec.encoder} " not in listing:
        return f"this ffmpeg build has no {codec.encoder} encoder"
    return None


def _too_small(volume: np.ndarray) -> str | None:
    h, w = volume.shape[-2:]
    if h < 16 or w < 16:
        return f"slices of {h}x{w} are below the 16x16 minimum the encoders accept"
    return None


def _roundtrip(volume: np.ndarray, crf: float, codec: VideoCodec) -> CodecResult:
    h, w = volume.shape[-2:]
    t0 = time.perf_counter()
    m = plan(volume, codec.bits)
    frames = to_unsigned(volume, m).reshape(-1, h, w)
    pix = _PIX_FMT[m.bits]
    raw = frames.astype(frames.dtype.newbyteorder("<"), copy=False).tobytes()
    encode = [
        "ffmpeg", "-hide_banner", "-loglevel", "error",
        "-f", "rawvideo", "-pix_fmt", pix, "-s", f"{w}x{h}", "-r", "25", "-i", "pipe:0",
        "-c:v", codec.encoder, "-preset", PRESET, "-tune", "psnr", "-crf", f"{crf:.3f}",
        *codec.extra, "-pix_fmt", pix,
        "-bsf:v", f"filter_units=remove_types={codec.sei_types}",
        "-f", codec.stream_format, "pipe:1",
    ]  # fmt: skip
    stream = run_child(encode, raw, timeout=TIMEOUT_S)
    t1 = time.perf_counter()
    out_pix = _YUV420[m.bits] if codec.luma_of_yuv420 else pix
    decode = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-f", codec.stream_format, "-i", "pipe:0",
        "-f", "rawvideo", "-pix_fmt", out_pix, "pipe:1",
    ]  # fmt: skip
    out = run_child(decode, stream, timeout=TIMEOUT_S)
    samples = np.frombuffer(out, dtype=frames.dtype.newbyteorder("<"))
    n = frames.shape[0]
    per_frame = h * w + (2 * ((h + 1) // 2) * ((w + 1) // 2) if codec.luma_of_yuv420 else 0)
    if samples.size != n * per_frame:
        raise RuntimeError(f"{codec.encoder} decoded {samples.size} samples, expected {n * per_frame}")
    samples = samples.reshape(n, per_frame)[:, : h * w]
    decoded = from_unsigned(samples.reshape(volume.shape).astype(frames.dtype), m)
    t2 = time.perf_counter()
    stored = len(stream) + header_bytes(volume) + m.param_bytes
    return CodecResult(stored, decoded, t1 - t0, t2 - t1)


def _unsupported(volume: np.ndarray) -> str | None:
    return _too_small(volume) or any_volume(volume)


BASELINES: list[Baseline] = [
    Baseline(
        name="x265",
        family="video",
        description=f"HEVC via ffmpeg/libx265, gray 8/10/12-bit, preset {PRESET}, tune psnr, CRF",
        run=partial(_roundtrip, codec=X265),
        knob=Knob("crf", 0.0, 51.0, increasing=True),
        unavailable=lambda: _ffmpeg_reason(X265),
        unsupported=_unsupported,
    ),
    Baseline(
        name="x265-intra",
        family="video",
        description="HEVC as x265 but every slice an intra frame (keyint=1): no prediction across slices",
        run=partial(_roundtrip, codec=X265_INTRA),
        knob=Knob("crf", 0.0, 51.0, increasing=True),
        unavailable=lambda: _ffmpeg_reason(X265_INTRA),
        unsupported=_unsupported,
    ),
    Baseline(
        name="x264",
        family="video",
        description=f"AVC via ffmpeg/libx264, gray 8/10-bit, preset {PRESET}, tune psnr, CRF",
        run=partial(_roundtrip, codec=X264),
        knob=Knob("crf", 0.0, 51.0, increasing=True),
        unavailable=lambda: _ffmpeg_reason(X264),
        unsupported=_unsupported,
    ),
]
