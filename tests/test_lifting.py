"""The symmetric-extension CDF 9/7 transform: exact inverse, pywt's filters, no wrap-around edge."""

import numpy as np
import pytest
import pywt

from streamcomp.coding import directions, lifting
from streamcomp.coding.directions import Directions
from streamcomp.coding.lifting import INTEGER, Steer, Steering, band_shapes, wavedec, waverec
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
    """Random offsets for every sample of every steered pass (blocks of one sample), the same going
    forward and back."""

    def _steer(self, level: int, ax: int, shape: tuple[int, ...], split: int | None):
        if ax < len(shape) - 2 or shape[0] < 2:
            return None
        rng = np.random.default_rng(17 * level + ax)
        original = (*shape[1 : ax + 1], shape[0], *shape[ax + 1 :])
        offsets = rng.integers(-2, 3, original) * (rng.random(original) < 0.6)
        view = (int(np.prod(original[:ax])), original[ax], int(np.prod(original[ax + 1 :])))
        return Steer(offsets.astype(np.int8).reshape(view), 1, split)

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


def _segment_bounds(n: int, split: int | None) -> tuple[np.ndarray, np.ndarray]:
    column = np.arange(n)
    if split is None:
        return np.zeros(n, int), np.full(n, n - 1)
    return np.where(column < split, 0, split), np.where(column < split, split - 1, n - 1)


def _taken(rows: np.ndarray, offsets: np.ndarray, split: int | None) -> np.ndarray:
    """``rows`` (steered axis last) read ``offsets`` along it, clamped to each sample's half."""
    first, last = _segment_bounds(rows.shape[-1], split)
    index = np.clip(np.arange(rows.shape[-1]) + offsets, first, last)
    return np.take_along_axis(rows, np.broadcast_to(index, rows.shape), axis=-1)


def _reference_steered(v: np.ndarray, offsets: np.ndarray, split: int | None) -> np.ndarray:
    """The steered CDF 9/7 level as numpy steps (the moved layout: the pass's axis first, the
    steered axis last; ``offsets`` per sample), low rows then high: the compiled pass's oracle."""
    s, d = v[0::2].copy(), v[1::2].copy()
    m, nd = len(s), len(d)
    on_high, on_low = offsets[1::2], offsets[0::2]
    for i, step in enumerate(lifting._STEPS):
        if i % 2 == 0:  # high row k from low rows k and k + 1
            following = s[np.minimum(np.arange(nd) + 1, m - 1)]
            d += step * (_taken(s[:nd], on_high, split) + _taken(following, -on_high, split))
        else:  # low row k from high rows k - 1 and k
            before, after = d[np.maximum(np.arange(m) - 1, 0)], d[np.minimum(np.arange(m), nd - 1)]
            s += step * (_taken(before, on_low, split) + _taken(after, -on_low, split))
    return np.concatenate([s * lifting._SCALES[0], d * lifting._SCALES[1]])


@pytest.mark.parametrize(("shape", "ax"), [((9, 20, 24), 0), ((9, 20, 24), 1), ((9, 20, 24), 2), ((3, 6, 18, 21), 3)])
@pytest.mark.parametrize("split", [None, 1, 7])
def test_steered_passes_are_the_numpy_lifting_bit_for_bit(shape, ax, split):
    """The compiled steered pass (and its inverse) computes what the lifting steps written in numpy
    compute, float32 operation for operation, clamped inside each half of the steered axis."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(np.float32)
    offsets = (rng.integers(-2, 3, shape) * (rng.random(shape) < 0.6)).astype(np.int8)
    view = (int(np.prod(shape[:ax])), shape[ax], int(np.prod(shape[ax + 1 :])))
    steer = Steer(offsets.reshape(view), 1, split)
    out = np.empty_like(x)
    lifting._steered(x, out, ax, steer, False)
    steered_axis = len(shape) - 2 if ax == len(shape) - 1 else len(shape) - 1
    moved = (ax, *[a for a in range(len(shape)) if a not in (ax, steered_axis)], steered_axis)
    expected = _reference_steered(np.transpose(x, moved), np.transpose(offsets, moved).astype(np.int64), split)
    assert np.array_equal(np.transpose(out, moved), expected)
    back = np.empty_like(x)
    lifting._steered(out, back, ax, steer, True)
    np.testing.assert_allclose(back, x, atol=2e-5)


def _reference_costs(a: np.ndarray, ax: int, split: int | None) -> np.ndarray:
    """What each direction leaves over the blocks of a pass's grid, in numpy."""
    v = np.moveaxis(a, ax, 0)
    s, d = v[0::2], v[1::2]
    nd = len(d)
    following = s[np.minimum(np.arange(nd) + 1, len(s) - 1)]
    grid = directions._grid_shape(v.shape)
    sizes = (directions.BLOCK // 2, *[directions.BLOCK] * (v.ndim - 1))
    out = []
    for offset in directions.DIRECTIONS.tolist():
        left = np.abs(d - np.float32(0.5) * (_taken(s[:nd], offset, split) + _taken(following, -offset, split)))
        padded = np.pad(left.astype(np.float64), [(0, g * b - n) for g, b, n in zip(grid, sizes, d.shape, strict=True)])
        split_shape = [x for g, b in zip(grid, sizes, strict=True) for x in (g, b)]
        out.append(padded.reshape(split_shape).sum(axis=tuple(range(1, 2 * len(grid), 2))))
    return np.stack(out)


@pytest.mark.parametrize(
    ("shape", "ax"), [((17, 20, 40), 0), ((17, 20, 40), 1), ((16, 40, 23), 2), ((3, 6, 18, 21), 3)]
)
@pytest.mark.parametrize("split", [None, 0, 1, 9])
def test_the_direction_search_scores_what_the_steered_predict_leaves(shape, ax, split):
    """The compiled search's block sums equal numpy's, edge blocks (fewer rows or columns, even
    none) and segments shorter than a shift included; and its blocks hold the samples
    :func:`directions._block_counts` says."""
    a = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
    steered_axis = len(shape) - 2 if ax == len(shape) - 1 else len(shape) - 1
    if split is not None and split > shape[steered_axis]:
        return
    costs = directions._direction_costs(a, ax, split)
    np.testing.assert_allclose(costs, _reference_costs(a, ax, split), rtol=1e-5)
    moved = np.moveaxis(a, ax, 0).shape
    high = (moved[0] // 2, *moved[1:])
    parity = (np.arange(shape[ax]) % 2).astype(np.float32).reshape(-1, *[1] * (len(shape) - 1 - ax))
    odd = np.broadcast_to(parity, shape)
    ones = directions._direction_costs(np.ascontiguousarray(odd), ax, split)  # each high sample leaves 1
    assert np.array_equal(directions._block_counts(high, directions._grid_shape(moved)), ones[directions.STRAIGHT])
