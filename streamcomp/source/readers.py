"""Readers: open an input volume lazily, whatever it is stored in, and read blocks of it.

Small inputs: ``.npy`` is memory-mapped, ``.tif`` read through tifffile, HDF5 (CREMI's
``volumes/raw``) through h5py. Chunked arrays (zarr v2/v3, N5, neuroglancer precomputed) at a
local path or a ``file://``, ``s3://``, ``gs://``, ``https://`` URL are read through tensorstore,
with zarr-python (fsspec) as the fallback. Nothing is loaded whole: callers read the blocks they
need, and a source can be reopened anywhere from its URL and storage options alone (the Ray
workers do exactly that).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamcomp.errors import InputError
from streamcomp.format.frame import check_dtype
from streamcomp.source.urls import filesystem, is_url, local_path, read_json, s3_options, tensorstore_kvstore

HDF5_DEFAULT_DATASET = "volumes/raw"
# tensorstore / neuroglancer unit symbols -> NGFF (OME-Zarr) unit names.
NGFF_UNITS = {
    "nm": "nanometer", "um": "micrometer", "µm": "micrometer", "mm": "millimeter", "cm": "centimeter",
    "m": "meter", "s": "second", "ms": "millisecond", "us": "microsecond", "ns": "nanosecond",
}


@dataclass
class Source:
    """A lazily read volume: ``read`` takes a tuple of slices and returns an ndarray."""

    url: str
    shape: tuple[int, ...]
    dtype: np.dtype
    read: Callable[[tuple[slice, ...]], np.ndarray] = field(repr=False)
    native_chunks: tuple[int, ...] | None = None
    reader: str = ""  # what reads it: "numpy mmap", "h5py", "tensorstore zarr3", "zarr-python", ...
    voxel_size: tuple[float, ...] | None = None  # per axis, in ``units`` (None: the source does not say)
    units: tuple[str | None, ...] | None = None  # NGFF unit names per axis ("nanometer", ...)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def _from_array_like(url: str, arr: Any, chunks: tuple[int, ...] | None = None, reader: str = "") -> Source:
    return Source(url, tuple(arr.shape), np.dtype(arr.dtype), lambda sel: np.asarray(arr[sel]), chunks, reader)


def _open_npy(path: str) -> Source:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"cannot read {path} as a NumPy .npy file: {exc}") from exc
    return _from_array_like(path, arr, None, "numpy mmap")


def _open_tiff(path: str) -> Source:
    import tifffile

    try:
        arr = tifffile.memmap(path, mode="r")
    except (ValueError, OSError):
        try:
            arr = tifffile.imread(path)
        except Exception as exc:  # tifffile raises many types for bad files
            raise InputError(f"cannot read {path} as a TIFF stack: {exc}") from exc
    return _from_array_like(path, arr, None, "tifffile")


def _open_hdf5(path: str, dataset: str) -> Source:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"cannot open {path} as HDF5: {exc}") from exc
    if dataset not in f:
        raise InputError(f"{path} has no dataset {dataset!r}; name one as {path}#/path/to/dataset")
    ds = f[dataset]
    source = _from_array_like(f"{path}#{dataset}", ds, ds.chunks, "h5py")
    resolution = ds.attrs.get("resolution")  # CREMI: (z, y, x) in nm
    if resolution is not None and np.ndim(resolution) == 1 and len(resolution) == ds.ndim:
        source.voxel_size = tuple(float(v) for v in resolution)
        source.units = ("nanometer",) * ds.ndim
    return source


def _open_zarr(url: str, storage_options: dict | None) -> Source:
    import zarr

    so = s3_options(url, storage_options) if is_url(url) else None
    try:
        arr = zarr.open_array(url, mode="r", storage_options=so)
    except FileNotFoundError as exc:
        raise InputError(f"no zarr array at {url}: {_missing_hint(url)}") from exc
    except Exception as exc:  # zarr and fsspec raise many types for unreadable stores
        raise InputError(f"cannot open {url} as a zarr array: {_explain(exc)}") from exc
    return _from_array_like(url, arr, tuple(arr.chunks), "zarr-python")


# --- chunked array stores through tensorstore -------------------------------------------------

# Format prefixes a URL may carry (neuroglancer's convention: ``precomputed://gs://bucket/path``).
FORMAT_PREFIXES = {
    "zarr2": "zarr",
    "zarr3": "zarr3",
    "zarr": None,
    "n5": "n5",
    "precomputed": "neuroglancer_precomputed",
}
# The metadata document that tells each format apart, probed in this order.
FORMAT_KEYS = (
    ("zarr.json", "zarr3"),
    (".zarray", "zarr"),
    ("attributes.json", "n5"),
    ("info", "neuroglancer_precomputed"),
)
_EXPLICIT_KEYS = ("key", "secret", "token", "access_key_id", "secret_access_key")


def split_format(src: str) -> tuple[str | None, str]:
    """``n5://s3://b/p`` -> (``"n5"``, ``"s3://b/p"``); a plain URL or path -> (None, src)."""
    head, sep, rest = src.partition("://")
    if sep and head.lower() in FORMAT_PREFIXES:
        return FORMAT_PREFIXES[head.lower()] or "auto", rest  # n5:///abs/path -> /abs/path
    return None, src


