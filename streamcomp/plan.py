"""Planning: the chunk grid, per-chunk statistics, and each chunk's byte budget.

A ratio target is an array-wide promise: raw bytes / (chunk bytes + metadata bytes) = R. The plan
subtracts the metadata, gives constant chunks (header only) and fill-value chunks (not stored at
all) what they need, and shares the rest among the other chunks, so the achieved ratio lands on
the target. The share follows, by what the method's scan gave: each chunk's estimated bytes at one
quantizer step common to the whole array (its rate curve; one step everywhere is where a given
number of bytes decodes with the least squared error), else its weight, else its voxel count.
"""

from __future__ import annotations

import itertools
import math
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from streamcomp.errors import InputError
from streamcomp.format.frame import header_size
from streamcomp.values import finite_range, finite_values

SAMPLE_BLOCKS = 64  # sample chunks a shared-state fit reads
KINDS = ("data", "constant", "fill")
SPILL_BYTES = 64 * 2**20  # plan columns larger than this live in a temp file, not in memory
BLOCK = 2**20  # chunks handled at once when a pass over the plan needs temporary arrays
# The quantizer steps (log2, in a chunk's normalized units) a method's rate curve gives bytes at:
# from finer than any ratio above 2 needs on 16-bit data to where a chunk codes to nothing.
RATE_LOG2_STEPS = np.arange(-12.0, 3.0)


@dataclass
class ChunkPlan:
    """One chunk of a plan: where it is, what it is, its budget (a view; the plan stores columns)."""

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


def column(n: int, dtype: str, fill: float) -> np.ndarray:
    """A per-chunk column of ``n`` values: in memory, or memory-mapped from an anonymous temp file
    past :data:`SPILL_BYTES`, so the driver's resident memory stays flat however many chunks."""
    nbytes = n * np.dtype(dtype).itemsize
    if nbytes <= SPILL_BYTES:
        return np.full(n, fill, dtype)
    backing = tempfile.TemporaryFile(prefix="streamcomp-plan-")  # noqa: SIM115 - lives as long as the map
    out = np.memmap(backing, dtype=dtype, mode="w+", shape=(n,))
    out[:] = fill
    return out


