"""Training the learned context model: a teacher fitted to a sample's coefficients, distilled into
the small integer student that arrays store (:class:`~streamcomp.coding.context_model.ContextModel`).

Why sufficient statistics: under the model's family (zero flag and geometric tail) a context's
likelihood depends on its symbols only through three numbers (zeros, nonzeros, sum of magnitudes
past one), and contexts are discrete (a band class and a 16-bit key), so a sample of millions of
coefficients reduces to 10^4-10^5 rows; a step on rows drawn by their symbols takes milliseconds.
"""

from __future__ import annotations

import copy
import io
import logging
import math
import zipfile
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from streamcomp.coding.context_model import (
    BUCKETS,
    CLASS_FEATURES,
    INPUTS,
    KEYS,
    ContextModel,
    class_vector,
    flat_bands,
    key_inputs,
    pair_params,
    walk_bands,
)
from streamcomp.coding.sign_model import SignModel, SignStats, coded_bits
from streamcomp.coding.sign_model import fit as fit_signs
from streamcomp.optim import Adam

logger = logging.getLogger(__name__)
LN2 = math.log(2.0)
BATCH_ROWS = 16384  # context rows per training step when sampled (from four times as many rows:
# below that a full-batch step costs about as little)


@dataclass
class ContextStats:
    """Per band class and context key: zeros, nonzeros and the sum of (|q| - 1) over nonzeros;
    and the nonzeros' sign statistics."""

    inputs: np.ndarray  # (rows, INPUTS), the integer network inputs
    counts: np.ndarray  # (rows, 3)
    signs: SignStats = field(default_factory=lambda: SignStats.merge([]))

    @property
    def symbols(self) -> float:
        return float(self.counts[:, :2].sum())


class StatsCollector:
    """Accumulates :class:`ContextStats` over coded chunks (dense per class, 65,536 keys each)."""

    def __init__(self) -> None:
        self._classes: dict[bytes, np.ndarray] = {}
        self._vectors: dict[bytes, np.ndarray] = {}
        self._signs: list[SignStats] = []

    def add(self, lattices, parents, levels: int, symbols: list[np.ndarray]) -> None:
        flat = flat_bands(symbols)

        def visit(band, base, phase, idx, keys, site):
            values = flat[band][idx]
            nonzero = np.flatnonzero(values)
            if len(nonzero):
                classes = np.full(len(nonzero), site.cls, np.int64)
                self._signs.append(SignStats.count(classes, site.features(nonzero), values[nonzero] < 0))
            vec = class_vector(base, phase)
            cid = vec.tobytes()
            if cid not in self._classes:
                self._classes[cid] = np.zeros((KEYS, 3))
                self._vectors[cid] = vec
            mag = np.abs(values).astype(np.float64)
            acc = self._classes[cid]
            # Small band phases (most of them) touch few keys: a dense pass over all 65,536 would
            # cost more than the symbols.
            seen, at = np.unique(keys, return_inverse=True) if 8 * len(keys) < KEYS else (slice(None), keys)
            width = KEYS if isinstance(seen, slice) else len(seen)
            for col, weights in enumerate((mag == 0, mag > 0, np.maximum(mag - 1, 0))):
                acc[seen, col] += np.bincount(at, weights=weights, minlength=width)
            return values

        walk_bands(lattices, parents, levels, visit)

    def stats(self) -> ContextStats:
        inputs, counts = [], []
        for cid, acc in self._classes.items():
            seen = np.flatnonzero(acc[:, :2].sum(axis=1) > 0)
            rows = np.concatenate(
                (key_inputs(seen), np.broadcast_to(self._vectors[cid], (len(seen), CLASS_FEATURES))), axis=1
            )
            inputs.append(rows)
            counts.append(acc[seen])
        if not inputs:
            return ContextStats(np.zeros((0, INPUTS), np.int64), np.zeros((0, 3)))
        self._signs = [SignStats.merge(self._signs)]
        return ContextStats(np.concatenate(inputs), np.concatenate(counts), self._signs[0])


