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


def coords_at(index: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``grid(shape)[index]`` for flat voxel indices, without building the grid: a fit's batch of
    random voxels costs memory of the batch, not of the block (the same values: each axis's
    coordinate is taken from :func:`axis_coords` either way)."""
    out, rest = [], index
    for n in reversed(shape):
        out.append(axis_coords(n, index.device)[rest % n])
        rest = rest // n
    return torch.stack(out[::-1], dim=-1)
