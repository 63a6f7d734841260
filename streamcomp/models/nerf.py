"""NeRF-style positional-encoding ReLU MLP, the papers' second INR baseline."""

from __future__ import annotations

import math

import torch
from torch import nn


class PositionalEncoding(nn.Module):
    """[x, sin(2^k pi x), cos(2^k pi x)] for k < ``frequencies``."""

    def __init__(self, frequencies: int) -> None:
        super().__init__()
        self.register_buffer("bands", (2.0 ** torch.arange(frequencies)) * math.pi, persistent=False)

    def out_dim(self, in_dim: int) -> int:
        return in_dim * (1 + 2 * len(self.bands))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xb = x[..., None] * self.bands
        return torch.cat([x, torch.sin(xb).flatten(-2), torch.cos(xb).flatten(-2)], dim=-1)


class NerfMLP(nn.Module):
    """Positional encoding followed by a ReLU MLP."""

    def __init__(self, in_dim: int, widths: list[int], frequencies: int = 10, out_dim: int = 1) -> None:
        super().__init__()
        self.encoding = PositionalEncoding(frequencies)
        layers: list[nn.Module] = []
        fan_in = self.encoding.out_dim(in_dim)
        for w in widths:
            layers += [nn.Linear(fan_in, w), nn.ReLU()]
            fan_in = w
        layers.append(nn.Linear(fan_in, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.encoding(x))
