"""Compress a volume into a streamcomp zarr array: the public entry point and its checks.

Everything the user could get wrong is checked before the output is created, so a bad call
writes nothing. The work itself (plan, fit, encode, write) is :mod:`streamcomp.pipeline`: chunks
stream through Ray workers that read their own blocks, so memory stays flat whatever the size.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from streamcomp.errors import InputError
from streamcomp.frame import FLAG_CONSTANT, Frame, pack
from streamcomp.io import is_url, local_path
from streamcomp.methods import DEFAULT_METHOD, Method, method_class


@dataclass
class CompressResult:
    dst: str
    method: str
    shape: tuple[int, ...]
    dtype: str
    chunks: tuple[int, ...]
    raw_bytes: int
    stored_bytes: int
    seconds: float
    chunks_written: int
    target: dict[str, float] = field(default_factory=dict)
    chunks_skipped: int = 0  # already present and valid (resume)
    manifest: str | None = None
    run: dict[str, Any] = field(default_factory=dict)  # pipeline statistics (executor, workers, times)

    @property
    def ratio(self) -> float:
        return self.raw_bytes / max(self.stored_bytes, 1)

    @property
    def bits_per_voxel(self) -> float:
        return 8 * self.stored_bytes / (self.raw_bytes / np.dtype(self.dtype).itemsize)


def validate_target(ratio: float | None, psnr: float | None) -> None:
    if (ratio is None) == (psnr is None):
        raise InputError("give exactly one target: a ratio (e.g. --ratio 8) or a PSNR (e.g. --psnr 32)")
    if ratio is not None and not ratio > 1:
        raise InputError(f"ratio must be greater than 1 (raw size / compressed size), got {ratio}")
    if psnr is not None and not 0 < psnr < 200:
        raise InputError(f"PSNR target must be between 0 and 200 dB, got {psnr}")


def make_method(name: str, params: dict[str, Any] | None, ndim: int) -> Method:
    method = method_class(name)(**(params or {}))
    if ndim not in method.ndims:
        raise InputError(f"method {name!r} handles {method.ndims}-D volumes, this one has {ndim} axes")
    return method


def output_exists(dst: str, storage_options: dict | None) -> bool:
    if is_url(dst):
        import fsspec

        from streamcomp.io import s3_options

        fs, path = fsspec.core.url_to_fs(dst, **(s3_options(dst, storage_options) or {}))
        return bool(fs.exists(path))
    return os.path.exists(local_path(dst))


def constant_chunk(method: Method, block: np.ndarray, chunk_shape: tuple[int, ...]) -> bytes:
    value = float(block.reshape(-1)[0])
    frame = Frame(method.method_id, block.dtype, chunk_shape, block.shape, value, value, FLAG_CONSTANT)
    return pack(frame)


def compress(
    src: str,
    dst: str,
    *,
    method: str = DEFAULT_METHOD,
    ratio: float | None = None,
    psnr: float | None = None,
    chunks: str | tuple[int, ...] | None = None,
    zarr_format: int = 3,
    method_params: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    storage_options: dict | None = None,
    resume: bool = False,
    workers: int | None = None,
    ray_address: str | None = None,
    executor: str = "auto",
    gpu: bool | None = None,
    manifest: bool = True,
) -> CompressResult:
    """Compress ``src`` (``.npy``, ``.tif``, HDF5, zarr/N5/precomputed path or URL) into a zarr array at ``dst``.

    Runs the Ray pipeline (:mod:`streamcomp.pipeline`): ``ray_address`` (or ``RAY_ADDRESS``) names
    a running cluster, otherwise an embedded local Ray is started with ``workers`` CPUs (all by
    default) and stopped afterwards. Tiny inputs (under 64 MiB) with no Ray running, no address
    and no ``workers`` run the same per-chunk worker in-process (``executor="local"``; ``"ray"``
    forces Ray). ``resume=True`` completes an existing output: finished chunks that pass the frame
    and CRC check are kept, the rest encoded with the array's own codec configuration (never
    refit). ``gpu`` (default: whether the cluster has GPUs) makes workers request one GPU each.
    A manifest (counts, rates, times) is written beside the output as ``<dst>.manifest.json``.
    """
    from streamcomp.pipeline import run

    summary, stats = run(
        src,
        dst,
        method=method,
        ratio=ratio,
        psnr=psnr,
        chunks=chunks,
        zarr_format=zarr_format,
        method_params=method_params,
        overwrite=overwrite,
        resume=resume,
        progress=progress,
        storage_options=storage_options,
        workers=workers,
        ray_address=ray_address,
        executor=executor,
        gpu=gpu,
        manifest=manifest,
    )
    return CompressResult(
        dst=dst,
        method=method,
        shape=summary["shape"],
        dtype=summary["dtype"],
        chunks=summary["chunks"],
        raw_bytes=summary["raw_bytes"],
        stored_bytes=summary["stored_bytes"],
        seconds=stats.seconds.get("total", 0.0),
        chunks_written=stats.chunks_encoded,
        target=summary["target"],
        chunks_skipped=stats.chunks_skipped,
        manifest=summary["manifest"],
        run=asdict(stats),
    )
