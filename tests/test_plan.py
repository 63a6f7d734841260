"""The budget planner: chunk kinds, the value range, and the byte budgets that land a ratio target.

Numbers are worked by hand from the frame's header sizes: a constant chunk's header-only frame is
``header_size(3, 0)`` bytes, and no data chunk gets less than ``min_payload + header_size(3, 3)``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import plan_in_process

from streamcomp import plan as planner
from streamcomp.errors import InputError
from streamcomp.format.chunk import constant_chunk
from streamcomp.format.frame import header_size
from streamcomp.methods import method_class
from streamcomp.plan import (
    Plan,
    assign_budgets,
    block_stats,
    chunk_grid,
    chunk_stats,
    parse_chunks,
    plan_from_stats,
    sample_items,
)

CHUNK = (16, 64, 64)
CONST = header_size(3, 0)  # what a constant chunk costs
FRAMED = header_size(3, 3)  # the frame around a data chunk's payload, as the planner counts it


def volume(em: np.ndarray, kinds: str) -> np.ndarray:
    """16x64x(64 * len(kinds)) uint8, one chunk of CHUNK per letter: d = real EM, c = constant 77,
    f = all zero (the fill value), e = a 32-wide edge chunk of EM."""
    parts = {"d": em[:, :64, :64], "c": np.full(CHUNK, 77, np.uint8), "f": np.zeros(CHUNK, np.uint8),
             "e": em[:, 64:, 64:96]}
    return np.ascontiguousarray(np.concatenate([parts[k] for k in kinds], axis=2))


def weighted_plan(weights: list[float | None]):
    """A plan of len(weights) equal 16x64x64 uint8 data chunks with the given budget weights."""
    shape = (16, 64, 64 * len(weights))
    items = list(chunk_grid(shape, CHUNK))
    return plan_from_stats(shape, CHUNK, np.dtype("u1"), items, [(0.0, 255.0, "data", w) for w in weights])


def budgets(plan) -> list[int | None]:
    return [it.budget for it in plan.items]


def test_a_constant_chunk_costs_the_header_the_planner_counts(em):
    frame = constant_chunk(method_class("siren")(), np.full((8, 32, 32), 5, np.uint8), (16, 64, 64))
    assert len(frame) == CONST == 54


def test_equal_chunks_share_what_the_metadata_leaves_equally(em):
    plan = plan_in_process(volume(em, "dd"), CHUNK)
    assert [it.kind for it in plan.items] == ["data", "data"]
    assign_budgets(plan, 8, 1000, 64)
    # 16x64x128 bytes / 8 = 16384, less 1000 of metadata: 15384 for two chunks
    assert budgets(plan) == [7692, 7692]


def test_edge_chunks_pay_their_header_and_get_their_voxel_share_of_the_rest(em):
    plan = plan_in_process(volume(em, "de"), CHUNK)
    assert [it.voxels for it in plan.items] == [65536, 32768]
    assign_budgets(plan, 8, 288, 64)
    # 98304 / 8 - 288 = 12000: two frame headers, the other 11868 split 2:1
    assert budgets(plan) == [FRAMED + 7912, FRAMED + 3956] == [7978, 4022]


def test_constant_chunks_pay_their_header_and_fill_chunks_nothing(em):
    plan = plan_in_process(volume(em, "dcfd"), CHUNK)
    assert [it.kind for it in plan.items] == ["data", "constant", "fill", "data"]
    assign_budgets(plan, 8, 1000, 64)
    # 262144 / 8 = 32768 = 1000 metadata + 54 for the constant chunk + two data chunks of 15857
    assert budgets(plan) == [15857, None, None, 15857]
    assert 1000 + CONST + 2 * 15857 == 262144 / 8


def test_budgets_land_the_ratio_to_within_a_byte_per_chunk(em):
    plan = plan_in_process(volume(em, "dcdfde"), CHUNK)
    meta = 737
    for ratio in (3, 7.5, 16, 40):
        assign_budgets(plan, ratio, meta, 64)
        data = [b for b, it in zip(budgets(plan), plan.items, strict=True) if it.kind == "data"]
        spent = meta + CONST + sum(data)
        assert plan.raw_bytes / ratio - len(data) <= spent <= plan.raw_bytes / ratio


def test_weights_replace_voxel_counts():
    plan = weighted_plan([3.0, 1.0])
    assign_budgets(plan, 8, 1000, 64)
    assert budgets(plan) == [FRAMED + 11439, FRAMED + 3813]  # 15384 less two headers, split 3:1
    plan = weighted_plan([None, None])  # no weight: the voxel count, an equal split here
    assign_budgets(plan, 8, 1000, 64)
    assert budgets(plan) == [7692, 7692]


@pytest.mark.parametrize("weights", [[0.0, 0.0], [math.nan, 1.0], [math.inf, 1.0]])
def test_unusable_weights_fall_back_to_an_equal_split(weights):
    plan = weighted_plan(weights)
    assign_budgets(plan, 8, 1000, 64)
    assert budgets(plan) == [7692, 7692]


def test_water_filling_pins_small_shares_to_the_floor_until_none_is_left_below():
    """Floor 1000 bytes (a 934-byte payload and its header); 196608 / 8 - 576 = 24000, of which
    three headers leave 23802 of payload to share by weights 1 : 4 : 95.

    Proportional payloads are 238, 952 and 22612: the first is pinned to the floor, and re-split,
    the second drops to 22868 * 4 / 99 = 924 < 934, so a second round pins it too."""
    plan = weighted_plan([1.0, 4.0, 95.0])
    min_payload = 1000 - FRAMED
    assign_budgets(plan, 8, 576, min_payload)
    assert budgets(plan) == [1000, 1000, 22000]


def test_the_floor_alone_is_reachable_and_a_byte_less_is_not(em):
    """Eight 8x32x32 chunks, a 64-byte smallest payload: 8 * (64 + FRAMED) + 500 of metadata."""
    plan = plan_in_process(np.ascontiguousarray(em[:16, :64, :64]), (8, 32, 32))
    floor, meta = 64 + FRAMED, 500
    smallest = 8 * floor + meta
    assert smallest == 1540
    best = plan.raw_bytes / smallest  # 65536 / 1540 = 42.56
    assign_budgets(plan, best * (1 - 1e-9), meta, 64)
    assert budgets(plan) == [floor] * 8
    with pytest.raises(InputError) as err:
        assign_budgets(plan, 50, meta, 64)
    assert str(err.value) == (
        "impossible ratio 50: with chunks (8, 32, 32) the smallest encoding takes about 1540 bytes, "
        "so at most 42.6x is reachable; ask for a lower ratio or use larger chunks"
    )


def test_the_reachable_ratio_counts_constant_chunks(em):
    plan = plan_in_process(volume(em, "dcc"), CHUNK)
    with pytest.raises(InputError, match="impossible ratio") as err:
        assign_budgets(plan, 5000, 100, 64)
    best = plan.raw_bytes / (100 + 2 * CONST + 64 + FRAMED)  # 196608 / 338
    assert f"at most {best:.1f}x is reachable" in str(err.value)
    assign_budgets(plan, best * (1 - 1e-9), 100, 64)  # and that ratio is reachable
    assert budgets(plan) == [64 + FRAMED, None, None]


@pytest.mark.parametrize("ratio", [1, 0.5, 0, -3])
def test_a_ratio_of_one_or_less_is_refused(em, ratio):
    plan = plan_in_process(volume(em, "d"), CHUNK)
    with pytest.raises(InputError, match="ratio must be greater than 1"):
        assign_budgets(plan, ratio, 0, 64)


def test_block_stats_kinds_and_ranges():
    assert block_stats(np.zeros((2, 3, 4), np.int16)) == (0.0, 0.0, "fill")
    assert block_stats(np.full((2, 3, 4), -7, np.int16)) == (-7.0, -7.0, "constant")
    ramp = np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 5
    assert block_stats(ramp) == (-5.0, 18.0, "data")
    one_value_and_nan = np.full((2, 3, 4), 3.0, np.float32)
    one_value_and_nan[0, 0, 0] = np.nan  # not constant: the NaN must be stored
    assert block_stats(one_value_and_nan) == (3.0, 3.0, "data")
    assert block_stats(np.full((2, 2, 2), np.nan, np.float32)) == (math.inf, -math.inf, "data")
    with_inf = ramp.copy()
    with_inf[1, 2, 3] = np.inf
    assert block_stats(with_inf) == (-5.0, 17.0, "data")  # the range is over finite values only


def test_chunk_stats_weighs_data_chunks_only():
    calls = []

    def weigh(block):
        calls.append(block.shape)
        return 2

    assert chunk_stats(np.arange(8, dtype=np.uint8).reshape(2, 2, 2), weigh) == (0.0, 7.0, "data", 2.0, None)
    assert chunk_stats(np.full((2, 2, 2), 9, np.uint8), weigh) == (9.0, 9.0, "constant", None, None)
    assert chunk_stats(np.zeros((2, 2, 2), np.uint8), weigh) == (0.0, 0.0, "fill", None, None)
    assert calls == [(2, 2, 2)]
    assert chunk_stats(np.arange(8, dtype=np.uint8).reshape(2, 2, 2)) == (0.0, 7.0, "data", None, None)


def test_plan_value_range_and_peak(em):
    plan = plan_in_process(volume(em, "dcf"), CHUNK)
    assert (plan.vmin, plan.vmax) == (0.0, float(max(em[:, :64, :64].max(), 77)))  # the fill chunk's 0
    assert plan.peak == plan.vmax - plan.vmin and plan.raw_bytes == 16 * 64 * 192
    flat = plan_in_process(np.full((4, 8, 8), 9, np.int16), (4, 8, 8))
    assert (flat.vmin, flat.vmax, flat.peak) == (9.0, 9.0, 1.0)  # a constant volume: PSNR peak 1
    empty = plan_from_stats((2, 2, 2), (2, 2, 2), np.dtype("f4"), list(chunk_grid((2, 2, 2), (2, 2, 2))),
                            [(math.inf, -math.inf, "data")])
    assert (empty.vmin, empty.vmax) == (0.0, 0.0)  # all NaN: no finite value anywhere


def test_chunk_grid_covers_the_volume_with_clipped_edge_chunks():
    items = list(chunk_grid((5, 7, 3), (2, 4, 3)))
    assert [it.coords for it in items][:3] == [(0, 0, 0), (0, 1, 0), (1, 0, 0)]
    assert len(items) == 3 * 2 * 1
    assert items[-1].slices == (slice(4, 5), slice(4, 7), slice(0, 3)) and items[-1].valid_shape == (1, 3, 3)
    covered = np.zeros((5, 7, 3), int)
    for it in items:
        covered[it.slices] += 1
    assert (covered == 1).all()


def test_sample_items_are_data_chunks_drawn_reproducibly(em):
    plan = plan_in_process(volume(em, "dcfdcfdd"), CHUNK)
    data = [it for it in plan.items if it.kind == "data"]
    picked = sample_items(plan, count=3, seed=1)
    assert len(picked) == 3 and all(it.kind == "data" for it in picked)
    assert [it.coords for it in picked] == sorted(it.coords for it in picked)  # in grid order
    assert sample_items(plan, count=3, seed=1) == picked
    assert sample_items(plan, count=99) == data  # never more than there are
    fills = plan_in_process(np.zeros((4, 8, 8), np.uint8), (4, 8, 8))
    assert sample_items(fills) == []


def test_parse_chunks():
    defaults = {3: (16, 64, 64), 4: (4, 16, 32, 32)}
    assert parse_chunks("8,32,32", (16, 64, 64), defaults) == (8, 32, 32)
    assert parse_chunks((8, 100, 32), (16, 64, 64), defaults) == (8, 64, 32)  # clipped to the array
    assert parse_chunks(None, (10, 100, 100), defaults) == (10, 64, 64)
    assert parse_chunks(None, (2, 3, 4, 5, 6), defaults) == (2, 3, 4, 5, 6)  # (64,) * ndim, clipped
    with pytest.raises(InputError, match="comma-separated integers"):
        parse_chunks("8x32x32", (16, 64, 64), defaults)
    with pytest.raises(InputError, match="one entry per axis"):
        parse_chunks("8,32", (16, 64, 64), defaults)
    with pytest.raises(InputError, match="must be positive"):
        parse_chunks((8, 0, 32), (16, 64, 64), defaults)


def test_plan_columns_are_17_bytes_a_chunk_and_views_match_the_grid():
    big = Plan((1024, 16384, 16384), (16, 128, 128), np.dtype("u1"))  # a 256 GiB volume, 1M chunks
    assert big.size == 2**20
    assert big.kinds.nbytes + big.weights.nbytes + big.budgets.nbytes == 17 * big.size
    assign_budgets(big, 50, 10_000, 64)
    assert big.count("data") == big.size and big.budgets.min() > 0
    assert big.item(5).coords == (0, 0, 5) and big.item(big.size - 1).slices[0] == slice(1008, 1024)
    small = Plan((5, 7, 3), (2, 4, 3), np.dtype("u1"))
    grid = list(chunk_grid((5, 7, 3), (2, 4, 3)))
    assert [(it.coords, it.slices) for it in small.items] == [(it.coords, it.slices) for it in grid]
    assert list(small.voxels(np.arange(small.size))) == [it.voxels for it in grid]
    with pytest.raises(IndexError):
        small.item(small.size)


@pytest.mark.parametrize("curves", [False, True])
def test_a_plan_past_the_spill_size_lives_in_a_temp_file_and_plans_the_same(monkeypatch, em, curves):
    rates = method_class("wavelet")().rate_curve if curves else None
    stats = [chunk_stats(em[it.slices], None, rates) for it in chunk_grid(em.shape, (8, 32, 32))]
    items = list(chunk_grid(em.shape, (8, 32, 32)))
    in_memory = plan_from_stats(em.shape, (8, 32, 32), em.dtype, items, stats)
    monkeypatch.setattr(planner, "SPILL_BYTES", 0)
    spilled = plan_from_stats(em.shape, (8, 32, 32), em.dtype, items, stats)
    assert isinstance(spilled.budgets, np.memmap) and not isinstance(in_memory.budgets, np.memmap)
    assert (spilled.rates is not None) == curves and (not curves or isinstance(spilled.rates, np.memmap))
    for plan in (in_memory, spilled):
        assign_budgets(plan, 10, 500, 64)
    assert np.array_equal(in_memory.budgets, spilled.budgets) and (in_memory.vmin, in_memory.vmax) == (
        spilled.vmin, spilled.vmax)
    assert (len(np.unique(in_memory.budgets)) > 1) == curves  # EM's chunks differ in detail


def curved_plan(ranges: list[float], curves: list[np.ndarray]):
    """A plan of equal 16x64x64 uint16 data chunks with value ranges [0, r] and the given rate curves."""
    shape = (16, 64, 64 * len(ranges))
    items = list(chunk_grid(shape, CHUNK))
    stats = [(0.0, r, "data", None, c) for r, c in zip(ranges, curves, strict=True)]
    return plan_from_stats(shape, CHUNK, np.dtype("u2"), items, stats)


def test_rate_curves_give_every_chunk_its_bytes_at_one_step_of_the_arrays_units():
    # Both chunks cost 1000 bytes per halving of the step in their own normalized units, but the
    # second spans four times the values: at any one step in the data's units its normalized step
    # is two halvings finer, so it gets 2000 bytes more, whatever the total.
    line = 1000.0 * (planner.RATE_LOG2_STEPS[-1] - planner.RATE_LOG2_STEPS)
    plan = curved_plan([1000.0, 4000.0], [line, line])
    for ratio in (8, 20):
        assign_budgets(plan, ratio, 1000, 64)
        first, second = budgets(plan)
        assert abs(second - first - 2000) <= 2  # each share is rounded down
        assert 0 <= plan.raw_bytes // ratio - 1000 - (first + second) <= 2
    # A chunk that codes to nothing at that step is left the floor, not a voxel share.
    plan = curved_plan([1000.0, 1000.0], [line, np.zeros_like(line)])
    assign_budgets(plan, 20, 1000, 64)
    assert budgets(plan)[1] == FRAMED + 64


def test_equal_step_sizes_extend_curves_past_their_finest_step_and_hold_them_past_the_coarsest():
    line = 100.0 * (planner.RATE_LOG2_STEPS[-1] - planner.RATE_LOG2_STEPS)
    rates, offsets = np.stack([line, 3 * line]).astype(np.float32), np.zeros(2, np.float32)
    finest = float(line[0])
    # Beyond the finest step the curves keep their last slope: 100 and 300 bytes per halving.
    sizes = planner.equal_step_sizes(rates, offsets, 4 * finest + 400 * 5)
    np.testing.assert_allclose(sizes, [finest + 500, 3 * finest + 1500], rtol=1e-6)
    # Less than the coarsest step codes to: that step's sizes (here nothing), never negative.
    np.testing.assert_array_equal(planner.equal_step_sizes(rates, offsets, 0.0), [0.0, 0.0])


def test_chunk_stats_refuses_a_rate_curve_of_the_wrong_length():
    block = np.arange(64, dtype=np.uint8).reshape(4, 4, 4)
    with pytest.raises(ValueError, match="rate curve"):
        chunk_stats(block, rates=lambda b: np.ones(3))
    *_, kind, _, curve = chunk_stats(block, rates=lambda b: np.ones(len(planner.RATE_LOG2_STEPS)))
    assert kind == "data" and curve.shape == planner.RATE_LOG2_STEPS.shape
    assert chunk_stats(np.zeros((4, 4, 4), np.uint8), rates=lambda b: 1 / 0)[4] is None  # fill: not asked
