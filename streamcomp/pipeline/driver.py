"""The driver: a run as a short sequence of named phases over one :class:`RunConfig`.

::

    driver                                   ChunkWorker actors (one CPU, or one GPU, each)
    ------                                   -----------------------------------------------
    open: source metadata, method, output
    scan: batches of chunk slices     --->   read own blocks, (min, max, kind, weight, rate curve) per chunk
    plan: kinds, value range, budgets
    fit (methods with shared state)   --->   one actor reads the sample blocks, fit_shared(),
                                             returns the codec configuration (none under
                                             --lossless / --max-error: the exact coder fits nothing)
    create the output array (or, on resume, take its configuration: never refit)
    encode: batches of chunk tasks    --->   build the method once from the array's codec config,
    (or of shard tasks, --shards)            read own blocks, encode, write its key atomically
    (bounded in flight, progress)            (a shard: all its chunks, then the shard whole)
                                             (present keys: frame + CRC check, re-encode if bad)
    (--engine data: Ray Data's actor pool
     runs the same worker code)
    manifest: counts, rates, times
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from tqdm import tqdm

from streamcomp.errors import InputError
from streamcomp.format.bounded import BOUNDED_CHUNKS
from streamcomp.format.bounded_fit import BOUNDED_SAMPLE
from streamcomp.format.codec import make_config, method_from_config
from streamcomp.format.ome import axis_names
from streamcomp.format.shards import chunks_per_shard, index_size, parse_shards
from streamcomp.format.store import (
    array_stored_bytes,
    create_array,
    metadata_bytes,
    store_for,
    stored_chunk_keys,
)
from streamcomp.methods import build_method
from streamcomp.pipeline import dataset
from streamcomp.pipeline import manifest as mf
from streamcomp.pipeline.batching import batch_size, batches
from streamcomp.pipeline.config import RunConfig
from streamcomp.pipeline.executors import LocalPool, RayPool, start_ray
from streamcomp.pipeline.pyramid import build_pyramid
from streamcomp.pipeline.state import Run
from streamcomp.pipeline.tasks import EncodeTasks, stored_shards
from streamcomp.plan import Plan, assign_budgets, parse_chunks, sample_items
from streamcomp.source import Source, open_source, path_exists

log = logging.getLogger(__name__)

TINY_BYTES = 64 * 2**20  # in-process below this size when no Ray is running or asked for


def run(cfg: RunConfig) -> tuple[dict[str, Any], mf.RunStats]:
    """Run the whole pipeline; returns (summary for :class:`~streamcomp.api.CompressResult`, statistics)."""
    t0 = time.perf_counter()
    state = open_run(cfg)
    executor = choose_executor(cfg, state.source)
    started_ray = start_ray(cfg.ray_address, cfg.workers) if executor == "ray" else False
    pool: LocalPool | RayPool | None = None
    try:
        pool = (
            RayPool(cfg.src, cfg.storage_options, cfg.workers, cfg.gpu)
            if executor == "ray"
            else LocalPool(cfg.src, cfg.storage_options, cfg.workers or (None if state.method.thread_safe else 1))
        )
        resolve_shards(state, pool.size)
        times = {"scan": timed(scan, state, pool)}
        check_feasible(state)
        times["fit"] = timed(fit, state, pool)
        assign_final_budgets(state)
        todo = prepare_output(state)
        stats = mf.RunStats(
            executor=pool.kind, engine=cfg.engine, workers=pool.size, gpu=pool.gpu, ray_address=pool.address,
            resumed=state.existing is not None, chunks_total=state.plan.size,
            chunks_fill=state.plan.count("fill"), chunks_todo=todo,
            unit="shard" if state.shards else "chunk",
        )
        doc = manifest_doc(state, stats)
        if cfg.manifest:
            mf.write_manifest(cfg.dst, {**doc, "run": asdict(stats)}, cfg.storage_options)
        times["encode"] = timed(encode, state, pool, stats)
        pyramid_bytes = None
        if cfg.ome_zarr:
            t_pyramid = time.perf_counter()
            pyramid_bytes = build_pyramid(state, pool)
            times["pyramid"] = time.perf_counter() - t_pyramid
        times["total"] = time.perf_counter() - t0
        return finish(state, stats, doc, times, pool.resubmitted, pyramid_bytes)
    finally:
        if pool is not None:
            pool.close()
        if started_ray:
            import ray

            ray.shutdown()


def timed(phase: Any, *args: Any) -> float:
    t = time.perf_counter()
    phase(*args)
    return time.perf_counter() - t


def open_run(cfg: RunConfig) -> Run:
    """Open the source, build the method and decide between a fresh output and a resume."""
    source = open_source(cfg.src, cfg.storage_options)
    bounded = cfg.max_error is not None  # the exact coder codes the chunks: any number of axes
    method = build_method(cfg.method, cfg.method_params, None if bounded else len(source.shape))
    defaults = BOUNDED_CHUNKS if bounded else method.default_chunks
    exists = path_exists(cfg.dst, cfg.storage_options)
    if exists and not (cfg.overwrite or cfg.resume):
        raise InputError(
            f"output {cfg.dst} already exists; pass --overwrite to replace it or --resume to complete it"
        )
    if not (exists and cfg.resume and not cfg.overwrite):
        return Run(cfg, source, method, parse_chunks(cfg.chunks, source.shape, defaults), None)
    existing = mf.open_for_resume(cfg.array_url, cfg.storage_options, source)
    stored = tuple(existing.array.chunks)
    chunks = stored if cfg.chunks is None else parse_chunks(cfg.chunks, source.shape, defaults)
    mf.check_same_layout(existing, cfg.dst, chunks, cfg.zarr_format)
    mf.check_same_method(existing, cfg.dst, method)
    return Run(cfg, source, method, chunks, existing)


def resolve_shards(state: Run, workers: int) -> None:
    """The shard shape: the resumed array's, else ``--shards`` (``auto`` sized for this pool)."""
    cfg, source = state.cfg, state.source
    if state.existing is not None:
        stored = state.existing.array.shards
        state.shards = None if stored is None else tuple(stored)
        asked = cfg.shards if cfg.shards in (None, "auto") else parse_shards(
            cfg.shards, source.shape, state.chunks, source.dtype.itemsize
        )
        if asked != "auto" and asked != state.shards:
            raise InputError(
                f"cannot resume {cfg.dst}: it has shards {state.shards}, this run asks for {asked}"
            )
        return
    state.shards = parse_shards(cfg.shards, source.shape, state.chunks, source.dtype.itemsize, workers)


