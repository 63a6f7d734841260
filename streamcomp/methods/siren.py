"""``siren``: one funnel-shaped SIREN per chunk (SCI's network, without its partitioning)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from streamcomp.coding.quant import unpack_tensors
from streamcomp.errors import InputError
from streamcomp.methods.base import stored_if_set
from streamcomp.methods.inr import INRParams, PerChunkINR
from streamcomp.models.siren import FunnelSiren, SirenWeights, funnel_widths, linear_shapes


@dataclass(frozen=True)
class SirenParams(INRParams):
    """A funnel SIREN's shape (sci and sr build on it too)."""

    fr: float = 2.2
    w0: float = 20.0
    # The width is sized for this many bits per quantized weight: at 6, a sine network's quantizer
    # was too coarse for its budget and narrower networks coded more finely decoded better at equal
    # bytes (benchmarks/studies/inr_width.py); the ReLU nerf baseline keeps INRParams' 6.
    bits_per_param: float = 8.0


@dataclass(frozen=True)
class SirenChunkParams(SirenParams):
    """The siren method's: its network, and whether its fit prepares reads at scale 1/2."""

    # > 0: the fit also weighs (by this much) the network's error on the means of two-voxel cells,
    # so that a read at scale 1/2 evaluates it once per output voxel (streamcomp.scaled); stored
    # where set, since a reader must know the network was trained for it. It costs
    # full-resolution quality (README, "Decoding at another resolution").
    half_scale_weight: float = stored_if_set(0.0)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.half_scale_weight) and self.half_scale_weight >= 0):
            raise InputError(f"half_scale_weight must be a finite number >= 0, got {self.half_scale_weight!r}")


class SirenMethod(PerChunkINR):
    name = "siren"
    method_id = 1
    ndims = (3, 4)  # 4D: one network over (t, z, y, x), the 4D papers' per-block SIREN baseline
    Params = SirenChunkParams

    @property
    def half_scale_weight(self) -> float:
        return self.params.half_scale_weight

    def widths(self, hidden: int) -> list[int]:
        return funnel_widths(hidden, self.params.layers, self.params.fr)

    def build(self, ndim: int, hidden: int) -> nn.Module:
        return FunnelSiren(ndim, self.widths(hidden), w0=self.params.w0)

    def network(self, ndim: int, hidden: int, weights: bytes) -> SirenWeights:
        widths = self.widths(hidden)
        return SirenWeights(unpack_tensors(weights, linear_shapes(ndim, widths)), self.params.w0)
