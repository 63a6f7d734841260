"""Planning: the chunk grid, per-chunk statistics, and each chunk's byte budget.

A ratio target is an array-wide promise: raw bytes / (chunk bytes + metadata bytes) = R. The plan
subtracts the metadata, gives constant chunks (header only) and fill-value chunks (not stored at
all) what they need, and shares the rest among the other chunks in proportion to their weight
(their voxel count by default), so the achieved ratio lands on the target.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from streamcomp.errors import InputError
from streamcomp.frame import header_size
from streamcomp.io import Source

DEFAULT_CHUNKS = {3: (16, 64, 64), 4: (4, 16, 32, 32)}


@dataclass
class ChunkPlan:
    coords: tuple[int, ...]
    slices: tuple[slice, ...]
    kind: str = "data"  # "data", "constant" or "fill"
    budget: int | None = None

    @property
    def valid_shape(self) -> tuple[int, ...]:
        return tuple(s.stop - s.start for s in self.slices)

    @property
    def voxels(self) -> int:
        return math.prod(self.valid_shape)


@dataclass
class Plan:
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: np.dtype
    items: list[ChunkPlan]
    vmin: float
    vmax: float

    @property
    def peak(self) -> float:
        """PSNR peak: max - min of the original (1 for a constant volume)."""
        return (self.vmax - self.vmin) or 1.0

    @property
    def raw_bytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def parse_chunks(spec: str | tuple[int, ...] | None, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Chunk shape from ``"16,64,64"`` or a tuple, clipped to the array; a default per ndim."""
    if spec is None:
        chunks = DEFAULT_CHUNKS.get(len(shape), (64,) * len(shape))
    elif isinstance(spec, str):
        try:
            chunks = tuple(int(v) for v in spec.split(","))
        except ValueError as exc:
            raise InputError(f"chunks must be comma-separated integers like 16,64,64, got {spec!r}") from exc
    else:
        chunks = tuple(int(v) for v in spec)
    if len(chunks) != len(shape):
        raise InputError(f"chunks {chunks} must have one entry per axis of the volume {shape}")
    if any(c < 1 for c in chunks):
        raise InputError(f"chunk sizes must be positive, got {chunks}")
    return tuple(min(c, n) for c, n in zip(chunks, shape, strict=True))


def chunk_grid(shape: tuple[int, ...], chunks: tuple[int, ...]) -> Iterator[ChunkPlan]:
    counts = [math.ceil(n / c) for n, c in zip(shape, chunks, strict=True)]
    for coords in itertools.product(*(range(k) for k in counts)):
        slices = tuple(
            slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(coords, chunks, shape, strict=True)
        )
        yield ChunkPlan(coords, slices)


def scan(source: Source, chunks: tuple[int, ...], progress: bool = False) -> Plan:
    """One streaming pass over the source: chunk kinds and the global value range."""
    from tqdm import tqdm

    items = list(chunk_grid(source.shape, chunks))
    vmin, vmax = math.inf, -math.inf
    for item in tqdm(items, desc="scan", unit="chunk", disable=not progress):
        block = source.read(item.slices)
        finite = block[np.isfinite(block)] if block.dtype.kind == "f" else block
        if finite.size:
            lo, hi = float(finite.min()), float(finite.max())
            vmin, vmax = min(vmin, lo), max(vmax, hi)
            if lo == hi and finite.size == block.size:
                item.kind = "fill" if lo == 0 else "constant"
    if vmin > vmax:
        vmin = vmax = 0.0
    return Plan(tuple(source.shape), chunks, np.dtype(source.dtype), items, vmin, vmax)


def assign_budgets(plan: Plan, ratio: float, meta_bytes: int, min_payload: int) -> None:
    """Give every data chunk its byte budget so that the whole array lands on ``ratio``."""
    if not ratio > 1:
        raise InputError(f"ratio must be greater than 1, got {ratio}")
    ndim = len(plan.shape)
    const_cost = header_size(ndim, 0)
    data = [it for it in plan.items if it.kind == "data"]
    n_const = sum(it.kind == "constant" for it in plan.items)
    available = plan.raw_bytes / ratio - meta_bytes - n_const * const_cost
    weight = sum(it.voxels for it in data)
    need = len(data) * (min_payload + header_size(ndim, 3))
    if available < need:
        best = plan.raw_bytes / (meta_bytes + n_const * const_cost + need)
        raise InputError(
            f"impossible ratio {ratio:g}: with chunks {plan.chunks} the smallest encoding takes "
            f"about {need + meta_bytes} bytes, so at most {best:.1f}x is reachable; "
            "ask for a lower ratio or use larger chunks"
        )
    for it in data:
        it.budget = int(available * it.voxels / weight)
