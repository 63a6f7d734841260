"""Shared fixtures: small real crops shipped in tests/data and the bundled EM sample, plus the
session-wide real servers of tests/servers.py. Shared non-fixture code is in tests/helpers.py."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
from helpers import SAMPLE, load_data

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# Ray 2.60 heads use token auth, and Ray reads this once per process: set it before any test
# touches Ray in-process, so job clients and embedded instances agree for the whole session.
os.environ.setdefault("RAY_AUTH_MODE", "token")


@pytest.fixture(scope="session")
def em() -> np.ndarray:
    """Real EM crop, 16x128x128 uint8, from the bundled sample."""
    return np.ascontiguousarray(np.load(SAMPLE, mmap_mode="r")[:16, 64:192, 64:192])


@pytest.fixture(scope="session")
def ct() -> np.ndarray:
    """Real head CT crop in HU, 16x64x64 int16 (InVesalius cranium [40:56, 96:160, 96:160])."""
    return load_data("ct_head_invesalius_16x64x64_i16.npy")


@pytest.fixture(scope="session")
def ct_large() -> np.ndarray:
    """Real head CT crop in HU, 32x128x128 int16 (InVesalius cranium [40:72, 64:192, 64:192])."""
    return load_data("ct_head_invesalius_32x128x128_i16.npy")


@pytest.fixture(scope="session")
def mri4d_crop() -> np.ndarray:
    """Real 4D diffusion MRI crop as shipped, 4x20x32x32 uint16 (dcm_qa_toshiba [:4, 12:32, 16:48, 16:48])."""
    return load_data("mri4d_dwi_toshiba_4x20x32x32_u16.npy")


@pytest.fixture(scope="session")
def mri4d(mri4d_crop) -> np.ndarray:
    """Real 4D diffusion MRI crop, 4x8x32x32 uint16 (dcm_qa_toshiba [:4, 16:24, 16:48, 16:48])."""
    return np.ascontiguousarray(mri4d_crop[:, 4:12])


@pytest.fixture(autouse=True)
def _streamcomp_logging_restored():
    """The CLI's main() configures the ``streamcomp`` logger (own handler, no propagation): undo
    that after each test, so a later test's ``caplog`` still sees the library's records."""
    logger = logging.getLogger("streamcomp")
    saved = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers[:] = saved[0]
    logger.level, logger.propagate = saved[1], saved[2]


@pytest.fixture
def save(tmp_path):
    def _save(array: np.ndarray, name: str = "vol.npy") -> str:
        path = tmp_path / name
        np.save(path, array)
        return str(path)

    return _save


# Real servers (a local Ray head, a moto S3 server), session-wide: see tests/servers.py.
from servers import ray_head, s3_server  # noqa: E402, F401
