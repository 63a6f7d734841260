"""The encode phase on Ray Data (``--engine data``): the same work as the pool's, scheduled by Ray
Data's streaming executor.

Rows are task numbers, ``ray.data.range(rows)`` (made block by block, never listed); an actor-pool
``map_batches`` turns each number into its task (:class:`~streamcomp.pipeline.tasks.EncodeTasks`)
and runs :meth:`ChunkWorker.encode` on it: the same reads, atomic writes and checks of stored
copies on a resume as the pool's actors. The actors take the pool's resources (one CPU, or one GPU,
each; its non-secret ``runtime_env``), at most ``inflight`` batches each, and Ray Data restarts
dead actors and retries their batches itself.

The actor pool autoscales from one actor up to ``workers``: a fixed pool as large as the cluster's
CPUs leaves no CPU for the range's read tasks, and the run hangs (seen on an embedded Ray with 2
CPUs and 2 actors).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np

from streamcomp.errors import InputError
from streamcomp.pipeline.executors import RayPool
from streamcomp.pipeline.tasks import EncodeTasks
from streamcomp.pipeline.worker import ChunkWorker


class EncodeActor:
    """A Ray Data callable class: a batch of task numbers in, one row per encoded task out."""

    def __init__(
        self, src: str, storage_options: dict | None, tasks: EncodeTasks, dst: str, params: dict[str, Any],
        max_mse: float | None, max_error: float | None,
    ) -> None:
        self.worker = ChunkWorker(src, storage_options)
        self.tasks = tasks
        self.args = (dst, params, max_mse, max_error)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        array, _ = self.worker.output(*self.args[:2])
        todo = [t for n in batch["id"] if (t := self.tasks.task(int(n), array)) is not None]
        done = self.worker.encode(todo, *self.args)
        index, status, nbytes, pid = zip(*done, strict=True) if done else ((), (), (), ())
        return {"index": np.array(index, np.int64), "status": np.array(status, str),
                "nbytes": np.array(nbytes, np.int64), "pid": np.array(pid, np.int64)}


def encode(
    tasks: EncodeTasks, pool: RayPool, dst: str, params: dict[str, Any], max_mse: float | None,
    max_error: float | None, batch: int, progress: bool = True,
) -> Iterator[list[tuple[int, str, int, int]]]:
    """Like ``pool.map("encode", ...)``: lists of (index, status, bytes, pid), as batches finish.

    The pool's own actors are released first, so their CPUs (or GPUs) go to Ray Data's. Without
    ``progress`` (``-q``), Ray Data's own lines (start, finish, "progress bars disabled") are held
    back too; its errors still raise here."""
    try:
        import ray.data
    except ImportError as exc:
        raise InputError(
            f"--engine data needs Ray Data, which is not installed ({exc}): pip install 'streamcomp[data]'"
        ) from exc
    pool.release()
    ctx, logger = ray.data.DataContext.get_current(), logging.getLogger("ray.data")
    bars, ctx.enable_progress_bars = ctx.enable_progress_bars, False  # the driver's own bar counts chunks
    level = logger.level
    if not progress:
        logger.setLevel(logging.ERROR)
    try:
        ds = ray.data.range(tasks.rows).map_batches(
            EncodeActor,
            fn_constructor_args=(*pool.worker_args, tasks, dst, params, max_mse, max_error),
            batch_size=batch,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(
                min_size=1, max_size=pool.size, max_tasks_in_flight_per_actor=pool.inflight
            ),
            **pool.resources,
        )
        for out in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
            yield list(zip(out["index"].tolist(), out["status"].tolist(), out["nbytes"].tolist(),
                           out["pid"].tolist(), strict=True))
    finally:
        ctx.enable_progress_bars = bars
        logger.setLevel(level)
