"""Funnel-shaped SIREN (SCI paper): a wide first sine layer, narrower deeper layers.

The first layer is ``fr`` times wider than the hidden layers because depth, not width, widens the
spectral support; ``w0`` scales the first layer's frequencies (SCI uses 20).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn


class SineLayer(nn.Module):
    def __init__(self, fan_in: int, fan_out: int, w0: float, first: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(fan_in, fan_out)
        self.w0 = w0
        bound = 1.0 / fan_in if first else math.sqrt(6.0 / fan_in) / w0
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.w0 * self.linear(x))


def funnel_widths(hidden: int, layers: int, fr: float) -> list[int]:
    """Widths of the ``layers - 1`` sine layers: first ``round(fr * hidden)``, then ``hidden``."""
    return [max(1, round(fr * hidden))] + [hidden] * (layers - 2)


def mlp_params(in_dim: int, widths: list[int], out_dim: int = 1) -> int:
    """Number of weights and biases of a dense net with the given hidden widths."""
    dims = [in_dim, *widths, out_dim]
    return sum((a + 1) * b for a, b in itertools.pairwise(dims))


class FunnelSiren(nn.Module):
    """SIREN mapping coordinates in [-1, 1]^d to one intensity."""

    def __init__(self, in_dim: int, widths: list[int], w0: float = 20.0, out_dim: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        fan_in = in_dim
        for i, w in enumerate(widths):
            layers.append(SineLayer(fan_in, w, w0 if i == 0 else 30.0, first=i == 0))
            fan_in = w
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(fan_in, out_dim)
        bound = math.sqrt(6.0 / fan_in) / 30.0
        with torch.no_grad():
            self.head.weight.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))