def _explicit_credentials(storage_options: dict | None) -> bool:
    so = storage_options or {}
    return any(k in so for k in _EXPLICIT_KEYS) or bool(so.get("profile"))


def _ts_context() -> Any:
    import tensorstore as ts

    # No chunk cache (each block is read once), bounded copy threads: memory stays at the blocks read.
    # Retries bounded so an unreachable endpoint fails in seconds, not minutes.
    return ts.Context(
        {
            "cache_pool": {"total_bytes_limit": 0},
            "data_copy_concurrency": {"limit": 2},
            "s3_request_retries": {"max_retries": 4, "initial_delay": "0.2s", "max_delay": "2s"},
            "gcs_request_retries": {"max_retries": 4, "initial_delay": "0.2s", "max_delay": "2s"},
        }
    )


def _explain(exc: BaseException) -> str:
    """A one-line reason from a tensorstore / botocore / fsspec error, with what to check."""
    text = str(exc).split(" [tensorstore_spec=")[0].splitlines()[0] if str(exc) else type(exc).__name__
    low = str(exc).lower()
    if "permission_denied" in low or "403" in low or "accessdenied" in low or "forbidden" in low:
        hint = "access denied: check credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, "
        hint += "storage_options, or anon for public buckets)"
    elif "invalidaccesskeyid" in low or "signaturedoesnotmatch" in low or "unauthenticated" in low:
        hint = "the credentials were rejected"
    elif "could not connect" in low or "curl error" in low or ("connect" in low and "error" in low):
        hint = "the storage endpoint cannot be reached (check --endpoint-url / the network)"
    elif "nosuchbucket" in low or ("bucket" in low and "not exist" in low):
        hint = "the bucket does not exist"
    else:
        return f"{type(exc).__name__}: {text}"
    return f"{hint} ({text})"


def _missing_hint(url: str) -> str:
    if url.startswith(("s3://", "gs://", "gcs://")):
        return "the bucket or the path does not exist (a group needs the array's path)"
    return "check the path (a group needs the array's path)"


def _probe_format(kvstore: dict, url: str) -> str | None:
    import tensorstore as ts

    try:
        kv = ts.KvStore.open(kvstore, context=_ts_context()).result()
        for key, driver in FORMAT_KEYS:
            if kv.read(key).result().state == "value":
                return driver
    except ValueError as exc:
        raise InputError(f"cannot read {url}: {_explain(exc)}") from exc
    return None


def _bucket_exists(url: str, storage_options: dict | None) -> bool | None:
    """Whether the URL's bucket exists (None when that cannot be told), for a clearer error."""
    try:
        fs, path = filesystem(url, storage_options)
        return bool(fs.exists(path.split("/")[0]))
    except Exception:
        return None


