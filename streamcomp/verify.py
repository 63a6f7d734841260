"""Quality of a compressed array against its original, computed chunk by chunk.

PSNR accumulates squared error over the whole array (peak = max - min of the original); SSIM is
the voxel-weighted mean of per-chunk 3D SSIM at that same peak. The ratio counts every stored
byte of the output (level 0 alone for an OME-Zarr group, whose pyramid is counted apart).
Optionally only a random sample of chunks is checked (for huge volumes). For an error-bounded
array the stored bound is checked too, and whether the decode is bit-exact.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import zarr
from tqdm import tqdm

from streamcomp.errors import InputError
from streamcomp.format.codec import codec_config_of
from streamcomp.format.ome import group_levels, level_url
from streamcomp.format.store import array_stored_bytes, store_for
from streamcomp.metrics import psnr_from_mse, ssim
from streamcomp.plan import chunk_grid
from streamcomp.source import open_source
from streamcomp.values import finite_range


@dataclass
class Quality:
    psnr: float
    ssim: float
    max_abs_error: float
    ratio: float
    bits_per_voxel: float
    stored_bytes: int
    raw_bytes: int
    chunks_checked: int
    decode_seconds: float
    exact: bool = False  # every checked voxel decodes to its source bits
    max_error: float | None = None  # the array's stored bound (None: a lossy array)

    @property
    def bound_met(self) -> bool | None:
        """Whether the checked voxels are within the stored bound (None when there is none)."""
        if self.max_error is None:
            return None
        return self.exact if self.max_error == 0 else self.max_abs_error <= self.max_error

    def as_dict(self) -> dict:
        return {**asdict(self), "bound_met": self.bound_met}


def open_compressed(dst: str, storage_options: dict | None = None, level: int = 0) -> zarr.Array:
    """Open a streamcomp output read-only: a plain array, or one level of an OME-Zarr group (level 0,
    the compressed array, by default), with a clear error when it is neither."""
    levels = group_levels(dst, storage_options)
    if levels is None and level != 0:
        raise InputError(f"{dst} is a single array (no OME-Zarr pyramid): only level 0 exists, not {level}")
    if levels is not None and not 0 <= level < len(levels):
        raise InputError(f"{dst} has levels 0 to {len(levels) - 1}, not {level}")
    url = dst if levels is None else level_url(dst, levels[level])
    try:
        array = zarr.open_array(store_for(url, storage_options, read_only=True), mode="r")
    except FileNotFoundError as exc:
        raise InputError(f"no zarr array at {url}") from exc
    except Exception as exc:  # zarr raises several types for non-arrays
        raise InputError(f"cannot open {url} as a zarr array: {type(exc).__name__}: {exc}") from exc
    if level == 0:
        codec_config_of(array)
    return array


def evaluate(
    original: str,
    dst: str,
    sample: int | None = None,
    seed: int = 0,
    progress: bool = False,
    storage_options: dict | None = None,
) -> Quality:
    """Compare ``dst`` with ``original`` over all chunks (or ``sample`` random ones)."""
    source = open_source(original, storage_options)
    array = open_compressed(dst, storage_options)
    if tuple(array.shape) != tuple(source.shape):
        raise InputError(f"shapes differ: original {source.shape}, compressed {array.shape}")
    items = list(chunk_grid(tuple(array.shape), tuple(array.chunks)))
    if sample is not None and sample < len(items):
        rng = np.random.default_rng(seed)
        items = [items[i] for i in sorted(rng.choice(len(items), sample, replace=False))]
    blocks = []
    vmin, vmax = math.inf, -math.inf
    for item in items:
        lo_hi = finite_range(source.read(item.slices))
        if lo_hi is not None:
            vmin, vmax = min(vmin, lo_hi[0]), max(vmax, lo_hi[1])
        blocks.append(item)
    peak = (vmax - vmin) if vmax > vmin else 1.0
    sse, count, ssim_sum, max_err, decode_s, exact = 0.0, 0, 0.0, 0.0, 0.0, True
    for item in tqdm(blocks, desc="verify", unit="chunk", disable=not progress):
        raw = source.read(item.slices)
        t = time.perf_counter()
        decoded = np.asarray(array[item.slices])
        decode_s += time.perf_counter() - t
        exact = exact and _same_bits(raw, decoded)
        orig, dec = raw.astype(np.float64), decoded.astype(np.float64)
        finite = np.isfinite(orig)
        diff = np.where(finite, orig - np.where(finite, dec, 0), 0.0)
        sse += float(np.sum(diff**2))
        n = int(finite.sum())
        count += n
        max_err = max(max_err, float(np.abs(diff).max(initial=0.0)))
        ssim_sum += ssim(orig, dec, peak) * orig.size
    voxels = sum(it.voxels for it in blocks)
    mse = sse / max(count, 1)
    stored = array_stored_bytes(array)
    raw = source.nbytes
    return Quality(
        psnr=psnr_from_mse(mse, peak),
        ssim=ssim_sum / max(voxels, 1),
        max_abs_error=max_err,
        ratio=raw / max(stored, 1),
        bits_per_voxel=8 * stored / (raw / source.dtype.itemsize),
        stored_bytes=stored,
        raw_bytes=raw,
        chunks_checked=len(blocks),
        decode_seconds=decode_s,
        exact=exact,
        max_error=codec_config_of(array).get("max_error"),
    )


def _same_bits(original: np.ndarray, decoded: np.ndarray) -> bool:
    """Bit for bit, except that any NaN matches any NaN (the frame keeps a voxel's NaN-ness, not
    its payload)."""
    if original.dtype != decoded.dtype or original.shape != decoded.shape:
        return False
    if original.dtype.kind != "f":
        return bool(np.array_equal(original, decoded))
    same = original.view(f"u{original.dtype.itemsize}") == decoded.view(f"u{original.dtype.itemsize}")
    return bool(np.all(same | (np.isnan(original) & np.isnan(decoded))))
