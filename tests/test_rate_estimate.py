"""The scan's rate estimate and the budget split it drives, on real CT."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from streamcomp.api import compress
from streamcomp.coding.rate_estimate import rate_curve
from streamcomp.coding.residual import encode_residual, step_of
from streamcomp.metrics import psnr
from streamcomp.plan import RATE_LOG2_STEPS
from streamcomp.values import normalize


def test_the_estimate_falls_with_the_step_and_tracks_the_coders_bytes(ct_large):
    block = normalize(ct_large)[0]
    curve = rate_curve(block, RATE_LOG2_STEPS)
    assert np.all(np.diff(curve) <= 0) and curve[0] > curve[-1]
    for budget in (2048, 16384):
        data, _ = encode_residual(block, budget=budget)
        estimate = np.interp(step_of(data)[0], RATE_LOG2_STEPS, curve)
        # First-order entropy, without the coder's contexts: above its bytes, but not by much.
        assert 0.9 * len(data) < estimate < 2.5 * len(data)


def test_a_busier_chunk_is_estimated_to_need_more(ct_large):
    chunks = [normalize(ct_large[:, :64, x : x + 64])[0] for x in (0, 64)]
    curves = [rate_curve(c, RATE_LOG2_STEPS) for c in chunks]
    coded = [len(encode_residual(c, budget=None, max_mse=1e-4)[0]) for c in chunks]
    at_step = [np.interp(-6.0, RATE_LOG2_STEPS, c) for c in curves]
    assert (coded[0] < coded[1]) == (at_step[0] < at_step[1])


@pytest.mark.parametrize("ratio", [16, 64])
def test_one_step_across_chunks_decodes_closer_than_equal_bytes_per_voxel(ct_large, save, tmp_path, ratio):
    # Air and bone in one head CT crop: the same bytes per voxel wastes the air chunks' share.
    src, scores = save(ct_large, "ct.npy"), {}
    for allocation in ("rate", "voxels"):
        dst = str(tmp_path / f"{allocation}.zarr")
        params = {"allocation": allocation, "entropy": "context", "filter_channels": 0}
        result = compress(src, dst, ratio=ratio, chunks=(16, 64, 64), method_params=params, progress=False)
        assert abs(result.raw_bytes / result.stored_bytes / ratio - 1) < 0.05
        scores[allocation] = psnr(ct_large, zarr.open_array(dst, mode="r")[...])
    assert scores["rate"] > scores["voxels"] + 1.0
