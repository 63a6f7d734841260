"""The symmetric-extension CDF 9/7 transform: exact inverse, pywt's filters, no wrap-around edge."""

import numpy as np
import pytest
import pywt

from streamcomp.coding import directions, lifting
from streamcomp.coding.directions import Directions
from streamcomp.coding.lifting import INTEGER, Shifts, Steering, band_shapes, wavedec, waverec
from streamcomp.errors import ChunkFormatError


@pytest.mark.parametrize(
    ("shape", "levels", "axes"),
    [
        ((16, 64, 64), 3, (0, 1, 2)),
        ((5, 17, 6), 1, (0, 1, 2)),
        ((3, 22, 13), 2, (1, 2)),
        ((4, 8, 8, 8), 2, (0, 1, 2, 3)),
        ((1, 1, 2), 1, (0, 1, 2)),
    ],
)
def test_inverse_is_exact_and_shapes_are_predicted(shape, levels, axes):
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    bands = wavedec(x, levels, axes)
    assert [b.shape for b in bands] == band_shapes(shape, levels, axes)
    assert sum(b.size for b in bands) == x.size  # non-expansive, odd lengths included
    assert np.allclose(waverec(bands, shape, levels, axes), x, atol=1e-5)


@pytest.mark.parametrize("integer", sorted(INTEGER))
@pytest.mark.parametrize("shape", [(1,), (2,), (3,), (5,), (8,), (9,), (16, 3), (5, 17, 3), (33, 20, 9)])
def test_integer_transforms_map_integers_back_exactly(integer, shape):
    x = np.random.default_rng(1).integers(-3000, 3000, shape).astype(np.int32)
    axes = tuple(range(len(shape)))
    levels = 2 if min(shape) >= 4 else 1
    bands = wavedec(x, levels, axes, integer)
    assert [b.shape for b in bands] == band_shapes(shape, levels, axes)
    assert all(b.dtype == np.int32 for b in bands)
    assert np.array_equal(waverec(bands, shape, levels, axes, integer), x)


@pytest.mark.parametrize(
    ("integer", "expected"),
    [
        ("5/3", [[-10, 4, 4], [-4, -11, 0], [-1, -1, -1, 8, -1]]),
        ("9/7-M", [[-9, 3, 4], [-3, -12, -1], [0, -2, -1, 8, -2]]),
    ],
)
def test_integer_coefficients_are_pinned(integer, expected):
    """Lossless arrays decode through these exact values: a faster transform must give the same."""
    x = (np.arange(11) ** 2 % 17 - 8).astype(np.int32)
    assert [b.tolist() for b in wavedec(x, 2, (0,), integer)] == expected
    plane = ((np.arange(30).reshape(3, 10) ** 2) % 23 - 11).astype(np.int32)
    for ax in (0, 1):  # a moved view along either axis transforms like a contiguous copy of it
        moved = np.moveaxis(plane, ax, 0)
        assert np.array_equal(
            waverec(wavedec(moved, 1, (0, 1), integer), moved.shape, 1, (0, 1), integer), moved
        )
        assert all(
            np.array_equal(a, b)
            for a, b in zip(
                wavedec(moved, 1, (0, 1), integer),
                wavedec(np.ascontiguousarray(moved), 1, (0, 1), integer),
                strict=True,
            )
        )


def test_interior_coefficients_are_pywts_bior44():
    """Same filters and scale as pywt's bior4.4 (so one quantizer step suits every band); only the
    border differs, and the high band's sign."""
    x = np.random.default_rng(1).normal(size=64).astype(np.float32)
    low, high = wavedec(x, 1, (0,))
    ref_low, ref_high = pywt.dwt(x, "bior4.4", mode="periodization")
    assert np.allclose(low[8:24], ref_low[8:24], atol=1e-5)
    assert np.allclose(high[8:24], -ref_high[8:24], atol=1e-5)


def test_chunk_faces_are_mirrored_not_wrapped():
    """A ramp across the chunk: wrapped, its two faces meet in a jump whose ringing fills the fine
    band; mirrored, only a kink remains."""
    ramp = np.repeat(np.linspace(0.0, 1.0, 32, dtype=np.float32)[:, None], 8, axis=1)
    mirrored = wavedec(ramp, 1, (0,))[1]
    wrapped = pywt.wavedecn(ramp, "bior4.4", mode="periodization", level=1, axes=(0,))[1]["d"]
    assert float(np.sum(mirrored**2)) < 0.01 * float(np.sum(wrapped**2))


