"""A continuous-scale super-resolution network in the SRNO spirit (Wei & Zhang, CVPR 2023), small
enough to be stored with every array and run by every decode.

- A convolutional feature extractor, ``channels`` wide, runs on the low-resolution block (4D
  blocks: the 3D convolutions run frame by frame).
- Each query, at a continuous position, lifts the features of its 2^d nearest low-resolution voxels
  together with its offsets to them and their values. The lifted vectors are summed with
  multilinear weights (LIIF's local ensemble).
- One Galerkin-type attention layer (softmax-free, linear in the number of points) adds to each
  query a kernel integral over the whole low-resolution block. Keys and values come from the
  block's features rather than from the other queries, so a query's value does not depend on
  which other queries are asked: any resolution, any region, in any batches, is one operator.
- A pointwise head gives a correction added to a base value the caller supplies at each query
  (the INR evaluated there: a continuous function interpolates better than the voxels it was
  fitted on), so an untrained network returns the base.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.nn import functional as F


def low_res_positions(coords: torch.Tensor, full: tuple[int, ...], low: tuple[int, ...]) -> torch.Tensor:
    """Positions, in low-resolution voxel units, of ``coords`` given in a block's [-1, 1] cube.

    The block has ``full`` voxels per axis, its low-pass version ``low``: low-resolution voxel k sits
    at full-resolution position (k + 0.5) * full / low - 0.5 (where a DCT crop puts its samples).
    """
    n = torch.tensor(full, dtype=torch.float32)
    m = torch.tensor(low, dtype=torch.float32)
    position = (coords.float() + 1) * 0.5 * (n - 1)
    return (position + 0.5) * m / n - 0.5


def low_res_coords(positions: torch.Tensor, low: tuple[int, ...]) -> torch.Tensor:
    """Positions in low-resolution voxel units back to the low-resolution block's [-1, 1] cube."""
    m = torch.tensor(low, dtype=torch.float32)
    return torch.where(m > 1, -1 + 2 * positions / (m - 1).clamp(min=1), torch.zeros(()))


class SRNet(nn.Module):
    """Low-resolution block + query positions -> values at the queries (see the module doc)."""

    def __init__(self, ndim: int, channels: int, width: int = 16, depth: int = 2) -> None:
        super().__init__()
        self.ndim = ndim
        conv = {"kernel_size": 3, "padding": 1, "padding_mode": "replicate"}
        self.extract = nn.ModuleList(
            [nn.Conv3d(1, channels, **conv)] + [nn.Conv3d(channels, channels, **conv) for _ in range(depth)]
        )
        self.lift = nn.Linear(channels + ndim + 1, width)
        self.context = nn.Linear(channels, width)
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.mix = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))
        self.head = nn.Linear(width, 1)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.zero_()
        self.corners = torch.tensor(list(itertools.product((0, 1), repeat=ndim)))

    def features(self, low: torch.Tensor) -> torch.Tensor:
        """Per low-resolution voxel, C-order: (voxels, channels)."""
        x = low.reshape(-1, 1, *low.shape[-3:])
        x = F.gelu(self.extract[0](x))
        for layer in self.extract[1:]:
            x = x + F.gelu(layer(x))
        return x.movedim(1, -1).reshape(-1, x.shape[1])

    def forward(self, low: torch.Tensor, positions: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """Values at ``positions`` (queries, ndim) in low-resolution voxel units, shape (queries,):
        ``base`` (queries,) plus the learned correction."""
        shape = torch.tensor(low.shape)
        strides = torch.tensor([int(torch.prod(shape[i + 1 :])) for i in range(self.ndim)])
        feats, values = self.features(low), low.reshape(-1)
        floor = torch.floor(positions).long()
        lifted = torch.zeros(positions.shape[0], self.lift.out_features)
        total = torch.zeros(positions.shape[0])
        for corner in self.corners:
            idx = torch.minimum(torch.clamp(floor + corner, min=0), shape - 1)
            offset = positions - idx
            weight = torch.clamp(1 - offset.abs(), min=0).prod(dim=1)
            flat = (idx * strides).sum(dim=1)
            v = values[flat]
            lifted = lifted + weight[:, None] * self.lift(torch.cat([feats[flat], offset, v[:, None]], dim=1))
            total = total + weight
        total = total.clamp(min=1e-6)
        h = lifted / total[:, None]
        context = self.context(feats)
        k = F.layer_norm(self.key(context), (h.shape[1],))
        v = F.layer_norm(self.value(context), (h.shape[1],))
        h = h + self.query(h) @ (k.T @ v / context.shape[0])
        h = h + self.mix(h)
        return base + self.head(h).reshape(-1)
