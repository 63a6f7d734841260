"""The per-chunk work, shared by the Ray actors and the in-process executor.

Only slices, small tuples and configurations cross the object store: a worker reads its own blocks
from the source and writes its own chunk keys (atomic, idempotent), so memory stays flat whatever
the volume size and a rerun only encodes what is missing or invalid.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from streamcomp.format.bounded_fit import fit_bounded_model
from streamcomp.format.chunk import chunk_is_valid, constant_chunk, encode_chunk, method_target
from streamcomp.format.codec import codec_config_of, make_config, method_from_config
from streamcomp.format.shards import chunks_per_shard, pack_shard, unpack_shard
from streamcomp.format.store import open_output_array, read_chunk, write_chunk
from streamcomp.methods import FitTargets, Method, build_method
from streamcomp.plan import chunk_stats
from streamcomp.source import open_source
from streamcomp.values import normalize


@dataclass(frozen=True)
class Task:
    """One chunk to encode: where it is, what it is, its budget, whether a stored copy may exist."""

    index: int
    coords: tuple[int, ...]
    slices: tuple[slice, ...]
    kind: str
    budget: int | None
    present: bool = False


@dataclass(frozen=True)
class ShardTask:
    """One shard to assemble and write whole: its grid coordinates and its non-fill chunks (a chunk
    absent here is all fill value and stays absent from the shard's index)."""

    index: int
    coords: tuple[int, ...]
    chunks: tuple[Task, ...]
    present: bool = False


@dataclass(frozen=True)
class FitResult:
    """What the fit phase hands back: the codec configuration and what the method decided."""

    config: dict[str, Any]
    notes: tuple[str, ...]


class ChunkWorker:
    """Reads its own blocks from the source, encodes them, writes their keys.

    Constructed from picklable arguments only, so Ray can (re)start it anywhere; the output array
    and the method (built once from the array's codec configuration) are opened on first use.
    """

    def __init__(self, src: str, storage_options: dict | None = None) -> None:
        self.storage_options = storage_options
        self.source = open_source(src, storage_options)
        self._outputs: dict[str, Any] = {}
        self._opening = threading.Lock()  # the in-process pool calls one worker from several threads

    def stats(
        self, batch: list[tuple[int, tuple[slice, ...]]], method: str, params: dict[str, Any], rates: bool
    ) -> list[tuple[int, tuple]]:
        """Per chunk: (min, max, kind, budget weight, rate curve), the weight from
        :meth:`Method.chunk_weight` and, when ``rates`` (a ratio target), the curve from
        :meth:`Method.rate_curve`."""
        codec_method = build_method(method, params)
        curve = codec_method.rate_curve if rates else None
        return [(i, chunk_stats(self.source.read(sl), codec_method.chunk_weight, curve)) for i, sl in batch]

    def fit(
        self,
        method: str,
        params: dict[str, Any],
        sample: list[tuple[slice, ...]],
        max_mse: float | None,
        budgets: list[int | None],
        data_chunks: int,
    ) -> FitResult:
        """Fit the method's shared state on the sample blocks, whose planned budgets (or the error
        target) come along so the method can judge what its shared state buys."""
        codec_method = build_method(method, params)
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
        notes = codec_method.fit_shared([norm for norm, _, _ in blocks], targets)
        return FitResult(make_config(codec_method, max_mse=max_mse), tuple(notes))

    def fit_bounded(self, sample: list[tuple[slice, ...]], max_error: float, data_voxels: int) -> tuple[bytes, str]:
        """The context model for an error-bounded array's levels, fitted on the sample blocks (its
        bytes; empty when it does not pay), and a note on the decision."""
        model, note = fit_bounded_model([self.source.read(sl) for sl in sample], max_error, data_voxels)
        return (b"" if model is None else model.to_bytes()), note

    def output(self, dst: str, params: dict[str, Any]) -> tuple[Any, Method]:
        """The output array at ``dst`` and the method built from its codec configuration, opened once."""
        with self._opening:
            if dst not in self._outputs:
                array = open_output_array(dst, self.storage_options)
                self._outputs[dst] = (array, method_from_config(codec_config_of(array), params))
            return self._outputs[dst]

    def encode(
        self, batch: list[Task | ShardTask], dst: str, params: dict[str, Any], max_mse: float | None,
        max_error: float | None = None,
    ) -> list[tuple[int, str, int, int]]:
        """Encode and write each task's chunk or shard: (index, "written" | "skipped" | "repaired",
        bytes, pid).

        ``params`` are the run's full method parameters: the array's configuration keeps only
        those a decoder needs."""
        array, method = self.output(dst, params)
        run = encode_shard_task if array.shards is not None else encode_task
        return [(t.index, *run(method, self.source, array, t, max_mse, max_error), os.getpid()) for t in batch]

    def pyramid(
        self, batch: list[Any], params: dict[str, Any], max_mse: float | None, max_error: float | None = None
    ) -> list[tuple[int, str, int, int]]:
        """Compute each pyramid level chunk from the source, code and write it (see
        :mod:`streamcomp.pipeline.pyramid`): (index, "written" | "skipped" | "repaired", bytes, pid)."""
        from streamcomp.pipeline.pyramid import level_task, open_level  # the pyramid phase's own module

        done = []
        for t in batch:
            with self._opening:
                if t.url not in self._outputs:
                    self._outputs[t.url] = open_level(t.url, self.storage_options, params)
            done.append((t.index, *level_task(*self._outputs[t.url], self.source, t, max_mse, max_error), os.getpid()))
        return done


def encode_task(
    method: Method, source: Any, array: Any, task: Task, max_mse: float | None, max_error: float | None = None
) -> tuple[str, int]:
    """Verify a stored copy of the chunk, else read, encode and write it."""
    chunk_shape = tuple(array.chunks)
    status = "written"
    if task.present:
        data = read_chunk(array, task.coords)
        if chunk_is_valid(data, method.method_id, chunk_shape, valid_shape(task)):
            return "skipped", len(data or b"")
        status = "repaired"
    data = encode_block(method, source.read(task.slices), task, chunk_shape, max_mse, max_error)
    write_chunk(array, task.coords, data)
    return status, len(data)


def encode_shard_task(
    method: Method, source: Any, array: Any, task: ShardTask, max_mse: float | None, max_error: float | None = None
) -> tuple[str, int]:
    """Verify a stored copy of the shard (index checksum and every chunk's frame), else encode all
    its chunks and write the shard whole."""
    chunk_shape = tuple(array.chunks)
    per_shard = chunks_per_shard(tuple(array.shards), chunk_shape)
    origin = tuple(c * k for c, k in zip(task.coords, per_shard, strict=True))

    def local(t: Task) -> tuple[int, ...]:
        return tuple(c - o for c, o in zip(t.coords, origin, strict=True))

    status = "written"
    if task.present:
        data = read_chunk(array, task.coords)
        parts = None if data is None else unpack_shard(data, per_shard)
        if parts is not None and set(parts) == {local(t) for t in task.chunks} and all(
            chunk_is_valid(parts[local(t)], method.method_id, chunk_shape, valid_shape(t)) for t in task.chunks
        ):
            return "skipped", len(data)
        status = "repaired"
    parts = {
        local(t): encode_block(method, source.read(t.slices), t, chunk_shape, max_mse, max_error) for t in task.chunks
    }
    data = pack_shard(per_shard, parts)
    write_chunk(array, task.coords, data)
    return status, len(data)


def valid_shape(task: Task) -> tuple[int, ...]:
    return tuple(s.stop - s.start for s in task.slices)


def encode_block(
    method: Method, block: Any, task: Task, chunk_shape: tuple[int, ...], max_mse: float | None,
    max_error: float | None,
) -> bytes:
    """One chunk's frame: a constant chunk's header, or the method's (or bounded mode's) code."""
    if task.kind == "constant":
        return constant_chunk(method, block, chunk_shape)
    return encode_chunk(method, block, chunk_shape, budget_bytes=task.budget, max_mse=max_mse, max_error=max_error)