def nll_bits(out: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Code length in bits of the rows' symbols under (logit p0, log2 s) = ``out``."""
    a, log2_s = out[:, 0], out[:, 1].clamp(-8.0, 12.0)
    inv_s = torch.exp2(-log2_s)
    log_zero = nn.functional.logsigmoid(a)
    log_nonzero = nn.functional.logsigmoid(-a) - LN2 + torch.log(-torch.expm1(-inv_s))
    nats = counts[:, 0] * log_zero + counts[:, 1] * log_nonzero - counts[:, 2] * inv_s
    return -nats.sum() / LN2


def _mlp(hidden: int, layers: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    width = INPUTS
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*mods, nn.Linear(width, 2))


def _init_output(net: nn.Sequential, counts: np.ndarray) -> None:
    """Start at the sample's pooled distribution: the right rate before any step."""
    n0, nnz, summ = counts.sum(axis=0) + 1.0
    last = net[-1]
    with torch.no_grad():
        last.weight.mul_(0.1)
        last.bias.copy_(torch.tensor([math.log(n0 / nnz), math.log2(max(summ / nnz, 0.05))]))


def _train(
    net: nn.Sequential, x: torch.Tensor, counts: torch.Tensor, steps: int, lr: float, batch_rows: int = BATCH_ROWS
) -> None:
    """Adam on the code length per symbol. Past four times ``batch_rows`` rows, each step takes
    ``batch_rows`` rows drawn in proportion to their symbols, each scaled to one symbol (an unbiased
    estimate of the full loss), for twice the steps: on head CT's 166k rows the same held-out bits
    in half the time, and a fit's time no longer grows with its rows."""
    symbols = counts[:, :2].sum(dim=1)
    sampled = len(x) > 4 * batch_rows
    steps = 2 * steps if sampled else steps
    opt = Adam(net.parameters(), lr, steps=steps)
    per_symbol = counts / symbols.clamp_min(1.0)[:, None]
    # Rows drawn by inverting the cumulative distribution: half the time of torch.multinomial,
    # which had become a third of a step. The draws are sorted first (the same rows, in another
    # order): numpy's search then walks the distribution once, 3x faster than torch's per draw.
    cdf = np.cumsum(symbols.double().numpy())
    cdf /= cdf[-1]
    for _ in range(steps):
        if sampled:
            draws = np.sort(torch.rand(batch_rows, dtype=torch.float64).numpy())
            rows = torch.from_numpy(np.searchsorted(cdf, draws).clip(max=len(x) - 1))
            loss = nll_bits(net(x[rows]), per_symbol[rows]) / batch_rows
        else:
            loss = nll_bits(net(x), counts) / symbols.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()


def expected_counts(out: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """The statistics each row's symbols would have under the distribution ``out`` predicts: the
    code length under a model of these soft counts is the cross-entropy against ``out``'s
    distribution, so fitting them is distillation (KL to the teacher) in closed form."""
    n = counts[:, :2].sum(dim=1)
    p0 = torch.sigmoid(out[:, 0])
    t = torch.exp(-torch.exp2(-out[:, 1].clamp(-8.0, 12.0)))
    nonzero = n * (1 - p0)
    return torch.stack((n * p0, nonzero, nonzero * t / (1 - t).clamp_min(1e-12)), dim=1)


@dataclass
class FittedModels:
    student: ContextModel
    teacher_bits: float  # per symbol, on the training statistics (the start's teacher as shipped, when tuned)
    student_bits: float
    sign_bits: float  # per nonzero coefficient's sign, on the training statistics


@dataclass
class ContextStart:
    """A teacher fitted to many volumes' statistics and the student distilled from it, in float:
    what a fit tunes instead of fitting both from scratch (:mod:`streamcomp.methods.starts`)."""

    teacher: nn.Sequential
    student: nn.Sequential

    @property
    def hidden(self) -> int:
        return self.student[0].out_features

    @property
    def teacher_hidden(self) -> int:
        return self.teacher[0].out_features

    def to_bytes(self) -> bytes:
        arrays = {f"{who}.{k}": v.numpy() for who in ("teacher", "student")
                  for k, v in getattr(self, who).state_dict().items()}
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> ContextStart:
        try:
            with np.load(io.BytesIO(blob), allow_pickle=False) as z:
                arrays = {k: torch.from_numpy(z[k].astype(np.float32)) for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise ValueError(f"not a context model start (an .npz of its weights): {e}; retrain the starts") from None
        nets = []
        for who in ("teacher", "student"):
            state = {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith(who + ".")}
            first = state.get("0.weight")
            if first is None or first.shape[1] != INPUTS:
                raise ValueError(f"not a context model start of this version ({INPUTS} inputs): retrain the starts")
            net = _mlp(first.shape[0], len(state) // 2 - 1)
            net.load_state_dict(state)
            nets.append(net)
        return cls(*nets)


def start_name(hidden: int) -> str:
    """The file name of the start for a student of ``hidden`` units."""
    return f"context_{hidden}hidden.npz"


def train_start(
    stats: list[ContextStats], hidden: int = 16, teacher_hidden: int = 64, steps: int = 3000, lr: float = 0.01,
    distill: float = 0.5, seed: int = 0,
) -> ContextStart:
    """The teacher (two hidden layers of ``teacher_hidden``) fitted to the pooled ``stats`` for
    ``steps``, and the ``hidden``-unit student distilled from it for as many."""
    pooled = ContextStats(np.concatenate([s.inputs for s in stats]), np.concatenate([s.counts for s in stats]))
    if not len(pooled.inputs):
        raise ValueError("no coefficients to train a context model start on")
    torch.manual_seed(seed)
    x, counts = _tensors(pooled)
    teacher = _fit_new(teacher_hidden, 2, pooled, x, counts, steps, lr)
    with torch.no_grad():
        soft = (1 - distill) * counts + distill * expected_counts(teacher(x), counts)
    return ContextStart(teacher, _fit_new(hidden, 1, pooled, x, soft, steps, lr))


def _tensors(stats: ContextStats) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.from_numpy(stats.inputs.astype(np.float32) / BUCKETS),
            torch.from_numpy(stats.counts.astype(np.float32)))


def _fit_new(
    hidden: int, layers: int, stats: ContextStats, x, counts, steps: int, lr: float, batch_rows: int = BATCH_ROWS
) -> nn.Sequential:
    net = _mlp(hidden, layers)
    _init_output(net, stats.counts)
    _train(net, x, counts, steps, lr, batch_rows)
    return net


def fit_context_model(
    stats: ContextStats,
    hidden: int = 16,
    teacher_hidden: int = 64,
    teacher_steps: int = 300,
    student_steps: int = 600,
    distill: float = 0.5,
    seed: int = 0,
    lr: float = 0.04,
    start: ContextStart | None = None,
    signs: bool = True,
    batch_rows: int = BATCH_ROWS,
) -> FittedModels:
    """The stored student, rounded to integers. From scratch: a teacher (two hidden layers of
    ``teacher_hidden``) fitted to ``stats``, then the one-layer student of ``hidden`` units
    distilled from it (fitted to the data's counts mixed with the teacher's expected counts,
    ``distill`` the teacher's share). From a ``start``: its student tuned on ``stats`` for
    ``student_steps``, which gets as close in under half the time (a teacher tuned alongside
    gained nothing there: the start's own teacher is already in the student). ``signs``: fit the
    sign model (else every sign costs a bit). ``batch_rows``: rows a sampled step takes."""
    if not len(stats.inputs):
        raise ValueError("no coefficients to fit a context model on")
    torch.manual_seed(seed)
    x, counts = _tensors(stats)
    symbols = stats.symbols
    if start is not None:
        if start.hidden != hidden:
            raise ValueError(f"a {start.hidden}-unit start cannot seed a {hidden}-unit student")
        student = copy.deepcopy(start.student)
        _train(student, x, counts, student_steps, lr, batch_rows)
        with torch.no_grad():
            teacher_bits = float(nll_bits(start.teacher(x), counts)) / symbols
    else:
        teacher = _fit_new(teacher_hidden, 2, stats, x, counts, teacher_steps, lr, batch_rows)
        with torch.no_grad():
            target = teacher(x)
            teacher_bits = float(nll_bits(target, counts)) / symbols
            soft = (1 - distill) * counts + distill * expected_counts(target, counts)
        student = _fit_new(hidden, 1, stats, x, soft, student_steps, lr, batch_rows)
    model = to_integer(student)
    model.signs = fit_signs(stats.signs) if signs else SignModel()
    student_bits = integer_bits(model, stats) / symbols
    sign_bits = coded_bits(model.signs, stats.signs) / max(stats.signs.signs, 1.0)
    logger.debug("context model: teacher %.4f, student %.4f bits/coefficient", teacher_bits, student_bits)
    return FittedModels(model, teacher_bits, student_bits, sign_bits)


def to_integer(student: nn.Sequential) -> ContextModel:
    """The one-layer float student as the integer model arrays store."""
    first, last = student[0], student[2]
    return ContextModel.from_float(
        first.weight.detach().numpy().T, first.bias.detach().numpy(), last.weight.detach().numpy().T,
        last.bias.detach().numpy(),
    )


def integer_bits(model: ContextModel, stats: ContextStats) -> float:
    """Code length of the statistics' symbols under the integer model's rounded codes."""
    p0, t = pair_params(model.codes(stats.inputs))
    n0, nnz, summ = stats.counts.T
    bits = -(n0 * np.log2(p0) + nnz * (np.log2((1 - p0) / 2) + np.log2(1 - t)) + summ * np.log2(t))
    return float(bits.sum())