class Plan:
    """Per-chunk kinds, budget weights and budgets as flat columns in chunk-grid (C) order: about
    17 bytes a chunk (64 more with rate curves), not a Python object each, so a plan of millions
    of chunks stays small."""

    def __init__(self, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: np.dtype) -> None:
        self.shape, self.chunks, self.dtype = tuple(shape), tuple(chunks), np.dtype(dtype)
        self.grid = tuple(math.ceil(n / c) for n, c in zip(self.shape, self.chunks, strict=True))
        self.size = math.prod(self.grid)
        self.kinds = column(self.size, "u1", KINDS.index("data"))
        self.weights = column(self.size, "f8", np.nan)  # NaN: the chunk's voxel count
        self.budgets = column(self.size, "i8", -1)  # -1: no budget (a PSNR or error target)
        # Rate curves, made with the first one recorded: bytes at RATE_LOG2_STEPS, and log2 of the
        # raw units per normalized unit (half the chunk's value range), which puts every chunk's
        # steps on the array's common scale.
        self.rates: np.ndarray | None = None
        self.rate_offsets: np.ndarray | None = None
        self.vmin, self.vmax = math.inf, -math.inf

    def record(self, index: int, stats: tuple) -> None:
        """One chunk's :func:`chunk_stats` (min, max, kind[, weight[, rate curve]])."""
        lo, hi, kind = stats[:3]
        self.vmin, self.vmax = min(self.vmin, lo), max(self.vmax, hi)
        self.kinds[index] = KINDS.index(kind)
        weight = stats[3] if len(stats) > 3 else None
        # NaN stands for "no weight"; a method's unusable NaN becomes inf, which _share also rejects
        self.weights[index] = np.nan if weight is None else (np.inf if math.isnan(weight) else weight)
        curve = stats[4] if len(stats) > 4 else None
        if curve is not None:
            if self.rates is None:
                self.rates = column(self.size * len(RATE_LOG2_STEPS), "f4", np.nan).reshape(self.size, -1)
                self.rate_offsets = column(self.size, "f4", 0.0)
            self.rates[index] = curve
            self.rate_offsets[index] = math.log2((hi - lo) / 2) if math.isfinite(hi - lo) and hi > lo else 0.0

    def finish(self) -> Plan:
        if self.vmin > self.vmax:  # no finite value anywhere
            self.vmin = self.vmax = 0.0
        return self

    @property
    def items(self) -> PlanItems:
        return PlanItems(self)

    def coords(self, index: int) -> tuple[int, ...]:
        return tuple(int(c) for c in np.unravel_index(index, self.grid))

    def slices(self, index: int) -> tuple[slice, ...]:
        return grid_slices(self.coords(index), self.chunks, self.shape)

    def item(self, index: int) -> ChunkPlan:
        if not 0 <= index < self.size:
            raise IndexError(index)
        budget = int(self.budgets[index])
        kind = KINDS[self.kinds[index]]
        return ChunkPlan(self.coords(index), self.slices(index), kind, None if budget < 0 else budget)

    def indices(self, kind: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Indices of the chunks of one kind in ``[start, stop)``."""
        return start + np.flatnonzero(self.kinds[start:stop] == KINDS.index(kind))

    def count(self, kind: str) -> int:
        return int(np.count_nonzero(self.kinds == KINDS.index(kind)))

    def voxels(self, index: int | np.ndarray) -> int | np.ndarray:
        """Voxels inside the volume of the chunk(s) at ``index`` (edge chunks are clipped)."""
        coords = np.unravel_index(index, self.grid)
        sizes = [np.minimum(c, n - k * c) for k, c, n in zip(coords, self.chunks, self.shape, strict=True)]
        return np.prod(np.stack(sizes), axis=0, dtype=np.int64) if np.ndim(index) else int(math.prod(sizes))

    def data_voxels(self) -> int:
        total = 0
        for start in range(0, self.size, BLOCK):
            total += int(self.voxels(self.indices("data", start, start + BLOCK)).sum())
        return total

    @property
    def peak(self) -> float:
        """PSNR peak: max - min of the original (1 for a constant volume)."""
        return (self.vmax - self.vmin) or 1.0

    @property
    def raw_bytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


class PlanItems(Sequence):
    """The plan's chunks as :class:`ChunkPlan` views, made on access."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def __len__(self) -> int:
        return self.plan.size

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self.plan.item(i) for i in range(*index.indices(self.plan.size))]
        return self.plan.item(index if index >= 0 else self.plan.size + index)


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


def grid_slices(coords: tuple[int, ...], chunks: tuple[int, ...], shape: tuple[int, ...]) -> tuple[slice, ...]:
    """The region of the chunk at grid ``coords``, clipped to the volume."""
    return tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(coords, chunks, shape, strict=True))


def chunk_grid(shape: tuple[int, ...], chunks: tuple[int, ...]) -> Iterator[ChunkPlan]:
    counts = [math.ceil(n / c) for n, c in zip(shape, chunks, strict=True)]
    for coords in itertools.product(*(range(k) for k in counts)):
        yield ChunkPlan(coords, grid_slices(coords, chunks, shape))


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
    """The plan from every chunk's :func:`chunk_stats` (in ``items`` order, the grid's), however
    they were computed. The pipeline's scan records them one by one instead (:meth:`Plan.record`)."""
    plan = Plan(shape, chunks, dtype)
    if not len(items) == len(stats) == plan.size:
        raise ValueError(f"{len(stats)} stats for {len(items)} items, the grid has {plan.size} chunks")
    for i, st in enumerate(stats):
        plan.record(i, st)
    return plan.finish()


def chunk_stats(
    block: np.ndarray,
    weight: Callable[[np.ndarray], float | None] | None = None,
    rates: Callable[[np.ndarray], np.ndarray | None] | None = None,
) -> tuple:
    """:func:`block_stats` plus, for data chunks, ``weight(block)`` (a method's ``chunk_weight``;
    None stands for the chunk's voxel count) and ``rates(block)`` (its ``rate_curve``; None: none)."""
    lo, hi, kind = block_stats(block)
    w = weight(block) if weight is not None and kind == "data" else None
    curve = rates(block) if rates is not None and kind == "data" else None
    curve = None if curve is None else np.asarray(curve, np.float32)
    if curve is not None and (curve.shape != RATE_LOG2_STEPS.shape or not np.isfinite(curve).all()):
        raise ValueError(f"a rate curve has one finite size per step of RATE_LOG2_STEPS, got {curve!r}")
    return lo, hi, kind, (None if w is None else float(w)), curve


