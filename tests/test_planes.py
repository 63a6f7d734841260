"""Hybrid feature planes: plane scaling, and the method end to end on real 4D MRI and 3D CT crops
through compress / the CLI and plain zarr in a fresh process."""

import subprocess
import sys

import numpy as np
import pytest
import zarr
from helpers import local_stored_bytes, run_fresh_python

from streamcomp.api import compress
from streamcomp.errors import InputError
from streamcomp.metrics import psnr
from streamcomp.models.planes import HybridPlanes, plane_param_count, plane_resolution

FAST_PLANES = {"steps": 60, "batch": 4096}


def test_adaptive_plane_scaling_follows_resolution_and_budget():
    shape = (10, 30, 256, 256)
    res = plane_resolution(shape, 8, 60000)
    assert plane_param_count(res, 8) <= 60000
    assert plane_param_count(tuple(r + 1 for r in res), 8) > 60000  # the largest that fits
    ratios = np.array(res[1:]) / np.array(shape[1:])
    assert ratios.max() / ratios.min() < 1.15  # l_i / U = R_i / V (eq. 3), up to rounding
    eq = plane_resolution(shape, 8, 60000, "equal")
    assert eq[:2] == (10, 30) and eq[2] == eq[3] > 30  # equal sizes, capped at the volume's own
    assert plane_resolution((4, 8, 8), 8, 1e9) == (4, 8, 8)  # never finer than the data
    assert len(HybridPlanes((4, 8, 8, 8)).planes) == 6 and len(HybridPlanes((8, 8, 8)).planes) == 3


def check_fresh_read(dst, expected_path):
    code = (f"import zarr, numpy as np; a = zarr.open_array({str(dst)!r}, mode='r')[...]; "
            f"b = np.load({str(expected_path)!r}); print(a.dtype, a.ndim, bool(np.array_equal(a, b)))")
    proc = run_fresh_python(code)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_planes_4d_round_trip_ratio_and_fresh_zarr(save, tmp_path, mri4d):
    dst = tmp_path / "p4.zarr"
    compress(save(mri4d), str(dst), method="planes", ratio=12, chunks=(4, 8, 16, 32), method_params=FAST_PLANES,
             progress=False)
    assert abs(mri4d.nbytes / local_stored_bytes(dst) - 12) / 12 < 0.05
    here = zarr.open_array(str(dst), mode="r")[...]
    assert here.shape == mri4d.shape and zarr.open_array(str(dst), mode="r").chunks == (4, 8, 16, 32)
    np.save(tmp_path / "here.npy", here)
    assert check_fresh_read(dst, tmp_path / "here.npy") == ["uint16", "4", "True"]
    assert psnr(mri4d, here) > psnr(mri4d, np.full(mri4d.shape, mri4d.mean())) + 1


def test_planes_3d_ct_round_trip_zarr_v2(save, tmp_path, ct):
    dst = tmp_path / "p3.zarr"
    compress(save(ct), str(dst), method="planes", ratio=8, chunks=(16, 32, 32), zarr_format=2,
             method_params=FAST_PLANES, progress=False)
    assert abs(ct.nbytes / local_stored_bytes(dst) - 8) / 8 < 0.05
    here = zarr.open_array(str(dst), mode="r")[...]
    np.save(tmp_path / "here.npy", here)
    assert check_fresh_read(dst, tmp_path / "here.npy") == ["int16", "3", "True"]
    assert psnr(ct, here) > psnr(ct, np.full(ct.shape, ct.mean())) + 1


def test_cli_compresses_real_4d_mri_with_planes(tmp_path, mri4d_crop):
    vol = mri4d_crop  # 4x20x32x32: one default 4x16x32x32 chunk and an edge chunk 4 slices deep
    np.save(tmp_path / "mri.npy", vol)
    dst = tmp_path / "out.zarr"
    proc = subprocess.run([sys.executable, "-m", "streamcomp.cli", "compress", str(tmp_path / "mri.npy"), str(dst),
                           "--method", "planes", "--ratio", "32", "--params", '{"steps": 20, "batch": 4096}',
                           "--quiet"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = zarr.open_array(str(dst), mode="r")
    assert out.shape == vol.shape and out.chunks == (4, 16, 32, 32)  # the default 4D chunking
    assert abs(vol.nbytes / local_stored_bytes(dst) - 32) / 32 < 0.05


@pytest.mark.parametrize("method", ["nerf", "sci"])
def test_3d_only_methods_refuse_4d(save, tmp_path, mri4d, method):
    with pytest.raises(InputError, match="4 axes"):
        compress(save(mri4d), str(tmp_path / "x.zarr"), method=method, ratio=8, progress=False)
    assert not (tmp_path / "x.zarr").exists()