def _ts_source(url: str, ts_store: Any, driver: str) -> Source:
    import tensorstore as ts

    arr = ts_store
    if driver == "neuroglancer_precomputed":  # x, y, z, channel -> (channel,) z, y, x
        if arr.shape[-1] == 1:
            arr = arr[ts.d["channel"][0]]
            arr = arr[ts.d["z", "y", "x"].transpose[:]]
        else:
            arr = arr[ts.d["channel", "z", "y", "x"].transpose[:]]
    arr = arr.translate_to[0]
    chunks = None
    try:
        chunks = tuple(int(c) for c in arr.chunk_layout.read_chunk.shape)
    except Exception:  # not every driver reports a chunk layout
        chunks = None

    def read(sel: tuple[slice, ...]) -> np.ndarray:
        return np.asarray(arr[sel].read().result())

    source = Source(url, tuple(int(n) for n in arr.shape), np.dtype(arr.dtype.numpy_dtype), read, chunks,
                    f"tensorstore {driver}")
    units = list(arr.dimension_units)  # precomputed: its info's resolution; N5: resolution/units attributes
    if any(u is not None for u in units):
        source.voxel_size = tuple(1.0 if u is None else float(u.multiplier) for u in units)
        source.units = tuple(None if u is None else NGFF_UNITS.get(u.base_unit, u.base_unit) for u in units)
    return source


def _open_chunked(src: str, storage_options: dict | None, engine: str) -> Source:
    """A zarr v2/v3, N5 or neuroglancer precomputed array, through tensorstore (or zarr-python)."""
    fmt, url = split_format(src)
    url = url.rstrip("/") or url
    use_ts = engine == "tensorstore" or (engine == "auto" and not _explicit_credentials(storage_options))
    if not use_ts:
        if fmt not in (None, "auto", "zarr", "zarr3"):
            raise InputError(f"{fmt} sources are read through tensorstore; drop engine={engine!r}")
        return _open_zarr(url if is_url(url) else local_path(url), storage_options)
    import tensorstore as ts

    kvstore = tensorstore_kvstore(url, storage_options)
    driver = fmt if fmt not in (None, "auto") else _probe_format(kvstore, url)
    if driver is None:
        if is_url(url) and _bucket_exists(url, storage_options) is False:
            raise InputError(f"cannot read {url}: the bucket does not exist")
        raise InputError(
            f"no zarr, N5 or neuroglancer precomputed array at {url}: {_missing_hint(url)}"
        )
    try:
        store = ts.open({"driver": driver, "kvstore": kvstore}, read=True, context=_ts_context()).result()
    except ValueError as exc:
        if driver in ("zarr", "zarr3") and engine == "auto":  # e.g. a codec tensorstore lacks
            try:
                return _open_zarr(url if is_url(url) else local_path(url), storage_options)
            except InputError:
                pass
        raise InputError(f"cannot open {url} as {driver}: {_explain(exc)}") from exc
    return _ts_source(url, store, driver)


def ome_multiscales(url: str, storage_options: dict | None = None) -> dict | None:
    """The first ``multiscales`` entry of an OME-Zarr image group at ``url`` (NGFF 0.5 ``zarr.json``
    ``ome`` attributes, or 0.4 ``.zattrs``), or None when ``url`` is no such group."""
    base = url.rstrip("/")
    try:
        doc = read_json(f"{base}/zarr.json", storage_options)
        if doc is not None:
            attrs = doc.get("attributes", {}) if doc.get("node_type") == "group" else {}
            multiscales = attrs.get("ome", {}).get("multiscales")
        else:
            multiscales = (read_json(f"{base}/.zattrs", storage_options) or {}).get("multiscales")
    except Exception:  # unreadable here: opening the array itself then says why, with a clearer message
        return None
    return multiscales[0] if isinstance(multiscales, list) and multiscales else None


