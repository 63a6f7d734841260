"""Output arrays: create them with the codec, write chunk bytes straight to their keys, count bytes.

Chunk bytes go to the store key zarr itself would use, in one ``set`` call: zarr's LocalStore
writes a temporary file and renames it, and an object store's PUT is atomic, so a killed writer
never leaves a half-written chunk that a reader could take for valid.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype

from streamcomp.errors import InputError
from streamcomp.format.codec import StreamcompCodec, StreamcompNumcodec
from streamcomp.source import is_url, local_path, s3_options


def store_for(url: str, storage_options: dict | None = None, read_only: bool = False) -> Any:
    """A zarr store for a local path, ``file://`` or fsspec URL."""
    if is_url(url):
        so = s3_options(url, storage_options)
        return zarr.storage.FsspecStore.from_url(url, storage_options=so, read_only=read_only)
    return zarr.storage.LocalStore(local_path(url), read_only=read_only)


def create_array(
    store: Any,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    dtype: np.dtype,
    codec_config: dict[str, Any],
    zarr_format: int = 3,
    overwrite: bool = False,
    attributes: dict | None = None,
    shards: tuple[int, ...] | None = None,
    dimension_names: tuple[str, ...] | None = None,
) -> zarr.Array:
    """An empty array whose chunks decode through the streamcomp codec; with ``shards``, a zarr v3
    array whose shards (``sharding_indexed``) hold the streamcomp-coded chunks."""
    common = {
        "store": store,
        "shape": shape,
        "chunks": chunks,
        "dtype": dtype,
        "fill_value": 0,
        "zarr_format": zarr_format,
        "overwrite": overwrite,
        "attributes": attributes,
        "filters": None,
    }
    if zarr_format not in (2, 3):
        raise InputError(f"zarr format must be 2 or 3, not {zarr_format}")
    # Compact JSON: the metadata document counts in the ratio, and indentation is a third of it.
    with zarr.config.set({"json_indent": None}):
        if zarr_format == 3:
            return zarr.create_array(
                serializer=StreamcompCodec(**codec_config), compressors=None, shards=shards,
                dimension_names=dimension_names, **common
            )
        return zarr.create_array(compressors=StreamcompNumcodec(**codec_config), **common)


def metadata_bytes(*args: Any, **kwargs: Any) -> int:
    """Size of the metadata documents an array with these arguments would have."""
    store = zarr.storage.MemoryStore()
    create_array(store, *args, **kwargs)
    return stored_bytes(store, "")


def chunk_key(array: zarr.Array, coords: tuple[int, ...]) -> str:
    key = array.metadata.encode_chunk_key(coords)
    prefix = array.store_path.path
    return f"{prefix}/{key}" if prefix else key


def write_chunk(array: zarr.Array, coords: tuple[int, ...], data: bytes) -> None:
    """Put one chunk's (or, in a sharded array, one whole shard's) bytes at its key in a single
    atomic store write."""
    from zarr.core.sync import sync

    buf = default_buffer_prototype().buffer.from_bytes(data)
    sync(array.store_path.store.set(chunk_key(array, coords), buf))  # set_sync exists on local stores only


def read_chunk(array: zarr.Array, coords: tuple[int, ...]) -> bytes | None:
    """The stored bytes of one chunk, or None when its key is absent."""
    from zarr.core.sync import sync

    buf = sync(array.store_path.store.get(chunk_key(array, coords), default_buffer_prototype()))
    return None if buf is None else buf.to_bytes()


def stored_chunk_keys(array: zarr.Array) -> set[str]:
    """Every chunk key present under the array (one listing; metadata documents left out)."""
    from zarr.core.sync import sync

    prefix = array.store_path.path

    async def collect() -> list[str]:
        return [k async for k in array.store_path.store.list_prefix(f"{prefix}/" if prefix else "")]

    keys = sync(collect())
    skip = {"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"}
    return {k for k in keys if k.rsplit("/", 1)[-1] not in skip and not k.endswith(".partial")}


def open_output_array(url: str, storage_options: dict | None = None) -> zarr.Array:
    """An existing output array, opened for chunk writes."""
    return zarr.open_array(store_for(url, storage_options), mode="r+")


def stored_bytes(store: Any, prefix: str) -> int:
    """Every byte under ``prefix``: chunks and metadata documents alike."""
    from zarr.core.sync import sync

    return int(sync(store.getsize_prefix(prefix)))


def array_stored_bytes(array: zarr.Array) -> int:
    return stored_bytes(array.store_path.store, array.store_path.path)
