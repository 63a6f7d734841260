"""The streaming pipeline on Ray: plan -> fit shared state -> encode chunks -> write them -> manifest.

::

    driver                                   ChunkWorker actors (one CPU, or one GPU, each)
    ------                                   -----------------------------------------------
    open source (metadata only)
    scan: batches of chunk slices     --->   read own blocks, (min, max, kind) per chunk
    plan: kinds, value range, budgets
    fit (methods with shared state)   --->   one actor reads the sample blocks, fit_shared(),
                                             returns the codec configuration
    create the output array (or, on resume, take its configuration: never refit)
    list present chunk keys (skip list)
    encode: batches of chunk tasks    --->   build the method once from the array's codec config,
    (bounded in flight, progress)            read own block, encode, write its key atomically
                                             (present keys: frame + CRC check, re-encode if bad)
    manifest: counts, rates, times

Only slices, small tuples and configurations cross the object store: workers read their own blocks
from the source and write their own chunk keys, so memory stays flat whatever the volume size;
at most ``inflight`` task batches per worker are outstanding (``ray.wait`` with a cap). A worker
that dies is restarted by Ray (``max_restarts``) and its calls retried (``max_task_retries``); a
batch that still fails is resubmitted on a fresh actor. Chunk writes are idempotent and atomic,
so a rerun after a driver crash only encodes what is missing or invalid.

Tiny inputs with no Ray running and no address given run the very same :class:`ChunkWorker`
in-process (``executor="local"``): starting Ray costs ~10 s, more than such a job takes.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from tqdm import tqdm

from streamcomp.errors import ChunkFormatError, InputError, StreamcompError
from streamcomp.io import is_url, local_path, open_source, s3_options
from streamcomp.plan import ChunkPlan, Plan, chunk_grid, chunk_stats, plan_from_stats

TINY_BYTES = 64 * 2**20  # in-process below this size when no Ray is running or asked for
SAMPLE_BLOCKS = 64
ENV_PREFIXES = ("AWS_", "GOOGLE_APPLICATION_CREDENTIALS", "GCS_", "STREAMCOMP_")
MANIFEST_SUFFIX = ".manifest.json"


class PipelineError(StreamcompError, RuntimeError):
    """The pipeline could not finish (workers kept dying, the cluster has no room, ...)."""


# --- the per-chunk work, shared by Ray actors and the in-process executor ----------------------


def sample_items(plan: Plan, count: int = SAMPLE_BLOCKS, seed: int = 0) -> list[ChunkPlan]:
    """Data chunks drawn evenly at random, for methods that fit shared state."""
    data = [it for it in plan.items if it.kind == "data"]
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(data), size=min(count, len(data)), replace=False) if data else []
    return [data[i] for i in sorted(picks)]


def chunk_is_valid(data: bytes | None, method_id: int, chunk_shape: tuple[int, ...], valid: tuple[int, ...]) -> bool:
    """Whether stored chunk bytes are a whole frame (magic, version, CRC) of this chunk."""
    from streamcomp.frame import unpack

    if data is None:
        return False
    try:
        frame = unpack(data)
    except ChunkFormatError:
        return False
    return frame.method_id == method_id and tuple(frame.shape) == chunk_shape and tuple(frame.valid) == valid


@dataclass(frozen=True)
class Task:
    """One chunk to encode: where it is, what it is, its budget, whether a stored copy may exist."""

    index: int
    coords: tuple[int, ...]
    slices: tuple[slice, ...]
    kind: str
    budget: int | None
    present: bool = False


class ChunkWorker:
    """Reads its own blocks from the source, encodes them, writes their keys.

    Constructed from picklable arguments only, so Ray can (re)start it anywhere; the output array
    and the method (built once from the array's codec configuration) are opened on first use.
    """

    def __init__(self, src: str, storage_options: dict | None = None) -> None:
        self.src = src
        self.storage_options = storage_options
        self.source = open_source(src, storage_options)
        self._outputs: dict[str, Any] = {}

    def pid(self) -> int:
        return os.getpid()

    def stats(
        self, batch: list[tuple[int, tuple[slice, ...]]], method: str, params: dict[str, Any]
    ) -> list[tuple[int, tuple]]:
        """Per chunk: (min, max, kind, budget weight); the weight from the method's ``chunk_weight``."""
        from streamcomp.methods import method_class

        weigh = getattr(method_class(method)(**params), "chunk_weight", None)
        return [(i, chunk_stats(self.source.read(sl), weigh)) for i, sl in batch]

    def fit(
        self,
        method: str,
        params: dict[str, Any],
        sample: list[tuple[slice, ...]],
        max_mse: float | None,
        budgets: list[int | None],
        data_chunks: int,
    ) -> dict[str, Any]:
        """Fit the method's shared state on the sample blocks (whose planned budgets, or the error
        target, come along so the method can judge what its shared state buys); return the codec
        configuration."""
        from streamcomp.chunk import method_target, normalize
        from streamcomp.codec import make_config
        from streamcomp.methods import FitTargets, method_class

        codec_method = method_class(method)(**params)
        blocks = [normalize(self.source.read(sl)) for sl in sample]
        targets = None
        if max_mse is not None or all(b is not None for b in budgets):
            dtype, per_sample = self.source.dtype, zip(sample, blocks, budgets, strict=True)
            targets = FitTargets(
                tuple(
                    method_target(dtype, len(sl), lo, hi, b, max_mse, codec_method)
                    for sl, (_, lo, hi), b in per_sample
                ),
                data_chunks,
            )
        codec_method.fit_shared([norm for norm, _, _ in blocks], targets)
        return make_config(codec_method, max_mse=max_mse)

    def _output(self, dst: str, params: dict[str, Any]) -> tuple[Any, Any]:
        if dst not in self._outputs:
            from streamcomp.codec import codec_config_of, method_from_config
            from streamcomp.store import open_output_array

            array = open_output_array(dst, self.storage_options)
            self._outputs[dst] = (array, method_from_config(codec_config_of(array), params))
        return self._outputs[dst]

    def encode(
        self, batch: list[Task], dst: str, params: dict[str, Any], max_mse: float | None
    ) -> list[tuple[int, str, int, int]]:
        """Encode and write each task's chunk: (index, "written" | "skipped" | "repaired", bytes, pid).

        ``params`` are the run's full method parameters: the array's configuration keeps only
        those a decoder needs."""
        array, method = self._output(dst, params)
        return [(t.index, *encode_task(method, self.source, array, t, max_mse), os.getpid()) for t in batch]


def encode_task(method: Any, source: Any, array: Any, task: Task, max_mse: float | None) -> tuple[str, int]:
    """The per-chunk function: verify a stored copy, else read, encode and write the chunk."""
    from streamcomp.chunk import encode_chunk
    from streamcomp.compress import constant_chunk
    from streamcomp.store import read_chunk, write_chunk

    chunk_shape = tuple(array.chunks)
    status = "written"
    if task.present:
        data = read_chunk(array, task.coords)
        valid = tuple(s.stop - s.start for s in task.slices)
        if chunk_is_valid(data, method.method_id, chunk_shape, valid):
            return "skipped", len(data or b"")
        status = "repaired"
    block = source.read(task.slices)
    if task.kind == "constant":
        data = constant_chunk(method, block, chunk_shape)
    else:
        data = encode_chunk(method, block, chunk_shape, budget_bytes=task.budget, max_mse=max_mse)
    write_chunk(array, task.coords, data)
    return status, len(data)


# --- executors: Ray actors with bounded in-flight work, or the same worker in-process -----------


class LocalPool:
    """The in-process executor: one :class:`ChunkWorker`, called directly."""

    kind = "local"
    address = None
    gpu = False

    def __init__(self, src: str, storage_options: dict | None) -> None:
        self.worker = ChunkWorker(src, storage_options)
        self.size = 1
        self.resubmitted = 0

    def map(self, name: str, batches: Iterable[Any], *args: Any) -> Iterator[Any]:
        fn = getattr(self.worker, name)
        for batch in batches:
            yield fn(batch, *args)

    def call(self, name: str, *args: Any) -> Any:
        return getattr(self.worker, name)(*args)

    def close(self) -> None:
        pass


def _worker_env() -> dict[str, str]:
    """Credentials and endpoints the workers need, from the driver's environment."""
    return {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}


class RayPool:
    """A pool of :class:`ChunkWorker` actors fed through ``ray.wait`` with a cap on work in flight."""

    kind = "ray"

    def __init__(
        self,
        src: str,
        storage_options: dict | None,
        workers: int | None,
        gpu: bool | None,
        inflight: int = 2,
        max_resubmits: int = 3,
    ) -> None:
        import ray

        resources = ray.cluster_resources()
        self.gpu = bool(resources.get("GPU", 0) >= 1) if gpu is None else bool(gpu)
        capacity = int(resources.get("GPU", 0)) if self.gpu else int(resources.get("CPU", 1))
        self.size = max(1, workers or capacity)
        self.inflight = max(1, inflight)
        self.max_resubmits = max_resubmits
        self.resubmitted = 0
        self.address = ray.get_runtime_context().gcs_address
        env = _worker_env()
        self._options = {
            "num_cpus": 1,
            "num_gpus": 1 if self.gpu else 0,  # GPU actors make an autoscaler add GPU nodes
            "max_restarts": 4,
            "max_task_retries": 4,
            "runtime_env": {"env_vars": env} if env else None,
        }
        self._args = (src, storage_options)
        self._remote = ray.remote(ChunkWorker)
        self.actors = [self._new_actor() for _ in range(self.size)]

    def _new_actor(self) -> Any:
        return self._remote.options(**self._options).remote(*self._args)

    def _replace(self, slot: int) -> None:
        import ray

        ray.kill(self.actors[slot], no_restart=True)
        self.actors[slot] = self._new_actor()

    def map(self, name: str, batches: Iterable[Any], *args: Any) -> Iterator[Any]:
        """Results of ``worker.name(batch, *args)`` for every batch, as they finish."""
        import ray
        from ray.exceptions import ActorUnavailableError, RayActorError

        def submit(slot: int, batch: Any) -> Any:
            return getattr(self.actors[slot], name).remote(batch, *args)

        source = iter(batches)
        retry: deque[tuple[Any, int]] = deque()
        pending: dict[Any, tuple[int, Any, int]] = {}
        load = [0] * len(self.actors)
        exhausted = False
        while True:
            while len(pending) < self.inflight * len(self.actors):
                if retry:
                    batch, tries = retry.popleft()
                elif not exhausted:
                    try:
                        batch, tries = next(source), 0
                    except StopIteration:
                        exhausted = True
                        continue
                else:
                    break
                slot = min(range(len(load)), key=load.__getitem__)
                pending[submit(slot, batch)] = (slot, batch, tries)
                load[slot] += 1
            if not pending:
                return
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                slot, batch, tries = pending.pop(ref)
                load[slot] -= 1
                try:
                    result = ray.get(ref)
                except (RayActorError, ActorUnavailableError) as exc:
                    # Ray already restarted the actor and retried; give the batch a fresh actor.
                    if tries >= self.max_resubmits:
                        raise PipelineError(f"a worker kept dying on the same chunks: {exc}") from exc
                    self.resubmitted += 1
                    self._replace(slot)
                    retry.append((batch, tries + 1))
                    continue
                yield result

    def call(self, name: str, *args: Any) -> Any:
        import ray

        return ray.get(getattr(self.actors[0], name).remote(*args))

    def pids(self) -> list[int]:
        import ray

        return ray.get([a.pid.remote() for a in self.actors])

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor, no_restart=True)


