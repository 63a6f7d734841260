"""Where tensors go: the GPU when there is one, the CPU otherwise (never required)."""

from __future__ import annotations

import torch


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
