"""The method plug-in interface.

A method sees normalized blocks only: finite float32 values in [-1, 1] (the chunk layer maps each
chunk's value range there, handles constant chunks and non-finite values, and frames the bytes).
A method may fit shared state on sample blocks once per array (stored in the codec configuration),
then encodes each chunk independently into byte sections under a byte budget or an error target.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from streamcomp.errors import InputError
from streamcomp.models.coords import grid


@dataclass(frozen=True)
class Target:
    """What one chunk's encoding must meet: a byte budget, or a maximum MSE (normalized units)."""

    budget_bytes: int | None = None
    max_mse: float | None = None

    def __post_init__(self) -> None:
        if (self.budget_bytes is None) == (self.max_mse is None):
            raise InputError("a target needs exactly one of a byte budget or a maximum MSE")


@dataclass(frozen=True)
class FitTargets:
    """What the sampled chunks will be asked to meet, for a method that weighs its shared state
    against per-chunk bytes: one :class:`Target` per sample, and how many data chunks the shared
    state is spread over (its bytes cost each chunk ``len(shared) / data_chunks``)."""

    targets: tuple[Target, ...]
    data_chunks: int


class Method(ABC):
    """A compression method: constructed from its JSON-able parameters."""

    name: ClassVar[str]
    method_id: ClassVar[int]
    ndims: ClassVar[tuple[int, ...]] = (3,)
    defaults: ClassVar[dict[str, Any]] = {}
    # Parameters that only steer fitting or encoding (steps, learning rates, seeds, progress): the
    # codec configuration leaves them out, since no decoder reads them and every array would carry them.
    encode_only: ClassVar[frozenset[str]] = frozenset()
    # How many byte sections encode() returns: the frame spends 4 bytes on each one's length.
    payload_sections: ClassVar[int] = 2
    # Chunk shape per ndim when the user names none: per-chunk fits want small blocks to train fast.
    default_chunks: ClassVar[dict[int, tuple[int, ...]]] = {3: (16, 64, 64), 4: (4, 16, 32, 32)}

    def __init__(self, **params: Any) -> None:
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise InputError(
                f"method {self.name!r} has no parameter(s) {sorted(unknown)}; "
                f"known: {sorted(self.defaults)}"
            )
        self.params: dict[str, Any] = {**self.defaults, **params}

    def stored_params(self) -> dict[str, Any]:
        """The parameters an array's codec configuration keeps: all that decoding can depend on."""
        return {k: v for k, v in self.params.items() if k not in self.encode_only}

    def fit_shared(self, samples: list[np.ndarray], targets: FitTargets | None = None) -> None:  # noqa: B027
        """Fit array-level state on normalized sample blocks; per-chunk methods need none.

        ``targets`` (one per sample; None when the caller has no rate or quality target yet) lets a
        method judge whether its shared state pays for itself at this run's rate.
        """

    def shared_state(self) -> bytes:
        """Array-level state to store (compressed and hashed) in the codec configuration."""
        return b""

    def load_shared_state(self, blob: bytes) -> None:  # noqa: B027 - optional hook
        """Restore what :meth:`shared_state` produced."""

    def shared_state_size_estimate(self) -> int:
        """A lower bound on ``len(shared_state())`` known before fitting (early feasibility checks)."""
        return 0

    def min_payload_bytes(self, shape: tuple[int, ...]) -> int:
        """Smallest payload this method can produce for a block (for impossible-ratio checks)."""
        return 64

    @abstractmethod
    def encode(self, block: np.ndarray, target: Target) -> list[bytes]:
        """Encode a normalized block into byte sections."""

    @abstractmethod
    def decode_at(self, sections: list[bytes], shape: tuple[int, ...], coords: torch.Tensor) -> np.ndarray:
        """Values (normalized) at ``coords`` in the block's [-1, 1] cube, shape (n,)."""

    def decode(self, sections: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
        """The whole normalized block on its own voxel grid."""
        return self.decode_at(sections, shape, grid(shape)).reshape(shape)


METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator adding a method to the registry under its name and id."""
    for other in METHODS.values():
        if other.method_id == cls.method_id and other is not cls:
            raise RuntimeError(f"method id {cls.method_id} used by {other.name} and {cls.name}")
    METHODS[cls.name] = cls
    return cls


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; choose one of: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def method_class_by_id(method_id: int) -> type[Method]:
    for cls in METHODS.values():
        if cls.method_id == method_id:
            return cls
    raise InputError(f"no method with id {method_id} in this build")
