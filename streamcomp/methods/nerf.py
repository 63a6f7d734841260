"""``nerf``: one positional-encoding ReLU MLP per chunk (the papers' NeRF baseline)."""

from __future__ import annotations

from torch import nn

from streamcomp.methods.base import register
from streamcomp.methods.inr import PerChunkINR
from streamcomp.models.nerf import NerfMLP


@register
class NerfMethod(PerChunkINR):
    name = "nerf"
    method_id = 2
    defaults = {**PerChunkINR.defaults, "layers": 5, "frequencies": 10, "lr": 5e-3}

    def widths(self, hidden: int) -> list[int]:
        return [hidden] * (self.params["layers"] - 1)

    def input_dim(self, ndim: int) -> int:
        return ndim * (1 + 2 * self.params["frequencies"])

    def build(self, ndim: int, hidden: int) -> nn.Module:
        return NerfMLP(ndim, self.widths(hidden), frequencies=self.params["frequencies"])
