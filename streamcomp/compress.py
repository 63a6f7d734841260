"""Compress a volume into a streamcomp zarr array: validate, plan, fit shared state, encode, write.

Everything the user could get wrong is checked before the output is created, so a bad call
writes nothing. Chunks are encoded one at a time from lazy source reads: memory stays at a few
chunks whatever the volume size.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from streamcomp.chunk import encode_chunk
from streamcomp.codec import make_config
from streamcomp.errors import InputError
from streamcomp.frame import FLAG_CONSTANT, Frame, pack
from streamcomp.io import Source, is_url, local_path, open_source
from streamcomp.methods import Method, method_class
from streamcomp.plan import Plan, assign_budgets, parse_chunks, scan
from streamcomp.store import array_stored_bytes, create_array, metadata_bytes, store_for, write_chunk

SAMPLE_BLOCKS = 64


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

        fs, path = fsspec.core.url_to_fs(dst, **(storage_options or {}))
        return bool(fs.exists(path))
    return os.path.exists(local_path(dst))


def sample_blocks(source: Source, plan: Plan, count: int = SAMPLE_BLOCKS, seed: int = 0) -> list[np.ndarray]:
    """Normalized data chunks drawn evenly at random, for methods that fit shared state."""
    data = [it for it in plan.items if it.kind == "data"]
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(data), size=min(count, len(data)), replace=False) if data else []
    out = []
    for i in sorted(picks):
        block = source.read(data[i].slices).astype(np.float32)
        out.append(np.nan_to_num(2 * (block - plan.vmin) / plan.peak - 1).astype(np.float32))
    return out


def constant_chunk(method: Method, block: np.ndarray, chunk_shape: tuple[int, ...]) -> bytes:
    value = float(block.reshape(-1)[0])
    frame = Frame(method.method_id, block.dtype, chunk_shape, block.shape, value, value, FLAG_CONSTANT)
    return pack(frame)


def compress(
    src: str,
    dst: str,
    *,
    method: str = "siren",
    ratio: float | None = None,
    psnr: float | None = None,
    chunks: str | tuple[int, ...] | None = None,
    zarr_format: int = 3,
    method_params: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    storage_options: dict | None = None,
) -> CompressResult:
    """Compress ``src`` (``.npy``, ``.tif``, HDF5, zarr path or URL) into a zarr array at ``dst``."""
    t0 = time.perf_counter()
    validate_target(ratio, psnr)
    if zarr_format not in (2, 3):
        raise InputError(f"zarr format must be 2 or 3, not {zarr_format}")
    if os.path.abspath(local_path(src.partition("#")[0])) == os.path.abspath(local_path(dst)):
        raise InputError("the output must not be the source: streamcomp never overwrites its input")
    source = open_source(src, storage_options)
    chunk_shape = parse_chunks(chunks, source.shape)
    codec_method = make_method(method, method_params, len(source.shape))
    if output_exists(dst, storage_options) and not overwrite:
        raise InputError(f"output {dst} already exists; pass --overwrite to replace it")

    plan = scan(source, chunk_shape, progress)
    codec_method.fit_shared(sample_blocks(source, plan))
    max_mse = None if psnr is None else plan.peak**2 / 10 ** (psnr / 10)
    config = make_config(codec_method, max_mse=max_mse)
    array_args = (source.shape, chunk_shape, source.dtype, config, zarr_format)
    if ratio is not None:
        meta = metadata_bytes(*array_args)
        assign_budgets(plan, ratio, meta, codec_method.min_payload_bytes(chunk_shape))
        data_voxels = sum(it.voxels for it in plan.items if it.kind == "data") or 1
        config["bytes_per_voxel"] = sum(it.budget or 0 for it in plan.items) / data_voxels
        array_args = (source.shape, chunk_shape, source.dtype, config, zarr_format)

    store = store_for(dst, storage_options)
    array = create_array(store, *array_args, overwrite=overwrite)
    written = 0
    for item in tqdm(plan.items, desc=f"encode {method}", unit="chunk", disable=not progress):
        if item.kind == "fill":
            continue
        block = source.read(item.slices)
        if item.kind == "constant":
            data = constant_chunk(codec_method, block, chunk_shape)
        else:
            data = encode_chunk(codec_method, block, chunk_shape, budget_bytes=item.budget, max_mse=max_mse)
        write_chunk(array, item.coords, data)
        written += 1
    target = {"ratio": ratio} if ratio is not None else {"psnr": psnr}
    return CompressResult(
        dst=dst,
        method=method,
        shape=tuple(source.shape),
        dtype=source.dtype.name,
        chunks=chunk_shape,
        raw_bytes=plan.raw_bytes,
        stored_bytes=array_stored_bytes(array),
        seconds=time.perf_counter() - t0,
        chunks_written=written,
        target=target,
    )
