"""Coordinate grids in the [-1, 1] cube that every INR in the project is evaluated on."""

from __future__ import annotations

import torch


def axis_coords(n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Voxel centres of an axis of length ``n`` mapped to [-1, 1] (a single voxel sits at 0)."""
    if n == 1:
        return torch.zeros(1, device=device)
    return torch.linspace(-1.0, 1.0, n, device=device)


def grid(shape: tuple[int, ...], device: torch.device | str = "cpu") -> torch.Tensor:
    """All voxel coordinates of a block, shape (prod(shape), ndim), C order like the block."""
    axes = [axis_coords(n, device) for n in shape]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=-1)
