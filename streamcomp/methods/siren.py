"""``siren``: one funnel-shaped SIREN per chunk (SCI's network, without its partitioning)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from streamcomp.methods.inr import INRParams, PerChunkINR
from streamcomp.models.siren import FunnelSiren, funnel_widths


@dataclass(frozen=True)
class SirenParams(INRParams):
    fr: float = 2.2
    w0: float = 20.0


class SirenMethod(PerChunkINR):
    name = "siren"
    method_id = 1
    ndims = (3, 4)  # 4D: one network over (t, z, y, x), the 4D papers' per-block SIREN baseline
    Params = SirenParams

    def widths(self, hidden: int) -> list[int]:
        return funnel_widths(hidden, self.params.layers, self.params.fr)

    def build(self, ndim: int, hidden: int) -> nn.Module:
        return FunnelSiren(ndim, self.widths(hidden), w0=self.params.w0)
