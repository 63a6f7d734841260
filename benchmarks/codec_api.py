"""The shape every baseline codec has, so the search, the worker and the report treat them alike.

A baseline is a function ``(volume, knob) -> CodecResult`` plus a description of its quality knob
(range, scale, and whether turning it up raises or lowers the compression ratio), a check saying
why it cannot run on this machine, and a check saying why it cannot take a given volume. Reasons
are strings, never silent omissions: the report lists every baseline that did not run and why.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


class CodecResult(NamedTuple):
    """One encode/decode round trip: every stored byte, the decoded volume, and wall times."""

    stored_bytes: int
    decoded: np.ndarray
    encode_s: float
    decode_s: float


@dataclass(frozen=True)
class Knob:
    """A codec's quality parameter and how to search it.

    ``increasing``: a larger value gives a higher compression ratio. ``log``: search the value on a
    log scale (step sizes, error bounds); ``integer``: the codec only takes whole values.
    """

    name: str
    lo: float
    hi: float
    increasing: bool
    log: bool = False
    integer: bool = False

    def value(self, u: float) -> float:
        """The knob value at position ``u`` in [0, 1] of the searched range."""
        u = min(max(u, 0.0), 1.0)
        v = self.lo * (self.hi / self.lo) ** u if self.log else self.lo + u * (self.hi - self.lo)
        return float(round(v)) if self.integer else float(v)


CodecFn = Callable[[np.ndarray, float], CodecResult]


@dataclass(frozen=True)
class Baseline:
    """A registered baseline codec.

    ``knob`` is None for lossless codecs: they run once per volume at a fixed setting and give the
    lossless floor. ``unavailable`` returns why the codec cannot run here (None if it can);
    ``unsupported`` why it cannot take this volume (None if it can).
    """

    name: str
    family: str
    description: str
    run: CodecFn
    knob: Knob | None
    unavailable: Callable[[], str | None]
    unsupported: Callable[[np.ndarray], str | None]
    fixed_knob: float = 0.0

    @property
    def lossless(self) -> bool:
        return self.knob is None


def header_bytes(volume: np.ndarray) -> int:
    """Bytes a minimal container needs for shape and dtype when the codec stream lacks them.

    One byte each for dtype code and rank, four per dimension: charged to codecs whose output does
    not describe itself (raw zstd/blosc streams, SZ3), so every codec is compared as a file a user
    could decode without outside knowledge.
    """
    return len(struct.pack(f"<BB{volume.ndim}I", 0, volume.ndim, *volume.shape))


def any_volume(_volume: np.ndarray) -> str | None:
    return None