def choose_executor(cfg: RunConfig, source: Source) -> str:
    if cfg.executor != "auto":
        return cfg.executor
    if cfg.engine == "data":  # Ray Data runs on Ray, whatever the size
        return "ray"
    import ray

    ray_wanted = ray.is_initialized() or cfg.ray_address or os.environ.get("RAY_ADDRESS") or cfg.workers
    return "ray" if ray_wanted or source.nbytes > TINY_BYTES else "local"


def scan(state: Run, pool: LocalPool | RayPool) -> None:
    """Every chunk's kind, value range, budget weight and (for a ratio target) rate curve, computed
    by the workers."""
    source, cfg = state.source, state.cfg
    plan = Plan(source.shape, state.chunks, source.dtype)
    work = ((i, plan.slices(i)) for i in range(plan.size))
    with tqdm(total=plan.size, desc="scan", unit="chunk", disable=not cfg.progress) as bar:
        params = state.method.params.as_dict()
        for results in pool.map("stats", batches(work, batch_size(plan.size, pool.size, 64)), cfg.method, params,
                                cfg.ratio is not None):
            for i, st in results:
                plan.record(i, st)
            bar.update(len(results))
    state.plan = plan.finish()


def check_feasible(state: Run) -> None:
    """An impossible ratio fails before the fit: the shared state's size is bounded below."""
    cfg, method, source = state.cfg, state.method, state.source
    if cfg.ratio is None or state.existing is not None:
        return
    config = make_config(method, with_shared=False)
    shared = math.ceil(method.shared_state_size_estimate() * 4 / 3)  # base64 in the metadata
    meta = metadata_bytes(source.shape, state.chunks, source.dtype, config, cfg.zarr_format, shards=state.shards,
                          dimension_names=dimension_names(state))
    meta += shared + shard_index_bytes(state)
    assign_budgets(state.plan, cfg.ratio, meta, method.min_payload_bytes(state.chunks))


