"""The registered codec: how plain ``zarr`` / ``dask`` decode a streamcomp array without help.

One configuration, two registrations (package entry points, so a fresh process finds them):
``StreamcompCodec`` is a zarr format 3 ``ArrayBytesCodec`` (group ``zarr.codecs``), and
``StreamcompNumcodec`` a numcodecs ``Codec`` used as a zarr format 2 compressor (group
``numcodecs.codecs``). The configuration holds all array-level state: format version, method and
its parameters, the shared model state (zlib-compressed, base64, SHA-256 checked) and the rate,
quality or error bound used when a chunk is written through zarr itself (``arr[...] = x``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import threading
import zlib
from functools import lru_cache
from typing import Any

import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_ndarray, ndarray_copy
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.array_spec import ArraySpec
from zarr.core.buffer import Buffer, NDBuffer

from streamcomp.coding.context_model import ContextModel
from streamcomp.errors import ChunkFormatError, InputError
from streamcomp.format.chunk import decode_chunk, encode_chunk
from streamcomp.format.frame import FORMAT_VERSION
from streamcomp.methods import Method, method_class

CODEC_NAME = "streamcomp"


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the platform tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# Chunks coded at once in this process: zarr runs codecs on a pool of cores + 4 threads, and past
# one chunk per core they only contend for the GIL and torch's threads (EM 8x, a whole plain-zarr
# read on two cores: 10.8 Mvoxel/s with six at once, 14 with two).
_CORES = threading.BoundedSemaphore(usable_cores())
_KEYS = ("format_version", "method", "params", "shared", "shared_sha256", "bytes_per_voxel", "max_mse")
_OPTIONAL = {"max_error": None}  # added in format 2; format 1 configurations lack it


def make_config(
    method: Method,
    bytes_per_voxel: float | None = None,
    max_mse: float | None = None,
    with_shared: bool = True,
    max_error: float | None = None,
    bounded_model: bytes = b"",
) -> dict[str, Any]:
    """Codec configuration for an array encoded by ``method``; shared state is packed and hashed.

    ``with_shared=False`` leaves the shared state out (sizing metadata before the fit).
    ``max_error`` marks an error-bounded array (0: lossless); its chunks never use the method's
    shared state: what is stored in its place is ``bounded_model``, the context model its levels
    are coded under (empty: none).
    """
    shared = method.shared_state() if with_shared and max_error is None else b""
    blob = bounded_model if max_error is not None else shared
    packed = base64.b64encode(zlib.compress(blob, 9)).decode("ascii") if blob else ""
    return {
        "format_version": FORMAT_VERSION,
        "method": method.name,
        "params": method.stored_params(),
        "shared": packed,
        "shared_sha256": hashlib.sha256(blob).hexdigest() if blob else "",
        "bytes_per_voxel": bytes_per_voxel,
        "max_mse": max_mse,
        "max_error": max_error,
    }


def _check_config(config: dict[str, Any]) -> dict[str, Any]:
    missing = [k for k in _KEYS if k not in config]
    if missing:
        raise ChunkFormatError(f"streamcomp codec configuration lacks {missing}")
    if int(config["format_version"]) > FORMAT_VERSION:
        raise ChunkFormatError(
            f"array was written with streamcomp format {config['format_version']}, newer than "
            f"this build reads (up to {FORMAT_VERSION}): upgrade streamcomp"
        )
    return {**{k: config[k] for k in _KEYS}, **{k: config.get(k, v) for k, v in _OPTIONAL.items()}}


@lru_cache(maxsize=16)
def _method_from_json(config_json: str, encode_params_json: str) -> Method:
    config = json.loads(config_json)
    try:
        method = method_class(config["method"])(**{**config["params"], **json.loads(encode_params_json)})
    except InputError as exc:
        raise ChunkFormatError(f"array's codec configuration cannot be used by this build: {exc}") from exc
    blob = b""
    if config["shared"]:
        try:
            blob = zlib.decompress(base64.b64decode(config["shared"]))
        except (ValueError, zlib.error) as exc:
            raise ChunkFormatError(f"shared model state in the codec configuration is unreadable: {exc}") from exc
        if hashlib.sha256(blob).hexdigest() != config["shared_sha256"]:
            raise ChunkFormatError("shared model state does not match its SHA-256: the array metadata is corrupted")
    if config["max_error"] is not None:
        method.load_shared_state(b"")
        method.bounded_model = ContextModel.from_bytes(blob) if blob else None
        return method
    method.load_shared_state(blob)  # also when empty: "fitted, and nothing to store" is a state too
    return method


def method_from_config(config: dict[str, Any], encode_params: dict[str, Any] | None = None) -> Method:
    """The (cached) method instance, shared state loaded, that a configuration describes.

    ``encode_params`` adds what the configuration leaves out (the encode-only fields of :attr:`Method.Params`), so
    a writer encodes with the steps and rates its run asked for; decoders need none.
    """
    extra = json.dumps(encode_params or {}, sort_keys=True)
    return _method_from_json(json.dumps(_check_config(config), sort_keys=True), extra)


def _encode_with_config(config: dict[str, Any], arr: np.ndarray) -> bytes:
    method = method_from_config(config)
    if config["max_error"] is not None:
        return encode_chunk(method, arr, max_error=config["max_error"])
    if config["max_mse"] is not None:
        return encode_chunk(method, arr, max_mse=config["max_mse"])
    bpv = config["bytes_per_voxel"]
    if bpv is None:
        raise InputError("the codec configuration has no target (bytes_per_voxel, max_mse or max_error)")
    return encode_chunk(method, arr, budget_bytes=int(bpv * arr.size))


class StreamcompCodec(ArrayBytesCodec):
    """zarr format 3 array-to-bytes codec."""

    is_fixed_size = False

    def __init__(self, **config: Any) -> None:
        object.__setattr__(self, "config", _check_config(config))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StreamcompCodec) and other.config == self.config

    def __hash__(self) -> int:
        return hash(json.dumps(self.config, sort_keys=True))

    def __repr__(self) -> str:
        return f"StreamcompCodec(method={self.config['method']!r}, format_version={self.config['format_version']})"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StreamcompCodec:
        if data.get("name") != CODEC_NAME:
            raise ChunkFormatError(f"expected codec {CODEC_NAME!r}, got {data.get('name')!r}")
        return cls(**data.get("configuration", {}))

    def to_dict(self) -> dict[str, Any]:
        return {"name": CODEC_NAME, "configuration": dict(self.config)}

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        with _CORES:
            arr = decode_chunk(method_from_config(self.config), chunk_bytes.to_bytes())
        if arr.shape != chunk_spec.shape:
            raise ChunkFormatError(f"chunk decodes to shape {arr.shape}, the array expects {chunk_spec.shape}")
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(arr.astype(chunk_spec.dtype.to_native_dtype()))

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        with _CORES:
            data = _encode_with_config(self.config, np.asarray(chunk_array.as_ndarray_like()))
        return chunk_spec.prototype.buffer.from_bytes(data)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

    def compute_encoded_size(self, _input_byte_length: int, _chunk_spec: ArraySpec) -> int:
        raise NotImplementedError("streamcomp chunks have data-dependent sizes")


class StreamcompNumcodec(Codec):
    """numcodecs codec (zarr format 2 compressor); decode needs no shape: the frame carries it."""

    codec_id = CODEC_NAME

    def __init__(self, **config: Any) -> None:
        self.config = _check_config(config)

    def encode(self, buf: Any) -> bytes:
        with _CORES:
            return _encode_with_config(self.config, ensure_ndarray(buf))

    def decode(self, buf: Any, out: Any = None) -> np.ndarray:
        with _CORES:
            arr = decode_chunk(method_from_config(self.config), bytes(ensure_ndarray(buf).view("B").reshape(-1)))
        return ndarray_copy(arr, out) if out is not None else arr

    def get_config(self) -> dict[str, Any]:
        return {"id": self.codec_id, **self.config}

    def __repr__(self) -> str:
        return f"StreamcompNumcodec(method={self.config['method']!r})"


def codec_config_of(array: Any) -> dict[str, Any]:
    """The streamcomp configuration of an opened zarr array (format 2 or 3)."""
    candidates = [*list(getattr(array, "compressors", ()) or ()), getattr(array, "serializer", None)]
    for codec in candidates:
        if isinstance(codec, StreamcompCodec | StreamcompNumcodec):
            return dict(codec.config)
    raise InputError(f"{array.store_path} is not a streamcomp array (its codecs: {candidates})")
