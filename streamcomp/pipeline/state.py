"""The state a run's phases hand on (the driver's and the pyramid's): what was opened, planned and
created."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streamcomp.methods import Method
from streamcomp.pipeline import manifest as mf
from streamcomp.pipeline.config import RunConfig
from streamcomp.plan import Plan
from streamcomp.source import Source


@dataclass
class Run:
    """One run: its configuration, source and method, then its plan, codec configuration and array."""

    cfg: RunConfig
    source: Source
    method: Method
    chunks: tuple[int, ...]
    existing: mf.Existing | None
    plan: Plan | None = None
    config: dict[str, Any] | None = None
    array: Any = None
    shards: tuple[int, ...] | None = None
    present: set[str] = field(default_factory=set)  # keys already stored (a resume)

    @property
    def max_mse(self) -> float | None:
        return self.cfg.max_mse(self.plan.peak)