def fit(state: Run, pool: LocalPool | RayPool) -> None:
    """The codec configuration: the resumed array's own, or shared state fitted on a sample by one
    worker (its GPU when it has one), or none for methods without shared state."""
    method, cfg = state.method, state.cfg
    if state.existing is not None:
        state.config = dict(state.existing.config)
        mf.check_same_target(cfg.dst, "quality", state.config["max_mse"], state.max_mse)
        mf.check_same_target(cfg.dst, "error bound", state.config.get("max_error"), cfg.max_error)
        return
    if cfg.max_error is not None:
        log.info("%s: every chunk coded by the exact wavelet coder in the data's units (no %s fit)",
                 cfg.coder, cfg.method)
        # Lossless levels code ~1 % shorter under a fitted model (README): not worth its fit and slower decode.
        sample = [it.slices for it in sample_items(state.plan, BOUNDED_SAMPLE)] if cfg.max_error > 0 else []
        blob = b""
        if sample:
            with tqdm(total=1, desc="fit context model", unit="fit", disable=not cfg.progress) as bar:
                blob, note = pool.call("fit_bounded", sample, cfg.max_error, state.plan.data_voxels())
                bar.update(1)
            log.info("%s: %s", cfg.coder, note)
        state.config = make_config(method, max_error=cfg.max_error, bounded_model=blob)
        return
    if not method.needs_fit():
        if method.fit_note():
            log.info("%s: %s", cfg.method, method.fit_note())
        state.config = make_config(method, max_mse=state.max_mse)
        return
    sample = sample_items(state.plan, method.fit_sample_chunks(state.chunks))
    data_chunks = state.plan.count("data")
    args = (cfg.method, method.params.as_dict(), [it.slices for it in sample], state.max_mse,
            [it.budget for it in sample], data_chunks)
    with tqdm(total=1, desc=f"fit {cfg.method}", unit="fit", disable=not cfg.progress) as bar:
        result = pool.call("fit", *args)
        bar.update(1)
    for note in result.notes:
        log.info("%s: %s", cfg.method, note)
    state.config = result.config


def assign_final_budgets(state: Run) -> None:
    """Budgets with the real metadata size: the same arithmetic on a resume as on the first run,
    so a resume plans exactly the budgets the first run stored."""
    cfg, source = state.cfg, state.source
    if cfg.ratio is None:
        return
    fresh = {**state.config, "bytes_per_voxel": None}
    meta = metadata_bytes(source.shape, state.chunks, source.dtype, fresh, cfg.zarr_format, shards=state.shards,
                          dimension_names=dimension_names(state))
    meta += shard_index_bytes(state)
    assign_budgets(state.plan, cfg.ratio, meta, method_from_config(fresh).min_payload_bytes(state.chunks))
    budgets = state.plan.budgets
    bpv = int(budgets[budgets > 0].sum()) / (state.plan.data_voxels() or 1)
    if state.existing is not None:
        mf.check_same_target(cfg.dst, "ratio", state.config["bytes_per_voxel"], bpv)
    state.config["bytes_per_voxel"] = bpv


def dimension_names(state: Run) -> tuple[str, ...] | None:
    """Axis names on the array: NGFF 0.5 requires them of an OME-Zarr level (and counts their bytes)."""
    return axis_names(len(state.source.shape)) if state.cfg.ome_zarr else None


def shard_index_bytes(state: Run) -> int:
    """Bytes the shards' indexes add: one index per shard that holds a stored chunk."""
    if state.shards is None:
        return 0
    return int(stored_shards(state.plan, state.shards).sum()) * index_size(chunks_per_shard(state.shards, state.chunks))


def prepare_output(state: Run) -> int:
    """Create the output array (or take the resumed one); returns how many chunks (or shards) are
    to encode (or check), which :class:`~streamcomp.pipeline.tasks.EncodeTasks` then makes lazily."""
    cfg, source, plan = state.cfg, state.source, state.plan
    if state.existing is not None:
        state.array = state.existing.array
        mf.remove_partial_writes(cfg.array_url)
        state.present = stored_chunk_keys(state.array)
    else:
        store = store_for(cfg.array_url, cfg.storage_options)
        state.array = create_array(
            store, source.shape, state.chunks, source.dtype, state.config, cfg.zarr_format,
            overwrite=cfg.overwrite, shards=state.shards, dimension_names=dimension_names(state),
        )
        state.present = set()
    if state.shards is not None:
        return int(stored_shards(state.plan, state.shards).sum())
    return plan.size - plan.count("fill")


