"""Funnel-shaped SIREN (SCI paper): a wide first sine layer, narrower deeper layers.

The first layer is ``fr`` times wider than the hidden layers because depth, not width, widens the
spectral support; ``w0`` scales the first layer's frequencies (SCI uses 20).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
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
    return sum(math.prod(shape) for shape in linear_shapes(in_dim, widths, out_dim))


def linear_shapes(in_dim: int, widths: list[int], out_dim: int = 1) -> list[tuple[int, ...]]:
    """Shapes of a dense net's weights and biases, in ``nn.Linear`` order (weight, bias per layer)."""
    dims = [in_dim, *widths, out_dim]
    return [shape for a, b in itertools.pairwise(dims) for shape in ((b, a), (b,))]


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

    def forward_cells(self, x: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
        """The network over cells, one evaluation each: its first layer averaged in closed form over
        the 2^d points ``x`` +- ``spread`` (per axis, broadcast against ``x``; 0 where a cell is one
        point), mean(sin(w.p + b)) = sin(w.x + b) * prod_j cos(w_j spread_j), then the deeper layers
        on those features. Exact for the first layer alone, which on its own gained 0.06 dB over a
        point value (the deeper layers are nonlinear); a network trained for it as well (the
        ``half_scale_weight`` of :func:`streamcomp.methods.inr.fit_model`) gives the cells' means."""
        first = self.body[0]
        frequencies = first.w0 * first.linear.weight  # (width, ndim)
        h = first(x)
        for axis in range(x.shape[-1]):
            h = h * torch.cos(spread[..., axis : axis + 1] * frequencies[:, axis])
        return self.head(self.body[1:](h))


class SirenWeights:
    """A funnel SIREN's stored weights, evaluated as they are, without gradients.

    Decoding builds no :class:`FunnelSiren`: constructing and randomly initialising a module took
    longer than evaluating a small chunk's network. Each sine layer's frequency is folded into its
    weights once, so a layer is one fused multiply-add and an in-place sine.
    """

    def __init__(self, tensors: list[np.ndarray], w0: float) -> None:
        pairs = list(zip(tensors[0::2], tensors[1::2], strict=True))
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = []
        for i, (weight, bias) in enumerate(pairs):
            scale = 1.0 if i == len(pairs) - 1 else (w0 if i == 0 else 30.0)
            w = torch.as_tensor(weight, dtype=torch.float32) * scale
            self.layers.append((w.T.contiguous(), torch.as_tensor(bias, dtype=torch.float32) * scale))

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, self.layers)

    @torch.no_grad()
    def forward_cells(self, x: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
        """:meth:`FunnelSiren.forward_cells` for one ``spread`` (per axis) shared by every cell: the
        first layer's factor prod_j cos(w_j spread_j) is folded into the second layer's weights."""
        first, second = self.layers[0][0], self.layers[1][0]  # (in, out) each
        factor = torch.cos(spread.float()[:, None] * first).prod(dim=0)
        return self._run(x, [self.layers[0], (second * factor[:, None], self.layers[1][1]), *self.layers[2:]])

    @staticmethod
    def _run(x: torch.Tensor, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        h = x
        for w, b in layers[:-1]:
            h = torch.addmm(b, h, w).sin_()
        w, b = layers[-1]
        return torch.addmm(b, h, w)


class BatchedFunnelSiren(nn.Module):
    """Several independent funnel SIRENs trained at once with batched matmuls (SCI's leaf blocks).

    Network ``i`` has hidden widths ``widths_list[i]``; all are padded to the widest and masked,
    so padded units stay exactly zero and each network is initialised and trained exactly like
    its own :class:`FunnelSiren` (the loss is a sum over networks, Adam is per element).
    Inputs are (networks, points, in_dim); outputs (networks, points, out_dim).
    """

    def __init__(self, in_dim: int, widths_list: list[list[int]], w0: float = 20.0, out_dim: int = 1) -> None:
        super().__init__()
        n, depth = len(widths_list), len(widths_list[0])
        real = torch.tensor([[in_dim, *w, out_dim] for w in widths_list])  # (n, depth + 2)
        dims = [in_dim, *(int(v) for v in real[:, 1:-1].max(0).values), out_dim]
        self.w0s = [w0] + [30.0] * (depth - 1)
        self.real = real
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for j in range(depth + 1):
            fan_in, fan_out = dims[j], dims[j + 1]
            in_mask = (torch.arange(fan_in)[None, :] < real[:, j, None]).float()
            out_mask = (torch.arange(fan_out)[None, :] < real[:, j + 1, None]).float()
            self.register_buffer(f"wmask{j}", in_mask[:, :, None] * out_mask[:, None, :])
            self.register_buffer(f"bmask{j}", out_mask)
            fi = real[:, j].float()[:, None, None]
            bound = torch.full_like(fi, 1.0) / fi if j == 0 else torch.sqrt(6.0 / fi) / 30.0
            w = (torch.rand(n, fan_in, fan_out) * 2 - 1) * bound
            b = (torch.rand(n, fan_out) * 2 - 1) / torch.sqrt(fi[:, :, 0])
            self.weights.append(nn.Parameter(w * in_mask[:, :, None] * out_mask[:, None, :]))
            self.biases.append(nn.Parameter(b * out_mask))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        last = len(self.weights) - 1
        for j, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm((b * getattr(self, f"bmask{j}"))[:, None, :], h, w * getattr(self, f"wmask{j}"))
            if j < last:
                h = torch.sin(self.w0s[j] * h)
        return h

    def network_tensors(self, i: int) -> list:
        """Network ``i``'s weights and biases in :func:`FunnelSiren` ``nn.Linear`` order (numpy)."""
        out = []
        r = [int(v) for v in self.real[i]]
        for j, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            out.append(w[i, : r[j], : r[j + 1]].detach().T.contiguous().numpy())
            out.append(b[i, : r[j + 1]].detach().contiguous().numpy())
        return out