def level_scale(multiscale: dict, path: str) -> tuple[tuple[float, ...], tuple[str | None, ...]] | None:
    """(voxel size, units) of the level at ``path`` in an NGFF ``multiscales`` entry (global scale
    included), or None when it has no such level."""
    axes = multiscale.get("axes", [])
    units = tuple(a.get("unit") if isinstance(a, dict) else None for a in axes)
    for dataset in multiscale.get("datasets", []):
        if str(dataset.get("path")) != path:
            continue
        scale = np.ones(len(axes))
        for transforms in (dataset.get("coordinateTransformations", []), multiscale.get("coordinateTransformations")):
            for t in transforms or []:
                if t.get("type") == "scale" and len(t.get("scale", [])) == len(axes):
                    scale = scale * np.asarray(t["scale"], np.float64)
        return tuple(float(v) for v in scale), units
    return None


def _open_ome_or_chunked(src: str, storage_options: dict | None, engine: str) -> Source:
    """A chunked array; an OME-Zarr group opens at its first (full-resolution) level, and a level of
    one takes its voxel size and units from the group's ``multiscales``."""
    fmt, url = split_format(src)
    if fmt not in (None, "auto", "zarr", "zarr3"):
        return _open_chunked(src, storage_options, engine)
    url = url.rstrip("/") or url
    multiscale = ome_multiscales(url, storage_options)
    if multiscale is not None and multiscale.get("datasets"):
        path = str(multiscale["datasets"][0]["path"])
        source = _open_chunked(f"{url}/{path}", storage_options, engine)
    else:
        parent, _, path = url.rpartition("/")
        multiscale = ome_multiscales(parent, storage_options) if parent else None
        source = _open_chunked(src, storage_options, engine)
    scale = level_scale(multiscale, path) if multiscale is not None else None
    if scale is not None and len(scale[0]) == len(source.shape):
        source.voxel_size, source.units = scale
    return source


def open_source(src: str, storage_options: dict | None = None, engine: str = "auto") -> Source:
    """Open ``src`` for lazy block reads and validate that it is a volume streamcomp can take.

    ``src``: ``.npy`` / ``.tif`` / HDF5 (``file.h5#dataset``, CREMI's ``volumes/raw`` by default)
    for small inputs, or a chunked array (zarr v2/v3, N5, neuroglancer precomputed; the format is
    detected from its metadata document or given as a ``n5://`` / ``precomputed://`` / ``zarr2://``
    / ``zarr3://`` prefix) at a path or a ``file://``, ``s3://``, ``gs://``, ``https://`` URL.
    Chunked arrays are read through tensorstore (``engine="auto"``), or zarr-python when the
    storage options carry explicit keys (tensorstore takes credentials from the AWS chain only) or
    tensorstore cannot decode the array; ``engine="zarr"`` / ``"tensorstore"`` force one.
    An OME-Zarr image group opens at its full-resolution level; voxel size and units come from the
    group's ``multiscales``, a CREMI HDF5 ``resolution`` attribute or what tensorstore reports
    (precomputed ``info`` resolution, N5 attributes), else stay None.
    Failures (missing path or bucket, denied access, unreachable endpoint) raise ``InputError``.
    """
    if engine not in ("auto", "tensorstore", "zarr"):
        raise InputError(f"engine must be auto, tensorstore or zarr, not {engine!r}")
    fmt, inner = split_format(src)
    path, _, dataset = inner.partition("#")
    lpath = local_path(path)
    lower = lpath.lower()
    if not is_url(path) and not os.path.exists(lpath):
        raise InputError(f"source {src} does not exist")
    if fmt is None and lower.endswith(".npy"):
        source = _open_npy(lpath)
    elif fmt is None and lower.endswith((".tif", ".tiff")):
        source = _open_tiff(lpath)
    elif fmt is None and lower.endswith((".h5", ".hdf5", ".hdf")):
        source = _open_hdf5(lpath, dataset or HDF5_DEFAULT_DATASET)
    else:
        source = _open_ome_or_chunked(src, storage_options, engine)
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
