"""``planes``: hybrid feature planes + tiny MLP per chunk (3D tri-plane, 4D six planes).

The chunk's byte budget sets the parameter count (``bits_per_param`` per value); the decoder MLP
takes its fixed share and the planes the rest, sized by adaptive plane scaling (``scaling``:
``adaptive`` per eq. 2-3, or ``equal``). Planes and MLP are fitted jointly by Adam on the MSE
(planes at a higher learning rate, as grid representations need), then every tensor is uniformly
quantized (planes centred on their stored float32 mean, so all symbols share one zero-centred
entropy model), entropy coded in one stream, and the step bisected to fill the budget. Under a
quality target the plane scale grows until the chunk's MSE is met.

Payload: an architecture section (plane resolution per axis, uint16, and each plane's mean) and
the weight section.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np
import torch

from streamcomp.coding.quant import pack_tensors, pack_to_budget, unpack_tensors
from streamcomp.errors import ChunkFormatError, InputError
from streamcomp.methods.base import FitParams, Method, Target, encode_only
from streamcomp.methods.inr import QUALITY_REL_STEP, decode_on_grid, evaluate, fit_model
from streamcomp.models.planes import (
    HybridPlanes,
    decoder_param_count,
    plane_pairs,
    plane_param_count,
    plane_resolution,
)

_RES = struct.Struct("<H")
_MEAN = struct.Struct("<f")
MAX_RES = 4096


@dataclass(frozen=True)
class PlanesParams(FitParams):
    features: int = 8
    hidden: int = 16
    bits_per_param: float = 6.0
    scaling: str = "adaptive"
    steps: int = encode_only(600)
    lr: float = encode_only(5e-3)
    lr_planes: float = encode_only(2e-2)


class PlanesMethod(Method):
    name = "planes"
    method_id = 4
    ndims = (3, 4)
    Params = PlanesParams

    def __init__(self, **params) -> None:
        super().__init__(**params)
        if self.params.scaling not in ("adaptive", "equal"):
            raise InputError(f"scaling must be 'adaptive' or 'equal', got {self.params.scaling!r}")
        if not (1 <= int(self.params.features) <= 256 and 1 <= int(self.params.hidden) <= 1024):
            raise InputError("planes needs 1 <= features <= 256 and 1 <= hidden <= 1024")

    def _arch_size(self, ndim: int) -> int:
        return _RES.size * ndim + _MEAN.size * len(plane_pairs(ndim))

    def resolution(self, shape: tuple[int, ...], n_params: float) -> tuple[int, ...]:
        k, hidden = int(self.params.features), int(self.params.hidden)
        return plane_resolution(shape, k, n_params - decoder_param_count(k, hidden), self.params.scaling)

    def min_payload_bytes(self, shape: tuple[int, ...]) -> int:
        k, hidden = int(self.params.features), int(self.params.hidden)
        n = plane_param_count(tuple(min(2, s) for s in shape), k) + decoder_param_count(k, hidden)
        side = 4 + 2 * (len(plane_pairs(len(shape))) + 4) + 13
        return self._arch_size(len(shape)) + side + math.ceil(n * 1.5 / 8)

    def fit(self, block: np.ndarray, res: tuple[int, ...]) -> HybridPlanes:
        p = self.params
        torch.manual_seed(int(p.seed))
        model = HybridPlanes(res, int(p.features), int(p.hidden))
        lr = float(p.lr)
        groups = [
            {"params": list(model.planes), "lr": float(p.lr_planes)},
            {"params": list(model.decoder.parameters()), "lr": lr},
        ]
        return fit_model(model, block, int(p.steps), lr, int(p.batch), int(p.seed), groups, 0.02)

    def _sections(self, model: HybridPlanes, budget: int | None) -> list[bytes]:
        tensors = [t.detach().numpy().astype(np.float32) for t in model.tensors()]
        n_planes = len(model.pairs)
        means = [float(np.float32(t.mean())) for t in tensors[:n_planes]]
        centred = [t - m for t, m in zip(tensors[:n_planes], means, strict=True)] + tensors[n_planes:]
        arch = b"".join(_RES.pack(r) for r in model.res) + b"".join(_MEAN.pack(m) for m in means)
        if budget is None:
            weights = pack_tensors(centred, QUALITY_REL_STEP)
        else:
            weights = pack_to_budget(centred, max(budget - len(arch), 1))
        return [arch, weights]

    def encode(self, block: np.ndarray, target: Target) -> list[bytes]:
        bpp = float(self.params.bits_per_param)
        ndim = block.ndim
        if target.budget_bytes is not None:
            n_params = max(target.budget_bytes - self._arch_size(ndim), 1) * 8 / bpp
            model = self.fit(block, self.resolution(block.shape, n_params))
            return self._sections(model, target.budget_bytes)
        n_params = block.size / 64
        while True:
            res = self.resolution(block.shape, n_params)
            sections = self._sections(self.fit(block, res), None)
            err = float(np.mean((self.decode(sections, block.shape) - block) ** 2))
            full = all(r >= s for r, s in zip(res, block.shape, strict=True))
            if err <= target.max_mse or full or n_params * 2 > block.size:
                return sections
            n_params *= 1.5

    def load(self, sections: list[bytes], shape: tuple[int, ...]) -> HybridPlanes:
        ndim = len(shape)
        if len(sections) != 2 or len(sections[0]) != self._arch_size(ndim):
            raise ChunkFormatError("planes chunk must have an architecture and a weight section")
        arch = sections[0]
        res = tuple(_RES.unpack_from(arch, _RES.size * i)[0] for i in range(ndim))
        if not all(1 <= r <= MAX_RES for r in res):
            raise ChunkFormatError(f"planes chunk names an impossible plane resolution {res}")
        n_planes = len(plane_pairs(ndim))
        off = _RES.size * ndim
        means = [_MEAN.unpack_from(arch, off + _MEAN.size * i)[0] for i in range(n_planes)]
        model = HybridPlanes(res, int(self.params.features), int(self.params.hidden))
        params = model.tensors()
        tensors = unpack_tensors(sections[1], [tuple(t.shape) for t in params])
        with torch.no_grad():
            for i, (p, t) in enumerate(zip(params, tensors, strict=True)):
                p.copy_(torch.from_numpy(t + (means[i] if i < n_planes else 0.0)))
        return model

    def decode(self, sections: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
        return decode_on_grid(self, sections, shape)

    def decode_at(self, sections: list[bytes], shape: tuple[int, ...], coords: torch.Tensor) -> np.ndarray:
        return evaluate(self.load(sections, shape), coords.float())
