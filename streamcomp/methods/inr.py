"""Per-chunk INR compression: fit one small network to each chunk, store its quantized weights.

The network's size comes from the chunk's byte budget (``bits_per_param`` is the expected coded
cost of one weight); after fitting, the quantization step is searched so the payload fills the
budget. Under a quality target the network grows until the chunk's MSE is met.
"""

from __future__ import annotations

import itertools
import math
import struct
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from streamcomp.coding.quant import pack_tensors, pack_to_budget, unpack_tensors
from streamcomp.device import default_device, single_thread
from streamcomp.errors import ChunkFormatError
from streamcomp.methods.base import FitParams, Method, Target
from streamcomp.models.coords import axis_coords, coords_at, grid
from streamcomp.models.siren import mlp_params
from streamcomp.optim import Adam

_ARCH = struct.Struct("<H")
MAX_HIDDEN = 1024
# What a decoder evaluates: coordinates (points, ndim) to values (points, 1).
Network = Callable[[torch.Tensor], torch.Tensor]
QUALITY_REL_STEP = 2.0**-7


def linear_tensors(model: nn.Module) -> list[np.ndarray]:
    """Weights and biases of every linear layer, in order, as separate arrays.

    Kept apart because their scales differ by an order of magnitude in a SIREN: one shared
    quantization step would erase the weights.
    """
    out = []
    for m in model.modules():
        if isinstance(m, nn.Linear):
            out += [m.weight.detach().cpu().numpy(), m.bias.detach().cpu().numpy()]
    return [t.astype(np.float32) for t in out]


def load_linear_tensors(model: nn.Module, tensors: list[np.ndarray]) -> None:
    params = [p for m in model.modules() if isinstance(m, nn.Linear) for p in (m.weight, m.bias)]
    with torch.no_grad():
        for p, t in zip(params, tensors, strict=True):
            p.copy_(torch.from_numpy(t))


