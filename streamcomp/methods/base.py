"""The method plug-in interface.

A method sees normalized blocks only: finite float32 values in [-1, 1] (the chunk layer maps each
chunk's value range there, handles constant chunks and non-finite values, and frames the bytes).
A method may fit shared state on sample blocks once per array (stored in the codec configuration),
then encodes each chunk independently into byte sections under a byte budget or an error target.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import Field, dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, get_type_hints

import numpy as np

from streamcomp.coding.context_model import ContextModel
from streamcomp.errors import InputError
from streamcomp.plan import SAMPLE_BLOCKS

if TYPE_CHECKING:  # only the coordinate-based methods, which import it themselves, pass tensors
    import torch


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


ENCODE_ONLY = {"encode_only": True}


def encode_only(default: Any) -> Any:
    """A parameter that only steers fitting or encoding (steps, learning rates, seeds): the codec
    configuration leaves it out, since no decoder reads it and every array would carry it."""
    return field(default=default, metadata=ENCODE_ONLY)


STORED_IF_SET = {"stored_if_set": True}


def stored_if_set(default: Any) -> Any:
    """A parameter decoding reads, added after arrays were written without it: stored only when it
    differs from its default (what its absence reads as), so arrays that leave it alone keep the
    configuration they had and earlier releases still read them."""
    return field(default=default, metadata=STORED_IF_SET)


@dataclass(frozen=True)
class Params:
    """A method's parameters, typed: subclasses declare each field once, with its default and
    whether a decoder needs it (plain field) or only the encoder (:func:`encode_only`)."""

    @classmethod
    def parse(cls, method: str, values: dict[str, Any]) -> Params:
        """From JSON-able values: unknown names and wrong types are an :class:`InputError`."""
        known = {f.name: f for f in fields(cls)}
        unknown = set(values) - set(known)
        if unknown:
            raise InputError(f"method {method!r} has no parameter(s) {sorted(unknown)}; known: {sorted(known)}")
        hints = get_type_hints(cls)
        return cls(**{k: _typed(method, k, v, hints[k]) for k, v in values.items()})

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def stored(self) -> dict[str, Any]:
        """What an array's codec configuration keeps: every parameter decoding can depend on (those
        of :func:`stored_if_set` where they are set)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if _stored(f, getattr(self, f.name))}


@dataclass(frozen=True)
class FitParams(Params):
    """The optimizer knobs of a method that fits a network per chunk (never stored)."""

    steps: int = encode_only(500)
    lr: float = encode_only(1e-3)
    batch: int = encode_only(8192)
    seed: int = encode_only(0)


def _stored(f: Field, value: Any) -> bool:
    if f.metadata.get("encode_only"):
        return False
    return not (f.metadata.get("stored_if_set") and value == f.default)


def _typed(method: str, name: str, value: Any, kind: type) -> Any:
    if kind is float and type(value) is int:
        return float(value)
    ok = type(value) is bool if kind is bool else isinstance(value, kind) and not isinstance(value, bool)
    if not ok:
        raise InputError(f"method {method!r} parameter {name!r} must be {kind.__name__}, got {value!r}")
    return value


class Method(ABC):
    """A compression method, constructed from its parameters (:attr:`Params`).

    The contract: ``encode`` and ``decode`` one normalized block; optional hooks say what else the
    method does: a budget weight per chunk (:meth:`chunk_weight`), shared state fitted once per
    array (:meth:`needs_fit`, :meth:`fit_shared`, :meth:`shared_state`, :meth:`load_shared_state`)
    and evaluation at arbitrary coordinates (:meth:`decode_at`).
    """

    name: ClassVar[str]
    method_id: ClassVar[int]
    Params: ClassVar[type[Params]] = Params
    ndims: ClassVar[tuple[int, ...]] = (3,)
    # How many byte sections encode() returns: the frame spends 4 bytes on each one's length.
    payload_sections: ClassVar[int] = 2
    # Chunk shape per ndim when the user names none: per-chunk fits want small blocks to train fast.
    default_chunks: ClassVar[dict[int, tuple[int, ...]]] = {3: (16, 64, 64), 4: (4, 16, 32, 32)}
    # Whether chunks may be encoded on several threads of one process at once: not for methods that
    # seed torch's global generator or set its thread count per chunk (their output would vary).
    thread_safe: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        self.params = self.Params.parse(self.name, params)
        # An error-bounded array's context model for its levels (streamcomp.format.bounded), which its
        # configuration stores in place of the method's shared state; None: hand-set classes only.
        self.bounded_model: ContextModel | None = None

    def stored_params(self) -> dict[str, Any]:
        """The parameters an array's codec configuration keeps: all that decoding can depend on."""
        return self.params.stored()

    def chunk_weight(self, block: np.ndarray) -> float | None:
        """A data chunk's share of the array's byte budget; None: its voxel count."""
        return None

    def rate_curve(self, block: np.ndarray) -> np.ndarray | None:
        """A data chunk's estimated payload bytes at each quantizer step ``2**RATE_LOG2_STEPS`` of
        :mod:`streamcomp.plan` (in its normalized units), from which the planner gives every chunk
        its bytes at one step common to the array; None: budgets follow :meth:`chunk_weight`."""
        return None

    def needs_fit(self) -> bool:
        """Whether :meth:`fit_shared` has work to do (the pipeline skips the fit phase otherwise)."""
        return False

    def fit_note(self) -> str:
        """One line on why this run fits nothing, logged when :meth:`needs_fit` is False (empty
        for methods that never fit shared state)."""
        return ""

    def fit_sample_chunks(self, chunks: tuple[int, ...]) -> int:
        """How many sample chunks of shape ``chunks`` :meth:`fit_shared` is given (at most, and
        fewer where the array has fewer data chunks)."""
        return SAMPLE_BLOCKS

    def fit_shared(self, samples: list[np.ndarray], targets: FitTargets | None = None) -> list[str]:
        """Fit array-level state on normalized sample blocks; returns what it decided, in words.

        ``targets`` (one per sample; None when the caller has no rate or quality target yet) lets a
        method judge whether its shared state pays for itself at this run's rate.
        """
        return []

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
    def decode(self, sections: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
        """The whole normalized block on its own voxel grid."""

    def decode_at(self, sections: list[bytes], shape: tuple[int, ...], coords: torch.Tensor) -> np.ndarray:
        """Values (normalized) at ``coords`` in the block's [-1, 1] cube, shape (n,)."""
        raise InputError(f"method {self.name!r} cannot evaluate a chunk at arbitrary coordinates")

    def decode_cells(
        self, sections: list[bytes], shape: tuple[int, ...], coords: torch.Tensor, spread: torch.Tensor
    ) -> np.ndarray | None:
        """Means (normalized) over the cells of two voxels centred at ``coords``, their voxels
        ``spread`` (per axis, in [-1, 1] units; 0 where a cell is one voxel) off the centre, one
        evaluation a cell, where the representation was trained for it; None where it was not
        (a reader then averages points of :meth:`decode_at`)."""
        return None