def start_ray(address: str | None, workers: int | None) -> bool:
    """Connect to ``address`` (or ``RAY_ADDRESS``), else start an embedded local Ray on loopback.

    Returns whether this call initialized Ray here (and so should shut it down or disconnect).
    """
    import ray

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        try:
            ray.init(address=address, log_to_driver=True)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise InputError(f"cannot connect to the Ray cluster at {address}: {exc}") from exc
        return True
    ray.init(
        address="local",
        num_cpus=workers or os.cpu_count() or 1,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        object_store_memory=256 * 2**20,  # only slices and small results travel through it
        log_to_driver=True,
    )
    return True


# --- the driver ---------------------------------------------------------------------------------


@dataclass
class RunStats:
    executor: str
    workers: int
    gpu: bool
    ray_address: str | None
    resumed: bool
    chunks_total: int
    chunks_fill: int
    chunks_todo: int
    chunks_encoded: int = 0
    chunks_skipped: int = 0
    chunks_repaired: int = 0
    resubmitted: int = 0
    worker_pids: list[int] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    voxels_per_second: float = 0.0


def manifest_url(dst: str) -> str:
    return dst.rstrip("/") + MANIFEST_SUFFIX


def write_manifest(url: str, doc: dict[str, Any], storage_options: dict | None) -> None:
    """A small JSON summary beside the output (never inside it: every byte inside is counted)."""
    text = json.dumps(doc, indent=2, default=str)
    if is_url(url):
        import fsspec

        with fsspec.open(url, "w", **(s3_options(url, storage_options) or {})) as fh:
            fh.write(text)
        return
    path = local_path(url)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def read_manifest(dst: str, storage_options: dict | None = None) -> dict[str, Any] | None:
    url = manifest_url(dst)
    try:
        if is_url(url):
            import fsspec

            with fsspec.open(url, "r", **(s3_options(url, storage_options) or {})) as fh:
                return json.load(fh)
        with open(local_path(url)) as fh:
            return json.load(fh)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _batches(seq: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def _batch_size(n: int, workers: int, cap: int) -> int:
    return max(1, min(cap, n // (workers * 8)))


def _remove_partial_writes(dst: str) -> int:
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


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def run(
    src: str,
    dst: str,
    *,
    method: str,
    ratio: float | None,
    psnr: float | None,
    chunks: str | tuple[int, ...] | None,
    zarr_format: int,
    method_params: dict[str, Any] | None,
    overwrite: bool,
    resume: bool,
    progress: bool,
    storage_options: dict | None,
    workers: int | None = None,
    ray_address: str | None = None,
    executor: str = "auto",
    gpu: bool | None = None,
    manifest: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, Any], RunStats]:
    """Run the whole pipeline; returns (summary for :class:`CompressResult`, run statistics)."""
    from streamcomp.codec import codec_config_of, make_config, method_from_config
    from streamcomp.compress import make_method, output_exists, validate_target
    from streamcomp.methods import Method
    from streamcomp.plan import assign_budgets, parse_chunks
    from streamcomp.store import (
        array_stored_bytes,
        create_array,
        metadata_bytes,
        open_output_array,
        store_for,
        stored_chunk_keys,
    )

    t0 = time.perf_counter()
    validate_target(ratio, psnr)
    if zarr_format not in (2, 3):
        raise InputError(f"zarr format must be 2 or 3, not {zarr_format}")
    if executor not in ("auto", "ray", "local"):
        raise InputError(f"executor must be auto, ray or local, not {executor!r}")
    if os.path.abspath(local_path(src.partition("#")[0])) == os.path.abspath(local_path(dst)):
        raise InputError("the output must not be the source: streamcomp never overwrites its input")
    source = open_source(src, storage_options)
    codec_method = make_method(method, method_params, len(source.shape))
    exists = output_exists(dst, storage_options)
    if exists and not (overwrite or resume):
        raise InputError(f"output {dst} already exists; pass --overwrite to replace it or --resume to complete it")
    resuming = exists and resume and not overwrite
    existing = None
    if resuming:
        try:
            existing = open_output_array(dst, storage_options)
            old_config = codec_config_of(existing)
        except Exception as exc:
            raise InputError(f"cannot resume {dst}: it is not a streamcomp array ({exc})") from exc
        if tuple(existing.shape) != tuple(source.shape) or np.dtype(existing.dtype) != source.dtype:
            raise InputError(
                f"cannot resume {dst}: it holds {existing.shape} {existing.dtype}, the source is "
                f"{source.shape} {source.dtype}"
            )
        defaults = codec_method.default_chunks
        chunk_shape = tuple(existing.chunks) if chunks is None else parse_chunks(chunks, source.shape, defaults)
        if chunk_shape != tuple(existing.chunks) or existing.metadata.zarr_format != zarr_format:
            raise InputError(
                f"cannot resume {dst}: it has chunks {existing.chunks} (zarr format "
                f"{existing.metadata.zarr_format}), this run asks for {chunk_shape} (format {zarr_format})"
            )
        requested = json.loads(json.dumps(codec_method.stored_params(), sort_keys=True))
        if old_config["method"] != method or json.loads(json.dumps(old_config["params"])) != requested:
            raise InputError(
                f"cannot resume {dst}: it was written by {old_config['method']} {old_config['params']}, "
                f"this run asks for {method} {codec_method.params}; use --overwrite to start again"
            )
    else:
        chunk_shape = parse_chunks(chunks, source.shape, codec_method.default_chunks)

    if executor == "auto":
        import ray

        ray_wanted = ray.is_initialized() or ray_address or os.environ.get("RAY_ADDRESS") or workers
        executor = "ray" if ray_wanted or source.nbytes > TINY_BYTES else "local"
    started_ray = start_ray(ray_address, workers) if executor == "ray" else False
    pool: LocalPool | RayPool | None = None
    try:
        pool = RayPool(src, storage_options, workers, gpu) if executor == "ray" else LocalPool(src, storage_options)
        items = list(chunk_grid(source.shape, chunk_shape))
        times: dict[str, float] = {}

        # scan: every chunk's kind and the value range, computed by the workers
        t = time.perf_counter()
        stats: list[Any] = [None] * len(items)
        work = [(i, it.slices) for i, it in enumerate(items)]
        bar = tqdm(total=len(items), desc="scan", unit="chunk", disable=not progress)
        batches = _batches(work, _batch_size(len(work), pool.size, 64))
        for results in pool.map("stats", batches, method, codec_method.params):
            for i, st in results:
                stats[i] = st
            bar.update(len(results))
        bar.close()
        plan = plan_from_stats(source.shape, chunk_shape, source.dtype, items, stats)
        times["scan"] = time.perf_counter() - t

        # an impossible ratio fails here, before the fit: the shared state's size is bounded below
        if ratio is not None and not resuming:
            config = make_config(codec_method, with_shared=False)
            shared = math.ceil(codec_method.shared_state_size_estimate() * 4 / 3)  # base64 in the metadata
            meta = metadata_bytes(source.shape, chunk_shape, source.dtype, config, zarr_format) + shared
            assign_budgets(plan, ratio, meta, codec_method.min_payload_bytes(chunk_shape))

        # fit: shared state on a sample, in one worker (its GPU when it has one); never on resume
        t = time.perf_counter()
        max_mse = None if psnr is None else plan.peak**2 / 10 ** (psnr / 10)
        if resuming:
            config = dict(old_config)
            if not _same(config["max_mse"], max_mse):
                raise InputError(f"cannot resume {dst}: it was written for another quality target")
        elif type(codec_method).fit_shared is not Method.fit_shared:
            sample = sample_items(plan)
            data_chunks = sum(it.kind == "data" for it in plan.items)
            budgets = [it.budget for it in sample]
            slices = [it.slices for it in sample]
            config = pool.call("fit", method, codec_method.params, slices, max_mse, budgets, data_chunks)
        else:
            config = make_config(codec_method, max_mse=max_mse)
        times["fit"] = time.perf_counter() - t

        # budgets: the same arithmetic on a resume as on the first run, so budgets match exactly
        if ratio is not None:
            fresh = {**config, "bytes_per_voxel": None}
            meta = metadata_bytes(source.shape, chunk_shape, source.dtype, fresh, zarr_format)
            assign_budgets(plan, ratio, meta, method_from_config(fresh).min_payload_bytes(chunk_shape))
            data_voxels = sum(it.voxels for it in plan.items if it.kind == "data") or 1
            bpv = sum(it.budget or 0 for it in plan.items) / data_voxels
            if resuming and not _same(config["bytes_per_voxel"], bpv):
                raise InputError(f"cannot resume {dst}: it was written for another ratio target")
            config["bytes_per_voxel"] = bpv
        if resuming:
            array = existing
            _remove_partial_writes(dst)
            present = stored_chunk_keys(array)
        else:
            store = store_for(dst, storage_options)
            shape, dtype = source.shape, source.dtype
            array = create_array(store, shape, chunk_shape, dtype, config, zarr_format, overwrite=overwrite)
            present = set()

        from streamcomp.store import chunk_key

        tasks = [
            Task(i, it.coords, it.slices, it.kind, it.budget, chunk_key(array, it.coords) in present)
            for i, it in enumerate(plan.items)
            if it.kind != "fill"
        ]
        run_stats = RunStats(
            executor=pool.kind,
            workers=pool.size,
            gpu=pool.gpu,
            ray_address=pool.address,
            resumed=resuming,
            chunks_total=len(items),
            chunks_fill=len(items) - len(tasks),
            chunks_todo=len(tasks),
        )
        target = {"ratio": ratio} if ratio is not None else {"psnr": psnr}
        doc = {
            "streamcomp_manifest": 1,
            "status": "running",
            "source": src,
            "output": dst,
            "method": method,
            "params": codec_method.params,
            "target": target,
            "shape": list(source.shape),
            "dtype": source.dtype.name,
            "chunks": list(chunk_shape),
            "zarr_format": zarr_format,
            "plan": {
                "chunks": len(items),
                "data": sum(it.kind == "data" for it in items),
                "constant": sum(it.kind == "constant" for it in items),
                "fill": run_stats.chunks_fill,
                "vmin": plan.vmin,
                "vmax": plan.vmax,
            },
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if manifest:
            write_manifest(manifest_url(dst), {**doc, "run": asdict(run_stats)}, storage_options)

        # encode: bounded batches through the pool, progress with voxels/s and ETA
        t = time.perf_counter()
        voxels = 0
        pids: set[int] = set()
        bar = tqdm(total=len(tasks), desc=f"encode {method}", unit="chunk", disable=not progress, smoothing=0.1)
        size = _batch_size(len(tasks), pool.size, 8)
        for results in pool.map("encode", _batches(tasks, size), dst, codec_method.params, max_mse):
            for index, status, _nbytes, pid in results:
                pids.add(pid)
                if status == "skipped":
                    run_stats.chunks_skipped += 1
                else:
                    run_stats.chunks_encoded += 1
                    run_stats.chunks_repaired += status == "repaired"
                    voxels += plan.items[index].voxels
            bar.update(len(results))
            elapsed = time.perf_counter() - t
            bar.set_postfix_str(f"{voxels / max(elapsed, 1e-9) / 1e6:.2f} Mvox/s", refresh=False)
            if on_progress is not None:
                on_progress(bar.n, len(tasks))
        bar.close()
        times["encode"] = time.perf_counter() - t
        times["total"] = time.perf_counter() - t0
        run_stats.resubmitted = pool.resubmitted
        run_stats.worker_pids = sorted(pids)
        run_stats.seconds = {k: round(v, 3) for k, v in times.items()}
        run_stats.voxels_per_second = voxels / max(times["encode"], 1e-9)
        stored = array_stored_bytes(array)
        if manifest:
            doc.update(
                status="complete",
                finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
                stored_bytes=stored,
                raw_bytes=plan.raw_bytes,
                ratio=plan.raw_bytes / max(stored, 1),
                run=asdict(run_stats),
            )
            write_manifest(manifest_url(dst), doc, storage_options)
        summary = {
            "shape": tuple(source.shape),
            "dtype": source.dtype.name,
            "chunks": chunk_shape,
            "raw_bytes": plan.raw_bytes,
            "stored_bytes": stored,
            "target": target,
            "manifest": manifest_url(dst) if manifest else None,
        }
        return summary, run_stats
    finally:
        if pool is not None:
            pool.close()
        if started_ray:
            import ray

            ray.shutdown()
