"""Planning: the chunk grid, per-chunk statistics, and each chunk's byte budget.

A ratio target is an array-wide promise: raw bytes / (chunk bytes + metadata bytes) = R. The plan
subtracts the metadata, gives constant chunks (header only) and fill-value chunks (not stored at
all) what they need, and shares the rest among the other chunks in proportion to their weight
(their voxel count by default), so the achieved ratio lands on the target.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from streamcomp.errors import InputError
from streamcomp.format.frame import header_size
from streamcomp.values import finite_range, finite_values

SAMPLE_BLOCKS = 64  # sample chunks a shared-state fit reads


@dataclass
class ChunkPlan:
    coords: tuple[int, ...]
    slices: tuple[slice, ...]
    kind: str = "data"  # "data", "constant" or "fill"
    budget: int | None = None
    weight: float | None = None  # share of the byte budget; None = voxel count

    @property
    def budget_weight(self) -> float:
        return float(self.voxels) if self.weight is None else float(self.weight)

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


def parse_chunks(
    spec: str | tuple[int, ...] | None, shape: tuple[int, ...], defaults: dict[int, tuple[int, ...]]
) -> tuple[int, ...]:
    """Chunk shape from ``"16,64,64"`` or a tuple, clipped to the array; ``defaults[ndim]`` (a
    method's :attr:`~streamcomp.methods.base.Method.default_chunks`) when ``spec`` is None."""
    if spec is None:
        chunks = defaults.get(len(shape), (64,) * len(shape))
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


def block_stats(block: np.ndarray) -> tuple[float, float, str]:
    """(min, max, kind) of one chunk's finite values; kind is "fill" (all zero, not stored),
    "constant" (one value, header only) or "data". No finite value: (inf, -inf, "data")."""
    lo_hi = finite_range(block)
    if lo_hi is None:
        return math.inf, -math.inf, "data"
    lo, hi = lo_hi
    kind = "data"
    if lo == hi and finite_values(block).size == block.size:
        kind = "fill" if lo == 0 else "constant"
    return lo, hi, kind


def plan_from_stats(
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    dtype: np.dtype,
    items: list[ChunkPlan],
    stats: list[tuple],
) -> Plan:
    """The plan from every chunk's :func:`block_stats` (in ``items`` order), however they were computed.

    A stats tuple may carry a fourth element, the chunk's budget weight (None: its voxel count).
    """
    vmin, vmax = math.inf, -math.inf
    for item, st in zip(items, stats, strict=True):
        lo, hi, kind = st[:3]
        vmin, vmax = min(vmin, lo), max(vmax, hi)
        item.kind = kind
        item.weight = st[3] if len(st) > 3 else None
    if vmin > vmax:
        vmin = vmax = 0.0
    return Plan(tuple(shape), tuple(chunks), np.dtype(dtype), items, vmin, vmax)


def chunk_stats(block: np.ndarray, weight: Callable[[np.ndarray], float | None] | None = None) -> tuple:
    """:func:`block_stats` plus, for data chunks, ``weight(block)`` (a method's ``chunk_weight``;
    None stands for the chunk's voxel count)."""
    lo, hi, kind = block_stats(block)
    w = weight(block) if weight is not None and kind == "data" else None
    return lo, hi, kind, (None if w is None else float(w))


def sample_items(plan: Plan, count: int = SAMPLE_BLOCKS, seed: int = 0) -> list[ChunkPlan]:
    """Data chunks drawn evenly at random, for methods that fit shared state."""
    data = [it for it in plan.items if it.kind == "data"]
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(data), size=min(count, len(data)), replace=False) if data else []
    return [data[i] for i in sorted(picks)]


def assign_budgets(plan: Plan, ratio: float, meta_bytes: int, min_payload: int) -> None:
    """Give every data chunk its byte budget so that the whole array lands on ``ratio``."""
    if not ratio > 1:
        raise InputError(f"ratio must be greater than 1, got {ratio}")
    ndim = len(plan.shape)
    const_cost = header_size(ndim, 0)
    data = [it for it in plan.items if it.kind == "data"]
    n_const = sum(it.kind == "constant" for it in plan.items)
    available = plan.raw_bytes / ratio - meta_bytes - n_const * const_cost
    floor = min_payload + header_size(ndim, 3)
    need = len(data) * floor
    if available < need:
        best = plan.raw_bytes / (meta_bytes + n_const * const_cost + need)
        raise InputError(
            f"impossible ratio {ratio:g}: with chunks {plan.chunks} the smallest encoding takes "
            f"about {meta_bytes + n_const * const_cost + need} bytes, so at most {best:.1f}x is reachable; "
            "ask for a lower ratio or use larger chunks"
        )
    for it, budget in zip(data, _share(available, [it.budget_weight for it in data], floor), strict=True):
        it.budget = budget


def _share(total: float, weights: list[float], floor: float) -> list[int]:
    """``total`` split in proportion to ``weights``, every share at least ``floor`` (water filling:
    shares that fall below the floor are pinned to it and the rest re-split among the others)."""
    n = len(weights)
    w = np.array(weights, np.float64)
    if n == 0:
        return []
    if not np.isfinite(w).all() or w.sum() <= 0:
        w = np.ones(n)
    pinned = np.zeros(n, bool)
    while True:
        free = total - floor * pinned.sum()
        wsum = w[~pinned].sum()
        shares = np.where(pinned, floor, free * w / wsum if wsum > 0 else floor)
        low = ~pinned & (shares < floor)
        if not low.any():
            return [int(v) for v in shares]
        pinned |= low
