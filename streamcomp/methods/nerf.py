"""``nerf``: one positional-encoding ReLU MLP per chunk (the papers' NeRF baseline)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from streamcomp.methods.base import encode_only
from streamcomp.methods.inr import INRParams, PerChunkINR
from streamcomp.models.nerf import NerfMLP


@dataclass(frozen=True)
class NerfParams(INRParams):
    layers: int = 5
    frequencies: int = 10
    lr: float = encode_only(5e-3)


class NerfMethod(PerChunkINR):
    name = "nerf"
    method_id = 2
    Params = NerfParams

    def widths(self, hidden: int) -> list[int]:
        return [hidden] * (self.params.layers - 1)

    def input_dim(self, ndim: int) -> int:
        return ndim * (1 + 2 * self.params.frequencies)

    def build(self, ndim: int, hidden: int) -> nn.Module:
        return NerfMLP(ndim, self.widths(hidden), frequencies=self.params.frequencies)
