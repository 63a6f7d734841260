"""Error-bounded chunks: every voxel within E of the source, E = 0 meaning bit for bit.

Construction: uniform quantization with step 2E+1 (integers; 2E for floats), so that every
voxel's reconstruction error is at most E whatever the code does, then exact coding of the
quantization levels (:mod:`streamcomp.coding.exact`); E = 0 on integer data is plain lossless
coding. What is quantized is, per chunk, whichever codes shorter:

- the values themselves (``LEVELS``): best at small bounds, where any lossy layer's residual is
  the sensor noise and codes no better than the values;
- the residual after a lossy wavelet layer (``LAYERED``, integers, E >= 8: Bai et al., CVPR 2021,
  a lossy image plus a residual quantized in the pixel domain): at wide bounds quantizing the
  values themselves turns every smooth gradient into a staircase, which the lossy layer avoids.
  Its quantizer step is the residual's (2E+1), which measured best of 0.5-4 times that.

Floats that are not whole numbers, ranges too wide for the wavelet coder, and any chunk whose
quantized reconstruction would miss the bound after rounding to the dtype are stored as their
raw bytes, byte-shuffled and zstd-compressed: exact, hence within every bound.

Levels are coded by the exact coder's hand-set context classes or, where it codes shorter, under a
context model fitted for the array (:mod:`streamcomp.format.bounded_fit`) and stored in its
configuration.

Section layout: u8 kind | f64 step | payload (levels: the exact code; layered: u32 length, the
lossy layer's section, the exact code of the residual's levels; bytes: shuffled zstd).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
from numcodecs import Blosc

from streamcomp.coding.bands import clear_winner, log_magnitudes
from streamcomp.coding.context_model import ContextModel
from streamcomp.coding.exact import MAX_RANGE, ExactPlan, decode_exact
from streamcomp.coding.rate_estimate import first_order_bytes
from streamcomp.coding.residual import ResidualCoder, decode_residual
from streamcomp.errors import ChunkFormatError
from streamcomp.values import normalize

# Default chunks: large enough that band descriptors and per-run work cost little, small enough for
# random access; 4D ones hold as many voxels as 3D ones (the 4D MRI in 4x32x64x64 chunks, an eighth
# of that, coded 1.4-2.2 % longer and decoded losslessly 10 % slower: a 4-frame chunk has one level).
BOUNDED_CHUNKS = {3: (64, 256, 256), 4: (8, 32, 128, 128)}
_HEAD = struct.Struct("<Bd")
_LOSSY = struct.Struct("<I")  # length of the lossy layer's section
LEVELS, BYTES, LAYERED = 0, 1, 2
LAYERED_FROM = 8  # smallest bound (data units) at which a lossy layer is tried
# The residual's levels after a lossy layer: few distinct values, no correlation left along z, so
# planar 5/3, what the exact coder chose for them on every chunk of EM, both CTs and MRI at E = 8, 16.
RESIDUAL_TRANSFORM = (True, "5/3")
# What the residual's levels add to a layer, at least, as a share of the layer's first-order
# estimate: a layer whose estimate with that share reaches the limit is not coded. Measured on every
# chunk of EM, both CTs and MRI at E = 8, 16: the residual cost 0.17-0.53 of the coded layer, the
# coded layer 0.86-1.16 of its estimate, and the rule kept the sections coding every layer keeps
# (thorax CT and MRI skip their layers, encoding in 55-75 % of the time).
RESIDUAL_SHARE = 0.2
_RAW = Blosc(cname="zstd", clevel=9, shuffle=Blosc.SHUFFLE)


class BoundViolation(RuntimeError):
    """A chunk decoded outside its bound at encode time: a streamcomp bug, never written."""


def step_for(dtype: np.dtype, max_error: float) -> float:
    """The quantizer step that keeps every voxel within ``max_error``: 2E+1 on integers (E
    rounded down to a whole number of units), 2E on floats; 1 (no quantization) for lossless."""
    if np.dtype(dtype).kind in "iu":
        return float(2 * int(max_error) + 1)
    return 2.0 * float(max_error) if max_error > 0 else 1.0


def _levels(finite: np.ndarray, vmin: float, step: float) -> np.ndarray:
    """Quantization levels, offset from the chunk's minimum (nearest level, ties up)."""
    if _integer_levels(finite.dtype, vmin, step):  # the same levels without a float64 pass
        return (finite.astype(np.int64) - int(vmin) + int(step) // 2) // int(step)
    return np.floor((finite.astype(np.float64) - vmin) / step + 0.5).astype(np.int64)


def _integer_levels(dtype: np.dtype, vmin: float, step: float) -> bool:
    """Whether the levels of ``dtype`` values are taken in integer arithmetic: integers of at most
    32 bits (every supported integer dtype) from a whole minimum, at an odd whole step (2E+1)."""
    whole = float(vmin).is_integer() and abs(vmin) < 2**53 and float(step).is_integer() and step % 2 == 1
    return np.dtype(dtype).kind in "iu" and np.dtype(dtype).itemsize <= 4 and whole


def _within_by_arithmetic(dtype: np.dtype, vmin: float, vmax: float, step: float, max_error: float) -> bool:
    """Whether integer levels at ``step`` are within ``max_error`` of their values whatever the
    values, so that their check, which cannot fail, is skipped: levels in integer arithmetic are
    within ``step // 2`` of them, and clipping a reconstruction to the range (both ends whole)
    only moves it towards its value."""
    return _integer_levels(dtype, vmin, step) and float(vmax).is_integer() and int(step) // 2 <= max_error


def reconstruct(levels: np.ndarray, vmin: float, vmax: float, step: float, dtype: np.dtype) -> np.ndarray:
    """Values of ``levels`` in the data's units and dtype, clipped to the chunk's range (which only
    moves a reconstruction towards the true value, since that lies in the range)."""
    if np.dtype(dtype).kind in "iu" and float(step).is_integer() and float(vmin).is_integer():
        # the same values in integer arithmetic (exact either way), without a float64 pass
        return np.clip(int(vmin) + levels.astype(np.int64) * int(step), vmin, vmax).astype(dtype)
    values = np.clip(vmin + levels.astype(np.float64) * step, vmin, vmax)
    return (np.rint(values) if np.dtype(dtype).kind in "iu" else values).astype(dtype)


@dataclass(frozen=True, eq=False)
class Layer:
    """A layered section's lossy layer: its bytes (``lossy``) and, decoded for a block of
    ``shape`` and range ``vmin``..``vmax``, the integers in the data's units that the residual's
    levels add to (``base``), as the encoder forms the levels on it and the decoder adds them."""

    lossy: bytes
    shape: tuple[int, ...]
    vmin: float
    vmax: float
    base: np.ndarray

    @classmethod
    def decoded(cls, lossy: bytes, shape: tuple[int, ...], vmin: float, vmax: float) -> Layer:
        """``lossy`` decoded for such a block: by the encoder and the decoder alike."""
        norm = decode_residual(lossy, shape)
        base = np.rint((norm.astype(np.float64) + 1.0) * 0.5 * (vmax - vmin) + vmin).astype(np.int64)
        return cls(lossy, tuple(shape), vmin, vmax, base)

    def holds(self, lossy: bytes, shape: tuple[int, ...], vmin: float, vmax: float) -> bool:
        """Whether this is the layer of ``lossy`` decoded for that shape and range."""
        return (self.shape, self.vmin, self.vmax) == (tuple(shape), vmin, vmax) and self.lossy == lossy


def _layer(
    block: np.ndarray, vmin: float, vmax: float, step: float, shorter_than: float = np.inf,
    planar: bool | None = None,
) -> tuple[Layer, np.ndarray] | None:
    """A lossy wavelet layer of integer ``block`` at the residual's quantizer step, decoded as
    :func:`decode_bounded` decodes it, and the residual's levels; the layer by the ``planar`` or
    volumetric transform, or where ``planar`` is None whichever codes it shorter, judged by their
    symbols' summed log-magnitudes where those differ clearly (coding the residual's levels after
    both picked the same on every CT volume measured). None when the layer alone is
    ``shorter_than`` bytes or longer: a layered section cannot then be the shorter (thorax CT and
    MRI at E = 8, where the layer costs what the levels do), so the residual is not quantized.
    At the odd steps it is given (:func:`_within_by_arithmetic`), every voxel is within
    ``step // 2`` by integer arithmetic: levels of the step around an integer base."""
    norm = normalize(block)[0]
    log2_step = float(np.log2(2.0 * step / (vmax - vmin)))
    if planar is None:
        coders = {p: ResidualCoder(norm, p) for p in (False, True)}
        planar = clear_winner({p: log_magnitudes(coder.quantize(log2_step)[1]) for p, coder in coders.items()})
        layers = (coders[p].code_bytes(log2_step) for p in ((False, True) if planar is None else (planar,)))
    else:
        coder = ResidualCoder(norm, planar)
        estimate = first_order_bytes([np.abs(b).reshape(-1) for b in coder.bands], log2_step)
        if estimate * (1 + RESIDUAL_SHARE) >= shorter_than:
            return None
        layers = iter((coder.code_bytes(log2_step),))
    lossy = min(layers, key=len)
    if len(lossy) >= shorter_than:
        return None
    layer = Layer.decoded(lossy, block.shape, vmin, vmax)
    return layer, (block.astype(np.int64) - layer.base + int(step) // 2) // int(step)


def within(decoded: np.ndarray, block: np.ndarray, max_error: float) -> bool:
    """Whether every finite voxel of ``decoded`` is within ``max_error`` of ``block``; with a
    zero bound on floats, bit for bit (so -0.0 stays -0.0)."""
    finite = np.isfinite(block)
    if max_error == 0 and block.dtype.kind == "f":
        same = decoded.view(f"u{block.dtype.itemsize}") == block.view(f"u{block.dtype.itemsize}")
        return bool(np.all(same | ~finite))
    with np.errstate(invalid="ignore"):  # inf - inf at non-finite voxels, masked out
        err = np.abs(decoded.astype(np.float64) - block.astype(np.float64))
    return bool(np.all((err <= max_error) | ~finite))


# Section kinds whose estimated bytes (the hand-set classes' bits) differ by more than this factor
# are told apart on the estimates, and only the shorter is coded; closer, both are coded and the
# shorter kept. (Measured: layered / levels bytes 0.77-0.94 on head CT at E = 8-16, 1.2-1.4 on
# thorax CT and MRI.)
_CLEAR_SECTION = 1.1


@dataclass
class Section:
    """A section kind planned for a block: the levels it codes, planned, and a layered section's
    lossy layer."""

    kind: int
    levels: ExactPlan
    layer: Layer | None = None

    def __post_init__(self) -> None:
        if (self.kind == LAYERED) != (self.layer is not None):
            raise ValueError("a layered section, and only one, has a lossy layer")

    @property
    def estimate(self) -> float:
        """Estimated bytes (the levels' :attr:`ExactPlan.bits`, without descriptors)."""
        return (_LOSSY.size + len(self.layer.lossy) if self.layer is not None else 0) + self.levels.bits / 8

    def code(self, step: float, model: ContextModel | None) -> bytes:
        layer = b"" if self.layer is None else _LOSSY.pack(len(self.layer.lossy)) + self.layer.lossy
        return _HEAD.pack(self.kind, step) + layer + self.levels.code(model)


def planned_sections(
    block: np.ndarray, filled: np.ndarray, vmin: float, vmax: float, step: float, max_error: float,
    model: ContextModel | None = None,
) -> list[Section]:
    """The section kinds worth coding for ``block`` (``filled``: its non-finite voxels set to
    ``vmin``): the values' levels, and from E = LAYERED_FROM on integers a lossy layer plus its
    residual's levels; those whose estimate is within _CLEAR_SECTION of the least (estimates
    under the array's ``model`` where it has one: :class:`ExactPlan`). Empty when the range is
    too wide for the exact coder."""
    sections: list[Section] = []
    if (vmax - vmin) / step >= MAX_RANGE - 1:
        return sections
    levels = _levels(filled, vmin, step)
    if _within_by_arithmetic(block.dtype, vmin, vmax, step, max_error) or within(
        reconstruct(levels, vmin, vmax, step, block.dtype), block, max_error
    ):
        sections.append(Section(LEVELS, ExactPlan(levels, model)))
    if max_error >= LAYERED_FROM and vmax > vmin and _within_by_arithmetic(block.dtype, vmin, vmax, step, max_error):
        least = min((s.estimate for s in sections), default=np.inf)
        # The values' levels are the block at the layer's step: the transform they chose is the
        # layer's (the same on every chunk of EM, both CTs and MRI at E = 8 and 16).
        planar = sections[0].levels.planar if sections else None
        layer = _layer(block, vmin, vmax, step, _CLEAR_SECTION * least, planar)
        if layer is not None:
            sections.append(Section(LAYERED, ExactPlan(layer[1], model, RESIDUAL_TRANSFORM), layer[0]))
    least = min((s.estimate for s in sections), default=np.inf)
    return [s for s in sections if s.estimate <= _CLEAR_SECTION * least]


def encode_bounded(
    block: np.ndarray, vmin: float, vmax: float, max_error: float, model: ContextModel | None = None
) -> tuple[bytes, Layer | None]:
    """One section holding ``block`` (valid region, finite range ``vmin``..``vmax``) within
    ``max_error`` of every finite voxel; non-finite voxels are the chunk layer's (its class map).
    ``model``: the array's context model for the levels (None: hand-set classes only). Returned
    with the section: its lossy layer where it is a layered one (else None), already decoded, which
    spares the chunk's check decoding it a second time (:func:`decode_bounded`)."""
    step = step_for(block.dtype, max_error)
    filled = block if block.dtype.kind != "f" else np.where(np.isfinite(block), block, vmin)
    sections = planned_sections(block, filled, vmin, vmax, step, max_error, model)
    coded = sorted(((section.code(step, model), section.layer) for section in sections), key=lambda c: len(c[0]))
    if coded and len(coded[0][0]) <= block.nbytes:
        return coded[0]
    # Too wide a range for the exact coder, or data it expands (noise): the block itself, exact.
    raw = _HEAD.pack(BYTES, step) + _RAW.encode(np.ascontiguousarray(block))
    return min([*coded, (raw, None)], key=lambda c: len(c[0]))


def decode_bounded(
    data: bytes, shape: tuple[int, ...], dtype: np.dtype, vmin: float, vmax: float,
    model: ContextModel | None = None, layer: Layer | None = None,
) -> np.ndarray:
    """Inverse of :func:`encode_bounded` under the same ``model``: the block in its dtype
    (non-finite voxels not yet refilled). ``layer``: the encoder's, for its check: where it
    :meth:`~Layer.holds` the section's lossy layer for this shape and range, its ``base`` is what
    decoding that gives (it was decoded from those bytes so), and it is not decoded again."""
    if len(data) < _HEAD.size:
        raise ChunkFormatError("bounded section is shorter than its header")
    kind, step = _HEAD.unpack_from(data, 0)
    if kind == LEVELS and np.isfinite(step) and step > 0:
        return reconstruct(decode_exact(data[_HEAD.size :], shape, model), vmin, vmax, step, dtype)
    if kind == LAYERED and np.isfinite(step) and step >= 1 and len(data) >= _HEAD.size + _LOSSY.size:
        (size,) = _LOSSY.unpack_from(data, _HEAD.size)
        start = _HEAD.size + _LOSSY.size
        lossy = bytes(data[start : start + size])
        if layer is None or not layer.holds(lossy, shape, vmin, vmax):
            layer = Layer.decoded(lossy, shape, vmin, vmax)
        base = layer.base
        levels = decode_exact(data[start + size :], shape, model).astype(np.int64)
        return np.clip(base + levels * int(step), vmin, vmax).astype(dtype)
    if kind == BYTES:
        raw = np.frombuffer(_RAW.decode(data[_HEAD.size :]), dtype)
        if raw.size != int(np.prod(shape)):
            raise ChunkFormatError("bounded section's raw bytes do not match the chunk's shape")
        return raw.reshape(shape)
    raise ChunkFormatError("bounded section has an invalid header")
