"""The signs of quantized wavelet coefficients, coded from their decoded neighbours' signs.

Why: a nonzero coefficient's sign costs one bit under a symmetric model, 16-22 % of the learned
coder's bytes. Along an edge, neighbouring detail coefficients share their sign along the band's
low-pass axes and alternate along its high-pass ones, so the signed sums of the neighbours decoded
in earlier phases of the band predict it: held out on head CT at 64x a quarter of a bit per sign,
on EM at 8x and thorax CT 0.07-0.10 (the parent, the siblings and the low-pass image add under
0.01 and are not used).

The model is a logistic regression per sign class (transformed axes, level, orientation, phase)
on the signed half-octave buckets of those sums: per axis the two face neighbours in the
checkerboard's second half, the two in-plane diagonals in the first half's second phase. Weights
are small integers fitted per array and stored for the classes where they pay their bytes; the
logit is rounded to codes, each code one two-symbol table, so encoder and decoder agree exactly.
"""

from __future__ import annotations

import itertools
import struct
from functools import lru_cache

import constriction
import numpy as np

from streamcomp.coding import rans
from streamcomp.coding.bands import buckets
from streamcomp.errors import ChunkFormatError

SIGN_FEATURES = 4  # one per transformed axis (at most four), or the two diagonals
MAX_AXES = 4
ORIENTATIONS = 16  # the approximation band, then up to 15 detail orientations
LEVELS = 4  # level slots, as deep as the transform goes (MAX_LEVELS): deeper would change the format
SIGN_CLASSES = MAX_AXES * LEVELS * ORIENTATIONS * 3  # axes, level, orientation, phase
WEIGHT_UNIT = 16  # weights and bias in 1/16 logit per bucket
STEPS = 2  # codes in half logits
MAX_CODE = 12  # |logit| <= 6: p >= 0.0025
CODES = 2 * MAX_CODE + 1
MIN_RUN = 16  # a code fewer signs of a band phase share is rounded to a whole even logit
_ENTRY = struct.Struct("<H" + "b" * (SIGN_FEATURES + 1))


def sign_class(axes: int, level: int, orientation: int, phase: int) -> int:
    """Index of a band phase's sign class; ``level`` 0 is the finest, ``orientation`` 0 the
    approximation band."""
    return ((((axes - 1) * LEVELS) + level) * ORIENTATIONS + orientation) * 3 + phase


def sign_features(sums: np.ndarray, selected: np.ndarray) -> np.ndarray:
    """(len(selected), SIGN_FEATURES) signed buckets of the neighbour sums a decoder has at the
    ``selected`` positions of a band phase once the earlier phases are decoded; ``sums``: (pairs,
    positions) the signed sum of each of the phase's :func:`~streamcomp.coding.bands.neighbour_index`
    pairs: per transformed axis the two face neighbours (the checkerboard's second half), or the two
    in-plane diagonals (the first half's second phase). Phase 0 has none: zeros."""
    out = np.zeros((len(selected), SIGN_FEATURES), np.int64)
    if len(sums):
        total = np.take(sums, selected, axis=1).astype(np.int64)
        total += _SIGNED_OFFSET
        out[:, : len(sums)] = np.take(_SIGNED_BUCKET, total, mode="clip").T
    return out


# sign(t) * buckets(|t|) for t in -255..255, indexed by t + 255 (beyond, the end buckets):
# one table lookup instead of sign, magnitude, bucket and product.
_SIGNED_OFFSET = 255
_SIGNED_BUCKET = np.sign(np.arange(-_SIGNED_OFFSET, _SIGNED_OFFSET + 1)) * buckets(
    np.abs(np.arange(-_SIGNED_OFFSET, _SIGNED_OFFSET + 1))
)


class SignModel:
    """Integer logistic weights per sign class (classes not stored code signs at one bit)."""

    def __init__(self, weights: dict[int, np.ndarray] | None = None) -> None:
        self.weights = {int(c): np.asarray(w, np.int64) for c, w in (weights or {}).items()}

    def codes(self, cls: int, features: np.ndarray, merge: bool = True) -> np.ndarray:
        """Sign codes (logit of a positive sign in 1/STEPS units, offset by MAX_CODE) of one
        class's ``features``, where ``merge`` (signs coded in runs), rare ones merged as
        :func:`merge_rare` does."""
        w = self.weights.get(cls)
        if w is None:
            return np.full(len(features), MAX_CODE, np.int64)
        codes = _codes(features, w)
        return merge_rare(codes) if merge else codes

    def to_bytes(self) -> bytes:
        entries = sorted(self.weights.items())
        return struct.pack("<H", len(entries)) + b"".join(_ENTRY.pack(c, *map(int, w)) for c, w in entries)

    @classmethod
    def from_bytes(cls, blob: bytes) -> SignModel:
        if len(blob) < 2:
            raise ChunkFormatError("sign model is truncated")
        (count,) = struct.unpack_from("<H", blob, 0)
        if len(blob) != 2 + count * _ENTRY.size:
            raise ChunkFormatError("sign model has the wrong size")
        weights = {}
        for i in range(count):
            c, *w = _ENTRY.unpack_from(blob, 2 + i * _ENTRY.size)
            if c >= SIGN_CLASSES:
                raise ChunkFormatError(f"sign model names unknown class {c}")
            weights[c] = np.array(w)
        return cls(weights)


