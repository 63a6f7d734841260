"""Rate control, dtypes, edge/constant/fill chunks and non-finite values, end to end through zarr."""

import numpy as np
import pytest
import zarr
from helpers import FAST, local_stored_bytes

from streamcomp.api import compress
from streamcomp.metrics import psnr
from streamcomp.verify import evaluate


@pytest.mark.parametrize("method", ["siren", "nerf"])
@pytest.mark.parametrize("target", [6, 12])
def test_ratio_lands_within_5_percent_counting_metadata(save, tmp_path, em, method, target):
    dst = tmp_path / "out.zarr"
    result = compress(save(em), str(dst), method=method, ratio=target, chunks=(16, 64, 64),
                      method_params=FAST, progress=False)
    on_disk = local_stored_bytes(dst)
    assert result.stored_bytes == on_disk  # chunks and zarr.json, every byte
    # and that count is every file on disk: nothing under the output escapes it
    assert on_disk == sum(f.stat().st_size for f in dst.rglob("*") if f.is_file())
    achieved = em.nbytes / on_disk
    assert abs(achieved - target) / target < 0.05, achieved


@pytest.mark.parametrize("fixture", ["em", "ct", "mri_u16", "ct_f32"])
def test_each_dtype_round_trips(request, save, tmp_path, fixture):
    if fixture == "mri_u16":
        vol = request.getfixturevalue("mri4d")[1]
    elif fixture == "ct_f32":
        vol = request.getfixturevalue("ct").astype(np.float32) / 1000
    else:
        vol = request.getfixturevalue(fixture)
    dst = str(tmp_path / "out.zarr")
    compress(save(vol), dst, ratio=4, chunks=(8, 32, 32), method="siren", method_params={"steps": 60, "batch": 4096},
             progress=False)
    out = zarr.open_array(dst, mode="r")[...]
    assert out.dtype == vol.dtype and out.shape == vol.shape
    assert out.min() >= vol.min() and out.max() <= vol.max()
    mean_guess = np.full(vol.shape, vol.astype(np.float64).mean())
    assert psnr(vol, out) > psnr(vol, mean_guess) + 1


def test_edge_chunks_encode_only_their_valid_region(save, tmp_path, em):
    vol = np.ascontiguousarray(em[:11, :70, :45])  # no axis a multiple of the chunk shape
    dst = str(tmp_path / "edge.zarr")
    compress(save(vol), dst, ratio=6, chunks=(8, 32, 32), method="siren", method_params=FAST, progress=False)
    out = zarr.open_array(dst, mode="r")[...]
    assert out.shape == vol.shape
    q = evaluate(save(vol, "v2.npy"), dst)
    assert abs(q.ratio - 6) / 6 < 0.05
    assert psnr(vol[8:, 64:, 32:], out[8:, 64:, 32:]) > 8  # the smallest corner chunk decodes too


def test_constant_and_fill_chunks(save, tmp_path, em):
    vol = np.array(em[:16, :64, :128])
    vol[:, :, :64] = 0      # a fill-value chunk: not stored at all
    vol[:8, :32, 64:96] = 77  # a constant region
    vol2 = np.concatenate([vol, np.full((16, 64, 64), 200, np.uint8)], axis=2)  # a constant chunk
    dst = tmp_path / "c.zarr"
    compress(save(vol2), str(dst), ratio=4, chunks=(16, 64, 64), method="siren", method_params=FAST, progress=False)
    out = zarr.open_array(str(dst), mode="r")[...]
    assert not (dst / "c" / "0" / "0" / "0").exists()
    assert (out[:, :, :64] == 0).all()
    assert (out[:, :, 128:] == 200).all()
    assert (dst / "c" / "0" / "0" / "2").stat().st_size < 100


def test_float_nan_and_inf_survive(save, tmp_path, ct):
    vol = ct.astype(np.float32)
    vol[3, 5, 7] = np.nan
    vol[4, 10:20, 3] = np.nan
    vol[0, 0, 0] = np.inf
    vol[9, 9, 9] = -np.inf
    dst = str(tmp_path / "f.zarr")
    compress(save(vol), dst, ratio=4, chunks=(8, 32, 32), method="siren", method_params=FAST, progress=False)
    out = zarr.open_array(dst, mode="r")[...]
    assert np.array_equal(np.isnan(out), np.isnan(vol))
    assert out[0, 0, 0] == np.inf and out[9, 9, 9] == -np.inf
    assert np.isfinite(out[np.isfinite(vol)]).all()


def test_psnr_target_is_met(save, tmp_path, em):
    vol = np.ascontiguousarray(em[:8, :32, :32])
    dst = str(tmp_path / "q.zarr")
    compress(save(vol), dst, psnr=19, chunks=(8, 32, 32), method="siren", method_params={"steps": 80, "batch": 4096},
             progress=False)
    q = evaluate(save(vol, "o.npy"), dst)
    assert q.psnr >= 19


def test_in_process_runs_encode_on_threads_with_the_same_bytes(save, tmp_path, em):
    """The default method's chunks are coded on a thread per core in-process, byte for byte as on
    one; a method that seeds torch per chunk keeps one thread."""
    src, arrays = save(em), []
    for threads in (1, 2):
        dst = tmp_path / f"t{threads}.zarr"
        result = compress(src, str(dst), ratio=8, chunks=(16, 32, 64), executor="local", workers=threads,
                          method_params={"filter_channels": 0}, progress=False)
        assert result.run["workers"] == threads
        arrays.append({p.relative_to(dst): p.read_bytes() for p in (dst / "c").rglob("*") if p.is_file()})
    assert len(arrays[0]) == 8 and arrays[0] == arrays[1]
    result = compress(src, str(tmp_path / "siren.zarr"), method="siren", ratio=8, chunks=(16, 64, 64),
                      executor="local", method_params=FAST, progress=False)
    assert result.run["workers"] == 1
