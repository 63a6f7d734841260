"""What the studies share: one chunk through the shipped chunk codec, quality, machine, output.

A study encodes blocks with :func:`streamcomp.format.chunk.encode_chunk` (the framing every stored
chunk gets) and scores them with :mod:`streamcomp.metrics`, so its numbers mean what the
pipeline's and the harness's mean.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class ChunkRun:
    """One block through ``encode_chunk`` and ``decode_chunk``: framed bytes, the decoded block, times."""

    data: bytes
    decoded: np.ndarray
    encode_s: float
    decode_s: float


def roundtrip(
    method: Any, block: np.ndarray, budget_bytes: int, chunk_shape: tuple[int, ...] | None = None
) -> ChunkRun:
    """Encode ``block`` into at most ``budget_bytes`` framed bytes, decode it, time both."""
    from streamcomp.format.chunk import decode_chunk, encode_chunk

    t0 = time.perf_counter()
    data = encode_chunk(method, block, chunk_shape, budget_bytes=int(budget_bytes))
    t1 = time.perf_counter()
    decoded = decode_chunk(method, data)
    t2 = time.perf_counter()
    valid = tuple(slice(0, n) for n in block.shape)
    return ChunkRun(data, decoded[valid], t1 - t0, t2 - t1)


def median_time(read: Callable[[], Any], repeats: int = 3) -> tuple[Any, float]:
    """``read()``'s result and the median of ``repeats`` timed calls: one read of a whole array on a
    shared host lands anywhere within tens of percent, and a speedup is a ratio of two of them."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = read()
        times.append(time.perf_counter() - t0)
    return result, float(np.median(times))


def peak_of(volume: np.ndarray) -> float:
    """The PSNR/SSIM peak every study uses: max - min of the original (streamcomp.metrics)."""
    from streamcomp.metrics import value_range

    return value_range(volume)


def quality(original: np.ndarray, decoded: np.ndarray, peak: float) -> dict[str, float]:
    """PSNR (``streamcomp.metrics.psnr``) and SSIM: the 3D Gaussian SSIM, for a 4D series the mean
    over its time points of each volume's 3D SSIM."""
    from streamcomp.metrics import psnr, ssim

    if original.ndim == 4:
        s = float(np.mean([ssim(original[i], decoded[i], peak) for i in range(original.shape[0])]))
    else:
        s = ssim(original, decoded, peak)
    return {"psnr": psnr(original, decoded, peak), "ssim": s}


def pooled_quality(original: np.ndarray, decoded: np.ndarray, regions: list[tuple[slice, ...]], peak: float) -> dict:
    """Over the voxels of ``regions`` only: PSNR of their pooled MSE, mean of per-region SSIM."""
    from streamcomp.metrics import mse, psnr_from_mse, ssim

    a = np.concatenate([original[sl].ravel() for sl in regions])
    b = np.concatenate([decoded[sl].ravel() for sl in regions])
    ss = [ssim(original[sl], decoded[sl], peak) for sl in regions]
    return {"psnr": psnr_from_mse(mse(a, b), peak), "ssim": float(np.mean(ss))}


def evenly(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when ``k >= n``)."""
    if k >= n:
        return list(range(n))
    return sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})


def torch_threads(n: int) -> int:
    """Set torch's intra-op threads (a study's timings depend on it); returns what is in effect."""
    import torch

    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


def machine(**extra: Any) -> dict[str, Any]:
    """:func:`benchmarks.machine.describe` plus the load at start and what the study adds."""
    from benchmarks.machine import describe

    return {
        **describe(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "note": "shared CPU cores: times are indicative only",
        **extra,
    }


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=float))
