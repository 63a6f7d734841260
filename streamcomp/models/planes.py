"""Hybrid feature-plane representation (Zheng et al., "Hybrid Representation for 4D Medical Image
Compression"): one learnable 2D feature plane per pair of axes, bilinear sampling, element-wise
product of the plane features (eq. 1) and a tiny two-layer MLP decoder.

4D (t, z, y, x): six planes (the paper's xy, xz, yz, xt, yt, zt); 3D (z, y, x): three (tri-plane).
Plane sizes come from :func:`plane_resolution` (adaptive plane scaling, eq. 2-3: each axis of the
planes proportional to the volume's resolution on that axis, scaled so the planes hold the
parameter budget), or all equal for the ablation.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn


def plane_pairs(ndim: int) -> list[tuple[int, int]]:
    return list(itertools.combinations(range(ndim), 2))


def plane_param_count(res: tuple[int, ...], features: int) -> int:
    return features * sum(res[a] * res[b] for a, b in plane_pairs(len(res)))


def decoder_param_count(features: int, hidden: int) -> int:
    return (features + 1) * hidden + hidden + 1


def plane_resolution(
    shape: tuple[int, ...], features: int, n_params: float, scaling: str = "adaptive"
) -> tuple[int, ...]:
    """Per-axis plane resolution ``l_i``: ``l_i ∝ R_i`` (``adaptive``, eq. 3) or equal for every
    axis (``equal``), never above the volume's own resolution nor below 2, with the largest scale
    whose planes hold at most ``n_params`` values (eq. 2). Bisection on the common scale."""
    base = [float(n) for n in shape] if scaling == "adaptive" else [1.0] * len(shape)
    if scaling not in ("adaptive", "equal"):
        raise ValueError(f"plane scaling must be 'adaptive' or 'equal', got {scaling!r}")

    def res_at(s: float) -> tuple[int, ...]:
        return tuple(max(min(2, n), min(n, round(s * b))) for n, b in zip(shape, base, strict=True))

    lo, hi = 0.0, max(shape) / min(base) + 1
    if plane_param_count(res_at(hi), features) <= n_params:
        return res_at(hi)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if plane_param_count(res_at(mid), features) <= n_params:
            lo = mid
        else:
            hi = mid
    return res_at(lo)


class HybridPlanes(nn.Module):
    """Coordinates in [-1, 1]^d -> one value, through ``d (d - 1) / 2`` feature planes."""

    def __init__(self, res: tuple[int, ...], features: int = 8, hidden: int = 16) -> None:
        super().__init__()
        self.res = tuple(int(r) for r in res)
        self.pairs = plane_pairs(len(res))
        self.features = features
        # Multiplicative aggregation: planes start near 1 so the product starts near 1 (K-planes
        # initialises its time planes the same way); a small spread breaks the symmetry.
        self.planes = nn.ParameterList(
            nn.Parameter(1.0 + 0.1 * (2 * torch.rand(1, features, self.res[a], self.res[b]) - 1))
            for a, b in self.pairs
        )
        self.decoder = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def features_at(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        h = torch.ones(n, self.features, device=x.device, dtype=x.dtype)
        for (a, b), plane in zip(self.pairs, self.planes, strict=True):
            # grid_sample: grid[..., 0] indexes the last plane axis (b), grid[..., 1] the first (a)
            g = torch.stack([x[:, b], x[:, a]], dim=-1).view(1, n, 1, 2)
            f = F.grid_sample(plane, g, mode="bilinear", padding_mode="border", align_corners=True)
            h = h * f[0, :, :, 0].transpose(0, 1)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.features_at(x))

    def tensors(self) -> list[torch.Tensor]:
        """Everything stored: the planes, then the decoder's weights and biases."""
        lin = [m for m in self.decoder if isinstance(m, nn.Linear)]
        return [*self.planes, *(p for m in lin for p in (m.weight, m.bias))]

    @property
    def n_params(self) -> int:
        return sum(math.prod(t.shape) for t in self.tensors())
