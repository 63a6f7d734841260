"""The run's manifest beside the output, and the resume policy: what an existing output must match.

The manifest (``<output>.manifest.json``) lies beside the array, never inside it, since every byte
inside counts in the ratio. A resume keeps the array's own codec configuration (the shared state is
never refit, since written chunks depend on it), so the run must ask for the same method, decode
parameters, chunks, format and target; anything else is refused with what to do instead.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamcomp.errors import InputError
from streamcomp.format.codec import codec_config_of
from streamcomp.format.store import open_output_array
from streamcomp.methods import Method
from streamcomp.source import Source, is_url, local_path, read_json, write_json

MANIFEST_SUFFIX = ".manifest.json"


@dataclass
class RunStats:
    """What a run did, for the manifest and :class:`streamcomp.api.CompressResult`."""

    executor: str
    workers: int
    gpu: bool
    ray_address: str | None
    resumed: bool
    chunks_total: int
    chunks_fill: int
    chunks_todo: int
    engine: str = "pool"  # what fed the encode phase to Ray: "pool" or "data" (Ray Data)
    unit: str = "chunk"  # what chunks_todo / _encoded / _skipped / _repaired count: "chunk" or "shard"
    chunks_encoded: int = 0
    chunks_skipped: int = 0
    chunks_repaired: int = 0
    resubmitted: int = 0
    worker_pids: list[int] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    voxels_per_second: float = 0.0


def manifest_url(dst: str) -> str:
    return dst.rstrip("/") + MANIFEST_SUFFIX


def write_manifest(dst: str, doc: dict[str, Any], storage_options: dict | None) -> None:
    write_json(manifest_url(dst), doc, storage_options)


def read_manifest(dst: str, storage_options: dict | None = None) -> dict[str, Any] | None:
    """The manifest of the output at ``dst``, or None when there is none."""
    return read_json(manifest_url(dst), storage_options)


@dataclass
class Existing:
    """An output being resumed: the array and the codec configuration it was written with."""

    array: Any
    config: dict[str, Any]


def open_for_resume(dst: str, storage_options: dict | None, source: Source) -> Existing:
    """The existing output, if it is a streamcomp array of the source's shape and dtype."""
    try:
        array = open_output_array(dst, storage_options)
        config = codec_config_of(array)
    except Exception as exc:
        raise InputError(f"cannot resume {dst}: it is not a streamcomp array ({exc})") from exc
    if tuple(array.shape) != tuple(source.shape) or np.dtype(array.dtype) != source.dtype:
        raise InputError(
            f"cannot resume {dst}: it holds {array.shape} {array.dtype}, the source is {source.shape} {source.dtype}"
        )
    return Existing(array, config)


def check_same_layout(existing: Existing, dst: str, chunks: tuple[int, ...], zarr_format: int) -> None:
    array = existing.array
    if chunks != tuple(array.chunks) or array.metadata.zarr_format != zarr_format:
        raise InputError(
            f"cannot resume {dst}: it has chunks {array.chunks} (zarr format {array.metadata.zarr_format}), "
            f"this run asks for {chunks} (format {zarr_format})"
        )


def check_same_method(existing: Existing, dst: str, method: Method) -> None:
    old = existing.config
    requested = json.loads(json.dumps(method.stored_params(), sort_keys=True))
    if old["method"] != method.name or json.loads(json.dumps(old["params"])) != requested:
        raise InputError(
            f"cannot resume {dst}: it was written by {old['method']} {old['params']}, "
            f"this run asks for {method.name} {requested}; use --overwrite to start again"
        )


def check_same_target(dst: str, what: str, stored: float | None, requested: float | None) -> None:
    """A resumed array's rate (bytes per voxel) or error target must be the one this run plans."""
    same = stored is requested if stored is None or requested is None else math.isclose(
        stored, requested, rel_tol=1e-9, abs_tol=1e-12
    )
    if not same:
        raise InputError(f"cannot resume {dst}: it was written for another {what} target")


def remove_partial_writes(dst: str) -> int:
    """Temporary files a killed writer left in a local output (never valid chunks)."""
    if is_url(dst):
        return 0
    removed = 0
    for root, _, files in os.walk(local_path(dst)):
        for name in files:
            if name.endswith(".partial"):
                os.unlink(os.path.join(root, name))
                removed += 1
    return removed