def sample_items(plan: Plan, count: int = SAMPLE_BLOCKS, seed: int = 0) -> list[ChunkPlan]:
    """Data chunks drawn evenly at random, for methods that fit shared state."""
    data = plan.indices("data")
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(data), size=min(count, len(data)), replace=False) if len(data) else []
    return [plan.item(int(data[i])) for i in sorted(picks)]


def assign_budgets(plan: Plan, ratio: float, meta_bytes: int, min_payload: int) -> None:
    """Give every data chunk its byte budget so that the whole array lands on ``ratio``."""
    if not ratio > 1:
        raise InputError(f"ratio must be greater than 1, got {ratio}")
    ndim = len(plan.shape)
    const_cost = header_size(ndim, 0)
    data = plan.indices("data")
    n_const = plan.count("constant")
    available = plan.raw_bytes / ratio - meta_bytes - n_const * const_cost
    frame = header_size(ndim, 3)
    floor = min_payload + frame
    need = len(data) * floor
    if available < need:
        best = plan.raw_bytes / (meta_bytes + n_const * const_cost + need)
        raise InputError(
            f"impossible ratio {ratio:g}: with chunks {plan.chunks} the smallest encoding takes "
            f"about {meta_bytes + n_const * const_cost + need} bytes, so at most {best:.1f}x is reachable; "
            "ask for a lower ratio or use larger chunks"
        )
    payload = available - len(data) * frame
    if plan.rates is not None:
        weights = equal_step_sizes(plan.rates[data], plan.rate_offsets[data], payload)
    else:
        weights = np.where(np.isnan(plan.weights[data]), plan.voxels(data), plan.weights[data])
    plan.budgets[:] = -1
    # Every chunk pays its frame header whatever its size; only the payload is split by weight, so
    # a thin edge chunk is not left a header with almost nothing to code.
    plan.budgets[data] = frame + _share(payload, weights, min_payload)


def equal_step_sizes(rates: np.ndarray, offsets: np.ndarray, total: float, iters: int = 64) -> np.ndarray:
    """Each chunk's estimated bytes at the one step (in the array's units) where all of them add up
    to ``total``: by bisection on that step, each chunk's curve (``rates``, bytes at
    RATE_LOG2_STEPS + its offset) read linearly between its points, extended along its finest
    segment below them (about a bit per coefficient per halving, as at high rate) and flat above.
    Curves too flat to reach ``total`` give their finest sizes, which the split then scales up."""
    if not len(rates):
        return np.zeros(0)
    lo = float(offsets.min()) + RATE_LOG2_STEPS[0] - 64
    hi = float(offsets.max()) + RATE_LOG2_STEPS[-1]
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if _sizes_at(rates, offsets, mid).sum() > total:
            lo = mid
        else:
            hi = mid
    return _sizes_at(rates, offsets, hi)


def _sizes_at(rates: np.ndarray, offsets: np.ndarray, log2_step: float) -> np.ndarray:
    spacing = RATE_LOG2_STEPS[1] - RATE_LOG2_STEPS[0]
    position = np.minimum((log2_step - offsets - RATE_LOG2_STEPS[0]) / spacing, len(RATE_LOG2_STEPS) - 1)
    below = np.clip(np.floor(position), 0, len(RATE_LOG2_STEPS) - 2).astype(np.int64)
    rows = np.arange(len(rates))
    a, b = rates[rows, below].astype(np.float64), rates[rows, below + 1].astype(np.float64)
    return np.maximum(a + (position - below) * (b - a), 0.0)


def _share(total: float, weights: np.ndarray, floor: float) -> np.ndarray:
    """``total`` split in proportion to ``weights``, every share at least ``floor`` (water filling:
    shares that fall below the floor are pinned to it and the rest re-split among the others)."""
    n = len(weights)
    w = np.array(weights, np.float64)
    if n == 0:
        return np.zeros(0, np.int64)
    if not np.isfinite(w).all() or w.sum() <= 0:
        w = np.ones(n)
    pinned = np.zeros(n, bool)
    while True:
        free = total - floor * pinned.sum()
        wsum = w[~pinned].sum()
        shares = np.where(pinned, floor, free * w / wsum if wsum > 0 else floor)
        low = ~pinned & (shares < floor)
        if not low.any():
            return shares.astype(np.int64)
        pinned |= low