def fit_model(
    model: nn.Module,
    block: np.ndarray,
    steps: int,
    lr: float,
    batch: int,
    seed: int,
    param_groups: list[dict] | None = None,
    final_lr_fraction: float = 0.05,
    half_scale_weight: float = 0.0,
) -> nn.Module:
    """Fit ``model`` to ``block`` (normalized) by Adam on random coordinate batches, cosine LR.

    ``param_groups`` gives parts of the model their own learning rates (e.g. feature planes).
    ``half_scale_weight`` > 0 adds that weight times the error of ``model.forward_cells`` on the
    means of two-voxel cells (:func:`half_scale_cells`), a quarter batch of them a step, so that a
    read at scale 1/2 evaluates once per output voxel.
    Runs on one CPU thread (see :func:`streamcomp.device.single_thread`).
    """
    device = default_device()
    model = model.to(device)
    values = torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32)).reshape(-1, 1).to(device)
    cells = half_scale_cells(block, device) if half_scale_weight > 0 else None
    gen = torch.Generator(device=device).manual_seed(seed)
    groups = param_groups if param_groups is not None else model.parameters()
    opt = Adam(groups, lr, steps=max(steps, 1), eta_min=lr * final_lr_fraction)
    n = values.shape[0]
    whole = grid(block.shape, device) if n <= batch else None
    with single_thread():
        for _ in range(steps):
            if whole is None:
                idx = torch.randint(0, n, (batch,), device=device, generator=gen)
                x, y = coords_at(idx, block.shape), values[idx]
            else:
                x, y = whole, values
            loss = torch.mean((model(x) - y) ** 2)
            if cells is not None:
                pick = cells.sample(max(batch // 4, 1), gen)
                coarse = model.forward_cells(cells.centres[pick], cells.spread[pick])
                loss = loss + half_scale_weight * torch.mean((coarse - cells.values[pick]) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.cpu()


@dataclass(frozen=True)
class Cells:
    """Cells of two voxels along some axes of a block: their centres and half-spacings (the
    [-1, 1] offsets of their voxels from the centre, 0 along axes a cell does not span), and the
    means of their voxels; grouped by the axes they span (``starts``, ``counts``: each group's
    first row and size)."""

    centres: torch.Tensor
    spread: torch.Tensor
    values: torch.Tensor
    starts: torch.Tensor
    counts: torch.Tensor

    def sample(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """Rows of ``count`` random cells, each group equally likely: a cell spanning every axis
        (the read at 1/2 along all) would otherwise be 1 in 19 of a volume's cells."""
        device = self.starts.device
        group = torch.randint(0, len(self.starts), (count,), device=device, generator=generator)
        size = self.counts[group]
        at = (torch.rand(count, device=device, generator=generator) * size).long()
        return self.starts[group] + torch.minimum(at, size - 1)  # float rounding can reach the size


def half_scale_cells(block: np.ndarray, device: torch.device | str = "cpu") -> Cells:
    """Every cell a read at scale 1/2 along any subset of the axes (those of two or more voxels)
    averages: voxel pairs (2i, 2i + 1) along the subset's axes, the odd last voxel left out."""
    axes = [ax for ax, n in enumerate(block.shape) if n >= 2]
    parts: list[tuple[torch.Tensor, torch.Tensor, np.ndarray]] = []
    for mask in itertools.product((False, True), repeat=len(axes)):
        if not any(mask):
            continue
        pairs = {ax for ax, paired in zip(axes, mask, strict=True) if paired}
        means = np.asarray(block, np.float64)
        centres, spread = [], []
        for ax, n in enumerate(block.shape):
            c = axis_coords(n).numpy().astype(np.float64)
            if ax in pairs:
                even = n - n % 2
                means = np.take(means, range(even), axis=ax)
                means = 0.5 * (np.take(means, range(0, even, 2), axis=ax) + np.take(means, range(1, even, 2), axis=ax))
                c = 0.5 * (c[0:even:2] + c[1:even:2])
            centres.append(torch.from_numpy(c).float())
            spread.append(1.0 / (n - 1) if ax in pairs else 0.0)  # half the [-1, 1] voxel spacing
        mesh = torch.meshgrid(*centres, indexing="ij")
        at = torch.stack([m.reshape(-1) for m in mesh], dim=-1)
        parts.append((at, torch.tensor(spread).expand(len(at), -1), means.reshape(-1)))
    if not parts:
        raise ValueError(f"a block of shape {block.shape} has no axis of two voxels to pair")
    counts = torch.tensor([len(p[0]) for p in parts])
    return Cells(
        torch.cat([p[0] for p in parts]).to(device),
        torch.cat([p[1] for p in parts]).to(device),
        torch.from_numpy(np.concatenate([p[2] for p in parts]).astype(np.float32)).reshape(-1, 1).to(device),
        (torch.cumsum(counts, 0) - counts).to(device),
        counts.to(device),
    )


@torch.no_grad()
def evaluate(
    model: Network,
    coords: torch.Tensor,
    batch: int = 1 << 18,
    spread: torch.Tensor | None = None,
) -> np.ndarray:
    """Model output at ``coords`` in batches, as a flat float32 array; with ``spread``, its
    ``forward_cells`` over the cells of that spread around them."""
    if isinstance(model, nn.Module):
        model.eval()
    run = model if spread is None else (lambda x: model.forward_cells(x, spread))
    parts = [run(coords[i : i + batch]).reshape(-1) for i in range(0, coords.shape[0], batch)]
    return torch.cat(parts).numpy() if parts else np.zeros(0, np.float32)


@dataclass(frozen=True)
class INRParams(FitParams):
    """What a per-chunk INR's decoder needs: its depth and the bits per weight it was sized for."""

    layers: int = 7
    bits_per_param: float = 6.0


def decode_on_grid(method: Method, sections: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
    """A coordinate method's whole block: its ``decode_at`` on the block's own voxel grid."""
    return method.decode_at(sections, shape, grid(shape)).reshape(shape)


class PerChunkINR(Method):
    """Shared machinery of the per-chunk INR methods; subclasses define the network."""

    Params = INRParams
    # Weight of the two-voxel cells' error in the fit (see fit_model); a network whose class has a
    # forward_cells sets it from its parameters.
    half_scale_weight: float = 0.0

    @abstractmethod
    def widths(self, hidden: int) -> list[int]:
        """Hidden layer widths for a base width ``hidden``."""

    @abstractmethod
    def build(self, ndim: int, hidden: int) -> nn.Module:
        """A fresh network for ``ndim``-dimensional coordinates."""

    def input_dim(self, ndim: int) -> int:
        return ndim

    def param_count(self, ndim: int, hidden: int) -> int:
        return mlp_params(self.input_dim(ndim), self.widths(hidden))

    def hidden_for_budget(self, ndim: int, budget_bytes: int) -> int:
        """Largest base width whose weights fit the budget at the expected bits per weight."""
        target = budget_bytes * 8 / self.params.bits_per_param
        hidden = 1
        while hidden < MAX_HIDDEN and self.param_count(ndim, hidden + 1) <= target:
            hidden += 1
        return hidden

    def min_payload_bytes(self, shape: tuple[int, ...]) -> int:
        """Architecture, side information (4 + 2 bytes per tensor + model), ~1.5 bits per weight."""
        side = 4 + 2 * 2 * self.params.layers + 17
        return _ARCH.size + side + math.ceil(self.param_count(len(shape), 2) * 1.5 / 8)

    def _fit(self, block: np.ndarray, hidden: int) -> nn.Module:
        p = self.params
        torch.manual_seed(p.seed)
        model = self.build(block.ndim, hidden)
        return fit_model(model, block, p.steps, p.lr, p.batch, p.seed, half_scale_weight=self.half_scale_weight)

    def encode(self, block: np.ndarray, target: Target) -> list[bytes]:
        ndim = block.ndim
        if target.budget_bytes is not None:
            weight_budget = max(target.budget_bytes - _ARCH.size, 1)
            hidden = self.hidden_for_budget(ndim, weight_budget)
            model = self._fit(block, hidden)
            return [_ARCH.pack(hidden), pack_to_budget(linear_tensors(model), weight_budget)]
        return self._encode_quality(block, target.max_mse)

    def _encode_quality(self, block: np.ndarray, max_mse: float) -> list[bytes]:
        """Grow the network until the decoded chunk's MSE meets ``max_mse`` (or params ~ voxels)."""
        ndim = block.ndim
        hidden = 4
        sections: list[bytes] = []
        while True:
            model = self._fit(block, hidden)
            sections = [_ARCH.pack(hidden), pack_tensors(linear_tensors(model), QUALITY_REL_STEP)]
            decoded = self.decode(sections, block.shape)
            too_big = self.param_count(ndim, hidden) * 2 > block.size or hidden >= MAX_HIDDEN
            if float(np.mean((decoded - block) ** 2)) <= max_mse or too_big:
                return sections
            hidden = min(MAX_HIDDEN, math.ceil(hidden * 1.4))

    def decode(self, sections: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
        return decode_on_grid(self, sections, shape)

    def load(self, sections: list[bytes], ndim: int) -> Network:
        """The chunk's network, with its stored weights."""
        if len(sections) != 2 or len(sections[0]) != _ARCH.size:
            raise ChunkFormatError(f"{self.name} chunk must have an architecture and a weight section")
        (hidden,) = _ARCH.unpack(sections[0])
        if not 1 <= hidden <= MAX_HIDDEN:
            raise ChunkFormatError(f"{self.name} chunk names an impossible width {hidden}")
        return self.network(ndim, hidden, sections[1])

    def network(self, ndim: int, hidden: int, weights: bytes) -> Network:
        """The network of base width ``hidden`` with its stored ``weights``, ready to evaluate."""
        model = self.build(ndim, hidden)
        shapes = [tuple(t.shape) for t in linear_tensors(model)]
        load_linear_tensors(model, unpack_tensors(weights, shapes))
        return model

    def decode_at(self, sections: list[bytes], shape: tuple[int, ...], coords: torch.Tensor) -> np.ndarray:
        return evaluate(self.load(sections, len(shape)), coords.float())

    def decode_cells(
        self, sections: list[bytes], shape: tuple[int, ...], coords: torch.Tensor, spread: torch.Tensor
    ) -> np.ndarray | None:
        if not self.half_scale_weight:
            return None
        return evaluate(self.load(sections, len(shape)), coords.float(), spread=spread.float())
