"""Shards: many compressed chunks in one stored object, in zarr v3's ``sharding_indexed`` layout.

One object per chunk makes a petabyte volume billions of objects, which no object store or lab
accepts. A shard holds a block of chunks back to back, then an index of (offset, length) pairs,
uint64 little-endian, one per chunk (2**64 - 1 twice for an absent chunk), then the index's
CRC32C: zarr's default index codecs with the index at the end, so plain zarr reads a shard's index
and then one chunk. The pipeline assembles each shard whole in one task and writes it in one
atomic store write: never two writers on one shard, never a half-written shard.
"""

from __future__ import annotations

import itertools
import math

import google_crc32c
import numpy as np

from streamcomp.errors import InputError

AUTO_SHARD_BYTES = 2**30  # raw bytes a shard covers at most under --shards auto
EMPTY = np.uint64(2**64 - 1)
CRC_BYTES = 4


def parse_shards(
    spec: str | tuple[int, ...] | None,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    itemsize: int,
    workers: int = 1,
) -> tuple[int, ...] | None:
    """The shard shape from ``"64,1024,1024"``, a tuple or ``"auto"``; None for no sharding.

    A shard shape is a whole number of chunks per axis (zarr's rule); ``auto`` grows the chunk
    shape axis by axis, the last (in-plane) axes first, while a shard stays under
    :data:`AUTO_SHARD_BYTES` of raw data and there remain at least ``workers`` shards to share out.
    """
    if spec is None:
        return None
    if isinstance(spec, str) and spec.strip().lower() == "auto":
        return auto_shards(shape, chunks, itemsize, workers)
    if isinstance(spec, str):
        try:
            shards = tuple(int(v) for v in spec.split(","))
        except ValueError as exc:
            raise InputError(
                f"shards must be 'auto' or comma-separated integers like 64,1024,1024, got {spec!r}"
            ) from exc
    else:
        shards = tuple(int(v) for v in spec)
    if len(shards) != len(shape):
        raise InputError(f"shards {shards} must have one entry per axis of the volume {shape}")
    bad = [(s, c) for s, c in zip(shards, chunks, strict=True) if s < c or s % c]
    if bad:
        raise InputError(
            f"shard shape {shards} must be a whole number of chunks {chunks} on every axis "
            f"(e.g. --shards {','.join(str(c * 4) for c in chunks)}, or --shards auto)"
        )
    return shards


def auto_shards(shape: tuple[int, ...], chunks: tuple[int, ...], itemsize: int, workers: int = 1) -> tuple[int, ...]:
    """About :data:`AUTO_SHARD_BYTES` of raw data per shard, and at least ``workers`` shards when the
    volume has that many chunks."""
    grid = [math.ceil(n / c) for n, c in zip(shape, chunks, strict=True)]
    per = [1] * len(shape)

    def count(p: list[int]) -> int:
        return math.prod(math.ceil(g / k) for g, k in zip(grid, p, strict=True))

    grown = True
    while grown:
        grown = False
        for axis in reversed(range(len(shape))):
            if per[axis] >= grid[axis]:
                continue
            trial = per.copy()
            trial[axis] = min(per[axis] * 2, grid[axis])
            raw = math.prod(c * k for c, k in zip(chunks, trial, strict=True)) * itemsize
            if raw <= AUTO_SHARD_BYTES and count(trial) >= min(workers, count([1] * len(shape))):
                per, grown = trial, True
    return tuple(c * k for c, k in zip(chunks, per, strict=True))


def chunks_per_shard(shards: tuple[int, ...], chunks: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(s // c for s, c in zip(shards, chunks, strict=True))


def index_size(per_shard: tuple[int, ...]) -> int:
    """Bytes of one shard's index: what every stored shard adds to the array's size."""
    return 16 * math.prod(per_shard) + CRC_BYTES


def pack_shard(per_shard: tuple[int, ...], parts: dict[tuple[int, ...], bytes]) -> bytes:
    """One shard's bytes from its chunks' bytes, keyed by chunk coordinates within the shard."""
    index = np.full((*per_shard, 2), EMPTY, dtype="<u8")
    offset, body = 0, []
    for local in itertools.product(*(range(k) for k in per_shard)):
        data = parts.get(local)
        if data:
            index[local] = (offset, len(data))
            body.append(data)
            offset += len(data)
    raw_index = index.tobytes()
    return b"".join([*body, raw_index, google_crc32c.value(raw_index).to_bytes(CRC_BYTES, "little")])


def unpack_shard(data: bytes, per_shard: tuple[int, ...]) -> dict[tuple[int, ...], bytes] | None:
    """The chunks of a stored shard by local coordinates, or None when the shard is damaged
    (short, index checksum wrong, or an entry pointing outside its data)."""
    size = index_size(per_shard)
    if len(data) < size:
        return None
    raw_index, crc = data[-size:-CRC_BYTES], data[-CRC_BYTES:]
    if google_crc32c.value(raw_index).to_bytes(CRC_BYTES, "little") != crc:
        return None
    index = np.frombuffer(raw_index, dtype="<u8").reshape(*per_shard, 2)
    body = len(data) - size
    parts = {}
    for local in itertools.product(*(range(k) for k in per_shard)):
        offset, length = (int(v) for v in index[local])
        if offset == int(EMPTY) and length == int(EMPTY):
            continue
        if offset + length > body:
            return None
        parts[local] = data[offset : offset + length]
    return parts
