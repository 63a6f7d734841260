"""Sources: open an input volume lazily, whatever it is stored in, and read blocks of it.

``.npy`` is memory-mapped, ``.tif`` read through tifffile, HDF5 (CREMI's ``volumes/raw``) through
h5py, and zarr arrays (a local path or any fsspec URL: ``file://``, ``s3://``, ``gs://``) through
zarr-python. Nothing is loaded whole: callers read the blocks they need.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamcomp.chunk import check_dtype
from streamcomp.errors import InputError

HDF5_DEFAULT_DATASET = "volumes/raw"


@dataclass
class Source:
    """A lazily read volume: ``read`` takes a tuple of slices and returns an ndarray."""

    url: str
    shape: tuple[int, ...]
    dtype: np.dtype
    read: Callable[[tuple[slice, ...]], np.ndarray] = field(repr=False)
    native_chunks: tuple[int, ...] | None = None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def local_path(path: str) -> str:
    return path[len("file://") :] if path.startswith("file://") else path


def _from_array_like(url: str, arr: Any, chunks: tuple[int, ...] | None = None) -> Source:
    return Source(url, tuple(arr.shape), np.dtype(arr.dtype), lambda sel: np.asarray(arr[sel]), chunks)


def _open_npy(path: str) -> Source:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"cannot read {path} as a NumPy .npy file: {exc}") from exc
    return _from_array_like(path, arr)


def _open_tiff(path: str) -> Source:
    import tifffile

    try:
        arr = tifffile.memmap(path, mode="r")
    except (ValueError, OSError):
        try:
            arr = tifffile.imread(path)
        except Exception as exc:  # tifffile raises many types for bad files
            raise InputError(f"cannot read {path} as a TIFF stack: {exc}") from exc
    return _from_array_like(path, arr)


def _open_hdf5(path: str, dataset: str) -> Source:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"cannot open {path} as HDF5: {exc}") from exc
    if dataset not in f:
        raise InputError(f"{path} has no dataset {dataset!r}; name one as {path}#/path/to/dataset")
    ds = f[dataset]
    return _from_array_like(f"{path}#{dataset}", ds, ds.chunks)


def _open_zarr(url: str, storage_options: dict | None) -> Source:
    import zarr

    try:
        arr = zarr.open_array(url, mode="r", storage_options=storage_options if is_url(url) else None)
    except FileNotFoundError as exc:
        raise InputError(f"no zarr array at {url}: check the path (a group needs the array's path)") from exc
    except Exception as exc:  # zarr and fsspec raise many types for unreadable stores
        raise InputError(f"cannot open {url} as a zarr array: {type(exc).__name__}: {exc}") from exc
    return _from_array_like(url, arr, tuple(arr.chunks))


def open_source(src: str, storage_options: dict | None = None) -> Source:
    """Open ``src`` for lazy block reads and validate that it is a volume streamcomp can take."""
    path, _, dataset = src.partition("#")
    lpath = local_path(path)
    lower = lpath.lower()
    if not is_url(path) and not os.path.exists(lpath):
        raise InputError(f"source {src} does not exist")
    if lower.endswith(".npy"):
        source = _open_npy(lpath)
    elif lower.endswith((".tif", ".tiff")):
        source = _open_tiff(lpath)
    elif lower.endswith((".h5", ".hdf5", ".hdf")):
        source = _open_hdf5(lpath, dataset or HDF5_DEFAULT_DATASET)
    else:
        source = _open_zarr(path if is_url(path) else lpath, storage_options)
    check_volume(source.shape, source.dtype)
    return source


def check_volume(shape: tuple[int, ...], dtype: np.dtype, ndims: tuple[int, ...] = (3, 4)) -> None:
    """Reject what is not a 3D/4D volume of a supported dtype, saying what would work."""
    check_dtype(dtype)
    if len(shape) not in ndims:
        raise InputError(
            f"expected a volume with {' or '.join(map(str, ndims))} axes (z, y, x or t, z, y, x), "
            f"got shape {shape}"
        )
    if any(n == 0 for n in shape):
        raise InputError(f"the volume is empty (shape {shape})")
