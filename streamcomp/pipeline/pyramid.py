"""The pyramid phase of an ``--ome-zarr`` run: levels 1, 2, ... of the OME-Zarr group, then its metadata.

Each level chunk is one task: a worker reads the source region the chunk covers, averages it
(:func:`streamcomp.format.ome.level_block`), codes it with level 0's codec configuration and target
or with plain zstd, and writes its key atomically, as the encode phase does. A present, valid
chunk is kept, so a rerun with ``--resume`` only does what is missing; the group's ``multiscales``
document is written last, once every level is complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from streamcomp.format.chunk import chunk_is_valid, encode_chunk
from streamcomp.format.codec import codec_config_of, method_from_config
from streamcomp.format.frame import header_size
from streamcomp.format.ome import (
    is_zstd_level,
    level_block,
    level_url,
    multiscales_attrs,
    plan_levels,
    prepare_level,
    write_group,
    zstd_chunk,
    zstd_chunk_is_valid,
)
from streamcomp.format.store import array_stored_bytes, chunk_key, read_chunk, store_for, stored_chunk_keys, write_chunk
from streamcomp.methods import Method
from streamcomp.pipeline.batching import batch_size, batches
from streamcomp.plan import chunk_grid

if TYPE_CHECKING:
    from streamcomp.pipeline.state import Run


@dataclass(frozen=True)
class LevelTask:
    """One level chunk: the level array, the level's factors from the source, where the chunk is."""

    index: int
    url: str
    factors: tuple[int, ...]
    coords: tuple[int, ...]
    slices: tuple[slice, ...]
    budget: int | None
    present: bool = False


def build_pyramid(state: Run, pool: Any) -> int:
    """Create (or, on a resume, reuse) the level arrays, fill them through the pool and write the
    group's NGFF metadata; returns the pyramid's bytes (levels 1.. and the group document)."""

    cfg, source = state.cfg, state.source
    so, resumed = cfg.storage_options, state.existing is not None
    config = state.config  # level 0's codec configuration, its target included
    levels = plan_levels(source.shape, state.chunks, source.voxel_size)
    bpv = config["bytes_per_voxel"] if cfg.pyramid_codec == "streamcomp" else None
    floor = method_from_config(config).min_payload_bytes(state.chunks) + header_size(len(source.shape), 3)
    arrays, tasks = [], []
    for level in levels[1:]:
        url = level_url(cfg.dst, level.path)
        array = prepare_level(url, so, level, state.chunks, source.dtype, cfg.pyramid_codec, config, resumed)
        present = stored_chunk_keys(array) if resumed else set()
        arrays.append(array)
        for item in chunk_grid(level.shape, tuple(array.chunks)):
            budget = None if bpv is None else max(int(bpv * item.voxels), floor)
            tasks.append(LevelTask(len(tasks), url, level.factors, item.coords, item.slices, budget,
                                   chunk_key(array, item.coords) in present))
    desc = f"pyramid {len(levels) - 1} levels ({cfg.pyramid_codec})"
    params = state.method.params.as_dict()
    with tqdm(total=len(tasks), desc=desc, unit="chunk", disable=not cfg.progress) as bar:
        for results in pool.map("pyramid", batches(tasks, batch_size(len(tasks), pool.size, 8)), params,
                                state.max_mse, cfg.max_error):
            bar.update(len(results))
    attrs = multiscales_attrs(levels, source.voxel_size, source.units, cfg.src, cfg.pyramid_codec)
    return write_group(cfg.dst, so, attrs) + sum(array_stored_bytes(a) for a in arrays)


def open_level(url: str, storage_options: dict | None, params: dict[str, Any]) -> tuple[Any, Method | None]:
    """A level array opened for chunk writes and the method that codes it (None: plain zstd)."""
    import zarr

    array = zarr.open_array(store_for(url, storage_options), mode="r+")
    if is_zstd_level(array):
        return array, None
    return array, method_from_config(codec_config_of(array), params)


def level_task(
    array: Any, method: Method | None, source: Any, task: LevelTask, max_mse: float | None, max_error: float | None
) -> tuple[str, int]:
    """Verify a stored copy of the level chunk, else compute it from the source, code and write it."""
    chunk_shape = tuple(array.chunks)
    valid = tuple(s.stop - s.start for s in task.slices)
    status = "written"
    if task.present:
        data = read_chunk(array, task.coords)
        ok = (zstd_chunk_is_valid(data, chunk_shape, source.dtype) if method is None
              else chunk_is_valid(data, method.method_id, chunk_shape, valid))
        if ok:
            return "skipped", len(data or b"")
        status = "repaired"
    block = level_block(source.read, source.shape, task.factors, task.slices)
    if method is None:
        data = zstd_chunk(block, chunk_shape)
    else:
        data = encode_chunk(method, block, chunk_shape, budget_bytes=task.budget, max_mse=max_mse, max_error=max_error)
    write_chunk(array, task.coords, data)
    return status, len(data)
