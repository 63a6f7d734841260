"""The encode phase's tasks, made from the plan when asked for, never listed.

Both engines take them from here: the pool's driver walks them in grid order
(:meth:`EncodeTasks.in_order`); a Ray Data actor turns the task number in each row of
``ray.data.range(rows)`` into its task (:meth:`EncodeTasks.task`), so no per-chunk list exists
anywhere, whatever the volume size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from streamcomp.format.shards import chunks_per_shard
from streamcomp.format.store import chunk_key
from streamcomp.pipeline.worker import ShardTask, Task
from streamcomp.plan import BLOCK, KINDS, Plan

FILL = KINDS.index("fill")


def stored_shards(plan: Plan, shards: tuple[int, ...]) -> np.ndarray:
    """Over the shard grid: whether a shard holds any chunk that is stored (not all fill value)."""
    per_shard = chunks_per_shard(shards, plan.chunks)
    mask = np.zeros([math.ceil(g / k) for g, k in zip(plan.grid, per_shard, strict=True)], bool)
    for start in range(0, plan.size, BLOCK):
        stored = start + np.flatnonzero(plan.kinds[start : start + BLOCK] != FILL)
        coords = np.unravel_index(stored, plan.grid)
        mask[tuple(c // k for c, k in zip(coords, per_shard, strict=True))] = True
    return mask


class EncodeTasks:
    """Chunk tasks (or shard tasks, with ``shards``) of a plan; ``present``: the keys already
    stored (a resume), whose tasks check the stored copy before encoding."""

    def __init__(self, plan: Plan, shards: tuple[int, ...] | None, present: set[str]) -> None:
        self.plan, self.shards, self.present = plan, shards, present
        self.per_shard = None if shards is None else chunks_per_shard(shards, plan.chunks)
        self.grid = plan.grid if shards is None else tuple(
            math.ceil(g / k) for g, k in zip(plan.grid, self.per_shard, strict=True)
        )

    @property
    def rows(self) -> int:
        """How many task numbers there are: chunks in the grid (or shards in the shard grid),
        fill-only ones included (they have no task)."""
        return math.prod(self.grid)

    def in_order(self, array: Any) -> Iterator[Task | ShardTask]:
        """Every task, in grid order, made as it is consumed."""
        plan = self.plan
        if self.shards is None:
            for start in range(0, plan.size, BLOCK):
                for i in start + np.flatnonzero(plan.kinds[start : start + BLOCK] != FILL):
                    yield self._chunk(int(i), array)
            return
        for linear in np.flatnonzero(stored_shards(plan, self.shards)):
            yield self.task(int(linear), array)

    def task(self, number: int, array: Any) -> Task | ShardTask | None:
        """The task numbered ``number`` (a plan index, or a linear shard index), None when it is
        all fill value (nothing is stored for it)."""
        if self.shards is None:
            return None if self.plan.kinds[number] == FILL else self._chunk(number, array)
        coords = tuple(int(c) for c in np.unravel_index(number, self.grid))
        indices = self.shard_chunks(coords)
        if not len(indices):
            return None
        chunks = tuple(self._chunk(int(i)) for i in indices)
        return ShardTask(number, coords, chunks, chunk_key(array, coords) in self.present)

    def _chunk(self, index: int, array: Any = None) -> Task:
        """Chunk ``index``'s task; ``array`` given: whether its key is stored (a chunk in a shard has none)."""
        it = self.plan.item(index)
        present = array is not None and chunk_key(array, it.coords) in self.present
        return Task(index, it.coords, it.slices, it.kind, it.budget, present)

    def shard_chunks(self, coords: tuple[int, ...]) -> np.ndarray:
        """Plan indices of the stored (non-fill) chunks of the shard at ``coords``, in grid order."""
        plan, per_shard = self.plan, self.per_shard
        ranges = [np.arange(c * k, min((c + 1) * k, g)) for c, k, g in zip(coords, per_shard, plan.grid, strict=True)]
        index = np.ravel_multi_index(np.meshgrid(*ranges, indexing="ij"), plan.grid).ravel()
        return index[plan.kinds[index] != FILL]

    def voxels(self, number: int) -> int:
        """Voxels a finished task encoded: its chunk's, or its shard's stored chunks'."""
        if self.shards is None:
            return self.plan.voxels(number)
        coords = tuple(int(c) for c in np.unravel_index(number, self.grid))
        return int(self.plan.voxels(self.shard_chunks(coords)).sum())
