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
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

SLAB_VOXELS = 1 << 13  # voxels a convolution call reads at most (its memory grows 27x with them)


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
        conv = {"kernel_size": 3}  # replicate-padded by _conv_in_slabs
        self.extract = nn.ModuleList(
            [nn.Conv3d(1, channels, **conv)] + [nn.Conv3d(channels, channels, **conv) for _ in range(depth)]
        )
        self.lift = nn.Linear(channels + ndim + 1, width)
        self.context = nn.Linear(channels, width)
        self.query_proj = nn.Linear(width, width)
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
        x = F.gelu(_conv_in_slabs(self.extract[0], x))
        for layer in self.extract[1:]:
            x = x + F.gelu(_conv_in_slabs(layer, x))
        return x.movedim(1, -1).reshape(-1, x.shape[1])

    def prepare(self, low: torch.Tensor) -> GridState:
        """What every query of one low-resolution block reads: computed once per block, then any
        number of :meth:`query` batches."""
        feats = self.features(low)
        parts = [
            checkpoint(self._kernel_part, feats[i : i + SLAB_VOXELS], use_reentrant=False)
            for i in range(0, feats.shape[0], SLAB_VOXELS)
        ]
        return GridState(tuple(low.shape), low.reshape(-1), feats, torch.stack(parts).sum(0) / feats.shape[0])

    def _kernel_part(self, feats: torch.Tensor) -> torch.Tensor:
        """keys^T values over some voxels; recomputed for the backward pass rather than kept (the
        keys and values are ``width`` numbers per voxel, the features only ``channels``)."""
        context = self.context(feats)
        width = self.lift.out_features
        return F.layer_norm(self.key(context), (width,)).T @ F.layer_norm(self.value(context), (width,))

    def query(self, state: GridState, positions: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """Values at ``positions`` (queries, ndim) in low-resolution voxel units, shape (queries,):
        ``base`` (queries,) plus the learned correction."""
        shape = torch.tensor(state.shape)
        strides = torch.tensor([int(torch.prod(shape[i + 1 :])) for i in range(self.ndim)])
        floor = torch.floor(positions).long()
        lifted = torch.zeros(positions.shape[0], self.lift.out_features)
        total = torch.zeros(positions.shape[0])
        for corner in self.corners:
            idx = torch.minimum(torch.clamp(floor + corner, min=0), shape - 1)
            offset = positions - idx
            weight = torch.clamp(1 - offset.abs(), min=0).prod(dim=1)
            flat = (idx * strides).sum(dim=1)
            v = state.values[flat]
            lifted = lifted + weight[:, None] * self.lift(torch.cat([state.feats[flat], offset, v[:, None]], dim=1))
            total = total + weight
        h = lifted / total.clamp(min=1e-6)[:, None]
        h = h + self.query_proj(h) @ state.kernel
        h = h + self.mix(h)
        return base + self.head(h).reshape(-1)

    def forward(self, low: torch.Tensor, positions: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """:meth:`query` on ``low``'s :meth:`prepare`."""
        return self.query(self.prepare(low), positions, base)


@dataclass
class GridState:
    """One low-resolution block as the queries read it: its values and features per voxel, and the
    attention's kernel integral over the block (keys^T values / voxels)."""

    shape: tuple[int, ...]
    values: torch.Tensor
    feats: torch.Tensor
    kernel: torch.Tensor


def _conv_in_slabs(layer: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """``layer`` (3x3x3, replicate padding) on ``x`` a few sections at a time: CPU convolutions of
    inputs this small unfold all 27 neighbours of every voxel at once, ~27x the input's memory (most
    of a chunk's fit memory), so bounding what one call sees bounds it."""
    padded = F.pad(x, (1,) * 6, mode="replicate")
    per_section = x.shape[0] * x.shape[1] * x.shape[-1] * x.shape[-2]
    sections = max(1, SLAB_VOXELS // per_section)
    starts = range(0, x.shape[2], sections)
    return torch.cat([F.conv3d(padded[:, :, z : z + sections + 2], layer.weight, layer.bias) for z in starts], dim=2)