class _RandomSteering(Steering):
    """Random offsets on every steered pass, the same going forward and back."""

    def _steer(self, level: int, ax: int, shape: tuple[int, ...], split: int | None):
        if ax < len(shape) - 2 or shape[0] < 2:
            return None
        rng = np.random.default_rng(17 * level + ax)
        n = shape[0] // 2
        rows = [rng.integers(-2, 3, (k, *shape[1:])) * (rng.random((k, *shape[1:])) < 0.6) for k in (n, shape[0] - n)]
        return Shifts.of(rows[0], split), Shifts.of(rows[1], split), split

    def forward(self, level, ax, v, split):
        return self._steer(level, ax, v.shape, split)

    def inverse(self, level, ax, shape, split):
        return self._steer(level, ax, shape, split)


@pytest.mark.parametrize(
    ("shape", "axes"),
    [((16, 33, 17), (0, 1, 2)), ((1, 64, 64), (1, 2)), ((9, 20, 24), (1, 2)), ((3, 6, 18, 20), (1, 2, 3))],
)
def test_steered_passes_invert_exactly_whatever_the_offsets(shape, axes):
    """Any offsets, clamped inside each half of an axis an earlier pass split, keep the lifting
    invertible: the inverse (on the non-contiguous views it gets) undoes the forward."""
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    levels = 2
    bands = wavedec(x, levels, axes, steering=_RandomSteering())
    assert [b.shape for b in bands] == band_shapes(shape, levels, axes)
    assert not np.allclose(bands[-1], wavedec(x, levels, axes)[-1])  # the offsets did steer
    np.testing.assert_allclose(waverec(bands, shape, levels, axes, steering=_RandomSteering()), x, atol=2e-5)


def test_directions_follow_an_oblique_edge_and_leave_noise_straight():
    """A ramp along x + y codes with (near) zero high-pass once its y passes are steered; on noise
    a direction rarely beats straight by the margin (straight, the commonest code, costs least)."""
    z, y, x = np.meshgrid(np.arange(8), np.arange(64), np.arange(64), indexing="ij")
    edge = (np.sin(0.7 * (x + y)) + 0.01 * z).astype(np.float32)
    steered, plain = Directions(3, (0, 1, 2)), wavedec(edge, 1, (0, 1, 2))
    bands = wavedec(edge, 1, (0, 1, 2), steering=steered)
    assert steered.steers()
    assert np.abs(bands[-1]).sum() < 0.2 * np.abs(plain[-1]).sum()  # the finest d-d-d band
    again = Directions.from_bytes(steered.to_bytes(), edge.shape, 1, (0, 1, 2))
    np.testing.assert_allclose(waverec(bands, edge.shape, 1, (0, 1, 2), steering=again), edge, atol=2e-5)
    noise = np.random.default_rng(1).standard_normal((8, 64, 64)).astype(np.float32)
    quiet = Directions(3, (0, 1, 2))
    wavedec(noise, 2, (0, 1, 2), steering=quiet)
    finest = np.concatenate([g.reshape(-1) for (level, _), g in quiet.grids.items() if level == 0])
    assert (finest != 2).mean() < 0.1  # (the coarser level's input is low-passed noise: structured)
    with pytest.raises(ChunkFormatError):
        Directions.from_bytes(steered.to_bytes()[:-4], edge.shape, 1, (0, 1, 2))
    with pytest.raises(ChunkFormatError, match="blocks"):
        Directions.from_bytes(steered.to_bytes(), (8, 32, 64), 1, (0, 1, 2))
    with pytest.raises(ChunkFormatError, match="blocks"):  # a transform with no steered pass
        Directions.from_bytes(steered.to_bytes(), (1, 1, 1), 1, ())


@pytest.mark.parametrize("rows", [1, 16, 17, 44, 64])
def test_block_counts_are_the_block_sums_of_ones(rows):
    """The direction search's samples per block, counted, equal summing ones over each block,
    edge blocks (fewer rows or columns, even none) included."""
    high = (rows // 2, 23, 40)
    grid = directions._grid_shape((rows, *high[1:]))
    counts = directions._block_counts(high, grid)
    assert np.array_equal(counts, directions._block_sums(np.ones(high, np.float32), grid))


@pytest.mark.parametrize("split", [None, 0, 1, 3, 9, 10])
def test_the_direction_search_shifts_rows_as_the_steered_lifting_does(split):
    """The search's shifted sums (views into rows padded by their end samples) equal the lifting's
    steered sums for every direction, bit for bit, with segments shorter than a shift included."""
    rng = np.random.default_rng(0)
    before, after = (np.moveaxis(rng.normal(size=(5, 10, 6)).astype(np.float32), 2, 0)[..., ::-1] for _ in range(2))
    padded = [directions._edge_padded(a, split) for a in (before, after)]
    for offset in directions.DIRECTIONS.tolist():
        out = np.empty_like(before)
        directions._shifted_sum(*padded, offset, split, out)
        expected = lifting._steered_sum(before, after, offset, split)
        assert np.array_equal(out, expected), offset