def manifest_doc(state: Run, stats: mf.RunStats) -> dict[str, Any]:
    cfg, source, plan = state.cfg, state.source, state.plan
    return {
        "streamcomp_manifest": 1,
        "status": "running",
        "source": cfg.src,
        "output": cfg.dst,
        "method": cfg.method,
        "params": state.method.params.as_dict(),
        "target": cfg.target,
        "shape": list(source.shape),
        "dtype": source.dtype.name,
        "chunks": list(state.chunks),
        "shards": None if state.shards is None else list(state.shards),
        "zarr_format": cfg.zarr_format,
        "plan": {
            "chunks": plan.size,
            "data": plan.count("data"),
            "constant": plan.count("constant"),
            "fill": stats.chunks_fill,
            "vmin": plan.vmin,
            "vmax": plan.vmax,
        },
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def encode(state: Run, pool: LocalPool | RayPool, stats: mf.RunStats) -> None:
    """Bounded batches through the pool (or Ray Data, ``--engine data``), one progress bar with
    Mvoxel/s and ETA."""
    cfg, t, voxels, pids, n = state.cfg, time.perf_counter(), 0, set(), stats.chunks_todo
    bar = tqdm(total=n, desc=f"encode {cfg.coder}", unit=stats.unit, disable=not cfg.progress, smoothing=0.1)
    params = state.method.params.as_dict()
    tasks = EncodeTasks(state.plan, state.shards, state.present)
    cap = 1 if state.shards is not None else 8  # a shard is already many chunks of work
    args = (cfg.array_url, params, state.max_mse, cfg.max_error)
    if cfg.engine == "data":
        done = dataset.encode(tasks, pool, *args, batch=batch_size(tasks.rows, pool.size, cap), progress=cfg.progress)
    else:
        done = pool.map("encode", batches(tasks.in_order(state.array), batch_size(n, pool.size, cap)), *args)
    for results in done:
        for index, status, _nbytes, pid in results:
            pids.add(pid)
            if status == "skipped":
                stats.chunks_skipped += 1
            else:
                stats.chunks_encoded += 1
                stats.chunks_repaired += status == "repaired"
                voxels += tasks.voxels(index)
        bar.update(len(results))
        bar.set_postfix_str(f"{voxels / max(time.perf_counter() - t, 1e-9) / 1e6:.2f} Mvox/s", refresh=False)
    bar.close()
    stats.worker_pids = sorted(pids)
    stats.voxels_per_second = voxels / max(time.perf_counter() - t, 1e-9)


def finish(
    state: Run, stats: mf.RunStats, doc: dict[str, Any], times: dict[str, float], resubmitted: int,
    pyramid_bytes: int | None = None,
) -> tuple[dict[str, Any], mf.RunStats]:
    """Count every stored byte, complete the manifest and summarize (``pyramid_bytes``: an OME-Zarr
    group's levels 1.. and group document, kept out of level 0's ratio)."""
    cfg, plan = state.cfg, state.plan
    stats.resubmitted = resubmitted
    stats.seconds = {k: round(v, 3) for k, v in times.items()}
    stored = array_stored_bytes(state.array)
    if cfg.manifest:
        doc.update(
            status="complete",
            finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
            stored_bytes=stored,
            raw_bytes=plan.raw_bytes,
            ratio=plan.raw_bytes / max(stored, 1),
            pyramid_bytes=pyramid_bytes,
            run=asdict(stats),
        )
        mf.write_manifest(cfg.dst, doc, cfg.storage_options)
    summary = {
        "shape": tuple(state.source.shape),
        "dtype": state.source.dtype.name,
        "chunks": state.chunks,
        "raw_bytes": plan.raw_bytes,
        "stored_bytes": stored,
        "pyramid_bytes": pyramid_bytes,
        "target": cfg.target,
        "manifest": mf.manifest_url(cfg.dst) if cfg.manifest else None,
    }
    return summary, stats
