"""The symmetric-extension CDF 9/7 transform: exact inverse, pywt's filters, no wrap-around edge."""

import numpy as np
import pytest
import pywt

from streamcomp.coding.lifting import INTEGER, band_shapes, wavedec, waverec


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
