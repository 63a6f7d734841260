"""Quality and rate metrics, defined once for the CLI, the jobs, the tests and the benchmarks.

PSNR uses the original's own dynamic range as peak (max - min), as the biomedical compression
papers do; SSIM is the 3D Gaussian-window SSIM over the same range.
"""

from __future__ import annotations

import numpy as np

from streamcomp.values import finite_range


def value_range(original: np.ndarray) -> float:
    """max - min over the finite values (1.0 for a constant or empty array, so PSNR stays finite)."""
    lo_hi = finite_range(original)
    return (lo_hi[1] - lo_hi[0]) or 1.0 if lo_hi is not None else 1.0


def mse(original: np.ndarray, decoded: np.ndarray) -> float:
    """Mean squared error over positions where the original is finite."""
    a = original.astype(np.float64)
    b = decoded.astype(np.float64)
    mask = np.isfinite(a)
    if not mask.all():
        a, b = a[mask], b[mask]
    if a.size == 0:
        return 0.0
    return float(np.mean((a - b) ** 2))


def psnr_from_mse(mse_value: float, peak: float) -> float:
    """PSNR in dB of a mean squared error at ``peak``; inf for exact data."""
    return float("inf") if mse_value == 0 else float(10 * np.log10(peak**2 / mse_value))


def psnr(original: np.ndarray, decoded: np.ndarray, peak: float | None = None) -> float:
    """PSNR in dB with peak = max - min of the original unless given; inf for exact data."""
    return psnr_from_mse(mse(original, decoded), value_range(original) if peak is None else peak)


def ssim(original: np.ndarray, decoded: np.ndarray, peak: float | None = None, sigma: float = 1.5) -> float:
    """Mean structural similarity with a Gaussian window over every axis (3D SSIM for volumes)."""
    from scipy.ndimage import gaussian_filter  # here, not at the top: decoders import this module (0.4 s)

    peak = value_range(original) if peak is None else peak
    a = np.nan_to_num(original.astype(np.float64))
    b = np.nan_to_num(decoded.astype(np.float64))
    c1 = (0.01 * peak) ** 2
    c2 = (0.03 * peak) ** 2
    mu_a = gaussian_filter(a, sigma)
    mu_b = gaussian_filter(b, sigma)
    var_a = gaussian_filter(a * a, sigma) - mu_a**2
    var_b = gaussian_filter(b * b, sigma) - mu_b**2
    cov = gaussian_filter(a * b, sigma) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


def ratio(raw_bytes: int, stored_bytes: int) -> float:
    """Compression ratio: raw bytes over every stored byte (chunks and metadata)."""
    return raw_bytes / max(stored_bytes, 1)


def bits_per_voxel(stored_bytes: int, voxels: int) -> float:
    return 8.0 * stored_bytes / max(voxels, 1)
