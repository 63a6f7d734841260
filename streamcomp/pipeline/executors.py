"""Executors: a pool of :class:`ChunkWorker` Ray actors with bounded in-flight work, or the same
worker called in-process.

At most ``inflight`` task batches per actor are outstanding (``ray.wait`` with a cap), so memory
stays flat. A worker that dies is restarted by Ray (``max_restarts``) and its calls retried
(``max_task_retries``); a batch that still fails is resubmitted on a fresh actor. Tiny inputs with
no Ray running run the very same worker in-process: starting Ray costs ~10 s, more than such a
job takes.
"""

from __future__ import annotations

import logging
import os
import re
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from streamcomp.errors import InputError, StreamcompError
from streamcomp.format.codec import usable_cores
from streamcomp.pipeline import watchdog
from streamcomp.pipeline.worker import ChunkWorker

ENV_PREFIXES = ("AWS_", "GCS_", "STREAMCOMP_")  # settings the workers may share (endpoint, region, ...)
_SECRET_NAME = re.compile(r"key|secret|token|passw|credential|private", re.IGNORECASE)
_KMS_NAME = re.compile(r"kms", re.IGNORECASE)  # a KMS key id names a key, it is not one

logger = logging.getLogger(__name__)


class PipelineError(StreamcompError, RuntimeError):
    """The pipeline could not finish (workers kept dying, the cluster has no room, ...)."""


class LocalPool:
    """The in-process executor: one :class:`ChunkWorker`, its batches run on ``threads`` threads
    (default: one per usable core). The coder's numpy, torch and file calls release the GIL for
    part of their time, so two threads encode 1.2-1.4x faster than one on two cores; at most two
    batches per thread are in flight, so memory stays flat."""

    kind = "local"
    address = None
    gpu = False

    def __init__(self, src: str, storage_options: dict | None, threads: int | None = None) -> None:
        self.worker = ChunkWorker(src, storage_options)
        self.size = threads or usable_cores()
        self.resubmitted = 0

    def map(self, name: str, batches: Iterable[Any], *args: Any) -> Iterator[Any]:
        """Each batch's result, in order."""
        fn = getattr(self.worker, name)
        if self.size == 1:
            yield from (fn(batch, *args) for batch in batches)
            return
        with ThreadPoolExecutor(self.size, thread_name_prefix="streamcomp") as threads:
            pending: deque[Future] = deque()
            for batch in batches:
                pending.append(threads.submit(fn, batch, *args))
                if len(pending) >= 2 * self.size:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    def call(self, name: str, *args: Any) -> Any:
        return getattr(self.worker, name)(*args)

    def close(self) -> None:
        pass


def is_secret_name(name: str) -> bool:
    """Whether a variable or option called ``name`` may hold a credential (so never leaves the driver)."""
    return bool(_SECRET_NAME.search(name)) and not _KMS_NAME.search(name)


def _worker_env() -> dict[str, str]:
    """Non-secret settings (endpoint, region, ...) for the workers, from the driver's environment.

    They travel in the actors' ``runtime_env``, which the cluster records and shows to anyone who
    can read its state API or dashboard, so credentials never do: workers use their own chain
    (the node's environment, instance role, workload identity; an embedded Ray's workers inherit
    the driver's environment).
    """
    return {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES) and not is_secret_name(k)}


def without_secrets(options: dict | None, prefix: str = "") -> tuple[dict | None, list[str]]:
    """``options`` without the entries whose names may hold credentials (nested dicts too), and their names.

    Actor constructor arguments are stored by the cluster (to restart actors), so storage options
    sent to the workers must not carry keys.
    """
    if options is None:
        return None, []
    kept: dict = {}
    dropped: list[str] = []
    for name, value in options.items():
        if is_secret_name(str(name)):
            dropped.append(f"{prefix}{name}")
        elif isinstance(value, dict):
            kept[name], inner = without_secrets(value, f"{prefix}{name}.")
            dropped += inner
        else:
            kept[name] = value
    return kept, dropped


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
        worker_options, dropped = without_secrets(storage_options)
        if dropped:
            logger.warning(
                "storage_options %s not sent to the Ray workers (the cluster records actor arguments); "
                "they use their own credentials: the node's environment, an instance role or workload "
                "identity (see cluster/README.md)", ", ".join(dropped),
            )
        self.resources = {  # what each actor asks for; Ray Data's actors (--engine data) take the same
            "num_cpus": 1,
            "num_gpus": 1 if self.gpu else 0,  # GPU actors make an autoscaler add GPU nodes
            "runtime_env": {"env_vars": env} if env else None,
        }
        self._options = {**self.resources, "max_restarts": 4, "max_task_retries": 4}
        self.worker_args = (src, worker_options)
        self._remote = ray.remote(ChunkWorker)
        self.actors: list[Any] = []
        self._start()

    def _new_actor(self) -> Any:
        return self._remote.options(**self._options).remote(*self.worker_args)

    def _start(self) -> None:
        if not self.actors:
            self.actors = [self._new_actor() for _ in range(self.size)]

    def release(self) -> None:
        """End the actors, so their CPUs (or GPUs) are free for another stage (Ray Data's); the next
        ``map`` or ``call`` starts new ones."""
        self.close()
        self.actors = []

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

        self._start()

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

        self._start()
        return ray.get(getattr(self.actors[0], name).remote(*args))

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor, no_restart=True)


def start_ray(address: str | None, workers: int | None) -> bool:
    """Connect to ``address`` (or ``RAY_ADDRESS``), else start an embedded local Ray on loopback.

    Returns whether this call initialized Ray here (and so should shut it down or disconnect).
    An embedded Ray gets a :mod:`~streamcomp.pipeline.watchdog` that ends its processes if this
    process dies without shutting it down (SIGKILL, OOM killer). Its workers inherit this
    process's environment, credentials included, so nothing secret is forwarded to them.
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
    context = ray.init(
        address="local",
        num_cpus=workers or usable_cores(),
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        object_store_memory=256 * 2**20,  # only slices and small results travel through it
        log_to_driver=True,
        logging_level=logging.WARNING,  # Ray's own start-up lines are not the user's concern
    )
    watchdog.start(context.address_info["session_dir"])
    return True
