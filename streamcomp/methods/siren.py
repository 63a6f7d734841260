"""``siren``: one funnel-shaped SIREN per chunk (SCI's network, without its partitioning)."""

from __future__ import annotations

from torch import nn

from streamcomp.methods.base import register
from streamcomp.methods.inr import PerChunkINR
from streamcomp.models.siren import FunnelSiren, funnel_widths


@register
class SirenMethod(PerChunkINR):
    name = "siren"
    method_id = 1
    defaults = {**PerChunkINR.defaults, "fr": 2.2, "w0": 20.0}

    def widths(self, hidden: int) -> list[int]:
        return funnel_widths(hidden, self.params["layers"], self.params["fr"])

    def build(self, ndim: int, hidden: int) -> nn.Module:
        return FunnelSiren(ndim, self.widths(hidden), w0=self.params["w0"])