def _codes(features: np.ndarray, w: np.ndarray) -> np.ndarray:
    z = features @ w[:-1] + w[-1]
    codes = np.clip(np.floor((z * STEPS + WEIGHT_UNIT // 2) / WEIGHT_UNIT), -MAX_CODE, MAX_CODE)
    return codes.astype(np.int64) + MAX_CODE


def merge_rare(codes: np.ndarray) -> np.ndarray:
    """Codes fewer than MIN_RUN signs share take the nearest whole even logit (each code is one
    entropy-coder call); decided from the codes alone, as the decoder sees them."""
    counts = np.bincount(codes, minlength=CODES)
    rare = counts[codes] < MIN_RUN
    if not rare.any():
        return codes
    merged = codes.copy()
    merged[rare] = np.round((codes[rare] - MAX_CODE) / (2 * STEPS)).astype(np.int64) * 2 * STEPS + MAX_CODE
    return merged


def _probabilities() -> np.ndarray:
    """Integer weights (negative, positive) of every code, as the coder's tables hold them."""
    p = 1.0 / (1.0 + np.exp(-(np.arange(CODES) - MAX_CODE) / STEPS))
    return np.maximum(np.round(np.stack((1 - p, p), axis=1) * 2.0**24), 1.0)


_WEIGHTS = _probabilities()
LENGTHS = -np.log2(_WEIGHTS / _WEIGHTS.sum(axis=1, keepdims=True))  # bits of (negative, positive)
_TABLES = [constriction.stream.model.Categorical(w, perfect=False) for w in _WEIGHTS]


@lru_cache(maxsize=1)
def compiled_table():
    """Every code's (negative, positive) table for the compiled coder (:mod:`streamcomp.coding.rans`)."""
    return rans.table(_WEIGHTS)


def encode(coder, negative: np.ndarray, code: int) -> None:
    coder.encode_reverse((~negative).astype(np.int32), _TABLES[code])


def decode(coder, count: int, code: int) -> np.ndarray:
    """Negative flags of ``count`` signs."""
    return coder.decode(_TABLES[code], count) == 0


def bits(negative: np.ndarray, codes: np.ndarray) -> float:
    return float(LENGTHS[codes, (~negative).astype(np.int64)].sum())


def fit(stats: SignStats, l2: float = 1.0, iters: int = 12) -> SignModel:
    """Per class, the logistic regression of the sign on its features (Newton steps on the
    counts), rounded to integers and kept where its bits saved on the sample exceed its bytes."""
    weights = {}
    for cls, rows in stats.by_class():
        x = np.concatenate((rows.features, np.ones((len(rows.keys), 1))), axis=1).astype(np.float64)
        n = rows.positive + rows.negative
        w = np.zeros(x.shape[1])
        for _ in range(iters):
            p = 1.0 / (1.0 + np.exp(-(x @ w)))
            grad = x.T @ (n * p - rows.positive) + l2 * w
            hess = (x * (n * p * (1 - p))[:, None]).T @ x + l2 * np.eye(len(w))
            w -= np.linalg.solve(hess, grad)
        candidate = SignModel({cls: np.clip(np.round(w * WEIGHT_UNIT), -127, 127)})
        if n.sum() - coded_bits(candidate, rows) > 8 * _ENTRY.size:
            weights.update(candidate.weights)
    return SignModel(weights)


def coded_bits(model: SignModel, stats: SignStats) -> float:
    """Bits of the statistics' signs under ``model`` (rare codes not merged: an estimate)."""
    total = 0.0
    for cls, rows in stats.by_class():
        w = model.weights.get(cls)
        if w is None:
            total += float((rows.positive + rows.negative).sum())
            continue
        codes = _codes(rows.features, w)
        total += float((rows.positive * LENGTHS[codes, 1] + rows.negative * LENGTHS[codes, 0]).sum())
    return total


_BASE = 2 * 15 + 1  # signed buckets -15..15


class SignStats:
    """Distinct (class, features) rows of a sample's nonzero coefficients and their sign counts,
    the rows packed into one integer key each, in increasing order (class first)."""

    def __init__(self, keys: np.ndarray, positive: np.ndarray, negative: np.ndarray) -> None:
        self.keys, self.positive, self.negative = keys, positive, negative

    @property
    def classes(self) -> np.ndarray:
        return self.keys // _BASE**SIGN_FEATURES

    @property
    def features(self) -> np.ndarray:
        return (self.keys[:, None] // _BASE ** np.arange(SIGN_FEATURES)) % _BASE - 15

    @property
    def signs(self) -> float:
        return float((self.positive + self.negative).sum())

    def select(self, rows: np.ndarray | slice) -> SignStats:
        return SignStats(self.keys[rows], self.positive[rows], self.negative[rows])

    def by_class(self) -> list[tuple[int, SignStats]]:
        """Each class and its rows (contiguous, the keys being sorted)."""
        classes = self.classes
        cuts = [0, *(np.flatnonzero(np.diff(classes)) + 1).tolist(), len(classes)]
        return [(int(classes[a]), self.select(slice(a, b))) for a, b in itertools.pairwise(cuts) if b > a]

    @classmethod
    def count(cls, classes: np.ndarray, features: np.ndarray, negative: np.ndarray) -> SignStats:
        """Counts of the signs ``negative`` per distinct row of (``classes``, ``features``)."""
        keys = classes * _BASE**SIGN_FEATURES + (features + 15) @ (_BASE ** np.arange(SIGN_FEATURES))
        return cls._reduce(keys, (~negative).astype(np.float64), negative.astype(np.float64))

    @classmethod
    def merge(cls, parts: list[SignStats]) -> SignStats:
        if not parts:
            return cls(np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
        return cls._reduce(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("keys", "positive", "negative")))

    @classmethod
    def _reduce(cls, keys: np.ndarray, positive: np.ndarray, negative: np.ndarray) -> SignStats:
        distinct, at = np.unique(keys, return_inverse=True)
        at = at.reshape(-1)
        return cls(distinct, np.bincount(at, positive, len(distinct)), np.bincount(at, negative, len(distinct)))
