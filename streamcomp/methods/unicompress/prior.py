"""Wavelet frequency prior (UniCompress eq. 2): low-, high-frequency and raw components of blocks.

A one-level 3D wavelet transform over the last three axes (batched, pywavelets), reconstructed
from the approximation alone gives the low-pass component; the raw block minus it is the
high-pass component. Both stay at full resolution, voxel-aligned with the raw block, so the same
feature extractor reads all three.
"""

from __future__ import annotations

import numpy as np
import pywt


def wavelet_components(blocks: np.ndarray, wavelet: str = "haar") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(low, high, raw)`` for blocks of shape (..., z, y, x) with even spatial sizes."""
    raw = np.asarray(blocks, dtype=np.float32)
    axes = (-3, -2, -1)
    coeffs = pywt.dwtn(raw, wavelet, axes=axes)
    approx_only = {k: (v if k == "aaa" else np.zeros_like(v)) for k, v in coeffs.items()}
    low = pywt.idwtn(approx_only, wavelet, axes=axes)[..., : raw.shape[-3], : raw.shape[-2], : raw.shape[-1]]
    low = low.astype(np.float32)
    return low, raw - low, raw
