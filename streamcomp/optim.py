"""Adam with an optional cosine learning-rate schedule: what every fit in the project steps with.

Why not ``torch.optim``: the first optimizer a process creates imports torch's compiler
(``torch._dynamo``, ~0.7 s on this project's CPUs), paid by every process that fits, which is a
fifth to a third of an error-bounded array's whole encode on a small volume. The arithmetic is
torch's: Adam with its defaults (betas 0.9 and 0.999, eps 1e-8, bias-corrected moments), and the
schedule is ``CosineAnnealingLR`` in closed form, advanced by each step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

BETAS = (0.9, 0.999)
EPS = 1e-8


class Adam:
    """``params``: tensors, or groups (dicts with ``params`` and optionally their own ``lr``).
    With ``steps``, each group's rate falls from its own to ``eta_min`` along a half cosine over
    that many steps."""

    def __init__(
        self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], lr: float, steps: int | None = None,
        eta_min: float = 0.0,
    ) -> None:
        groups = list(params)
        if not groups or not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.groups = []
        for group in groups:
            tensors = list(group["params"])
            base = float(group.get("lr", lr))
            moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in tensors]
            self.groups.append({"params": tensors, "base": base, "lr": base, "moments": moments})
        self.steps, self.eta_min, self.t = steps, eta_min, 0

    def zero_grad(self) -> None:
        for group in self.groups:
            for p in group["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        beta1, beta2 = BETAS
        correction1, root2 = 1 - beta1**self.t, math.sqrt(1 - beta2**self.t)
        for group in self.groups:
            for p, (mean, square) in zip(group["params"], group["moments"], strict=True):
                if p.grad is None:
                    continue
                mean.lerp_(p.grad, 1 - beta1)
                square.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                p.addcdiv_(mean, (square.sqrt() / root2).add_(EPS), value=-group["lr"] / correction1)
            if self.steps:
                done = min(self.t, self.steps) / self.steps
                group["lr"] = self.eta_min + (group["base"] - self.eta_min) * (1 + math.cos(math.pi * done)) / 2
