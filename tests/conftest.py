"""Shared fixtures: small crops of the real volumes in ../shared/data (and the bundled sample)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("STREAMCOMP_DATA", ROOT.parent / "shared" / "data"))
SAMPLE = ROOT / "examples" / "em_isbi2012_crop_30x256x256_u8.npy"
FAST = {"steps": 15, "batch": 4096}

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# Ray 2.60 heads use token auth, and Ray reads this once per process: set it before any test
# touches Ray in-process, so job clients and embedded instances agree for the whole session.
os.environ.setdefault("RAY_AUTH_MODE", "token")


def real_volume(name: str) -> np.ndarray:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"real data {path} is missing (set STREAMCOMP_DATA to the shared data folder)")
    return np.load(path, mmap_mode="r")


@pytest.fixture(scope="session")
def em() -> np.ndarray:
    """Real EM crop, 16x128x128 uint8, from the bundled sample."""
    return np.ascontiguousarray(np.load(SAMPLE, mmap_mode="r")[:16, 64:192, 64:192])


@pytest.fixture(scope="session")
def ct() -> np.ndarray:
    """Real head CT crop in HU, 16x64x64 int16."""
    return np.ascontiguousarray(real_volume("ct_head_invesalius_cranium_108x256x256_i16.npy")[40:56, 96:160, 96:160])


@pytest.fixture(scope="session")
def mri4d() -> np.ndarray:
    """Real 4D diffusion MRI crop, 4x8x32x32 uint16."""
    return np.ascontiguousarray(real_volume("mri4d_dwi_toshiba_13x40x64x64_u16.npy")[:4, 16:24, 16:48, 16:48])


@pytest.fixture
def save(tmp_path):
    def _save(array: np.ndarray, name: str = "vol.npy") -> str:
        path = tmp_path / name
        np.save(path, array)
        return str(path)

    return _save


def run_fresh_python(code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run code in a new interpreter (which never imports streamcomp unless the code does)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)


# Real servers (a local Ray head, a moto S3 server), session-wide: see tests/servers.py.
from servers import ray_head, s3_server  # noqa: E402, F401
