import numpy as np
import pytest

from streamcomp.coding.entropy import decode_ints, encode_ints
from streamcomp.coding.quant import pack_tensors, pack_to_budget, unpack_tensors


@pytest.mark.parametrize("scale", [0.0, 0.3, 4.0, 300.0])
def test_entropy_round_trip(scale):
    rng = np.random.default_rng(1)
    symbols = np.round(rng.laplace(size=2000) * scale).astype(np.int32)
    assert np.array_equal(decode_ints(encode_ints(symbols), symbols.size), symbols)


def test_entropy_coder_beats_fixed_width():
    symbols = np.round(np.random.default_rng(2).normal(size=10000) * 3).astype(np.int32)
    assert len(encode_ints(symbols)) < symbols.size * 4 / 8  # well under 4 bits per symbol


def test_quantization_error_is_bounded_by_half_a_step():
    rng = np.random.default_rng(3)
    tensors = [rng.normal(size=(20, 7)).astype(np.float32) * s for s in (0.01, 1.0, 30.0)]
    out = unpack_tensors(pack_tensors(tensors, 2**-6), [t.shape for t in tensors])
    for t, u in zip(tensors, out, strict=True):
        assert np.abs(t - u).max() <= 0.51 * 2**-6 * t.std() * 1.01


def test_pack_to_budget_fills_but_never_exceeds():
    rng = np.random.default_rng(4)
    tensors = [rng.normal(size=(64, 64)).astype(np.float32), rng.normal(size=64).astype(np.float32)]
    for budget in (600, 2000, 3000):
        packed = pack_to_budget(tensors, budget)
        assert 0.97 * budget <= len(packed) <= budget
