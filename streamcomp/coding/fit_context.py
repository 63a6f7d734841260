"""Training the learned context model: a teacher fitted to a sample's coefficients, distilled into
the small integer student that arrays store (:class:`~streamcomp.coding.context_model.ContextModel`).

Why sufficient statistics: under the model's family (zero flag and geometric tail) a context's
likelihood depends on its symbols only through three numbers (zeros, nonzeros, sum of magnitudes
past one), and contexts are discrete (a band class and a 16-bit key), so a sample of millions of
coefficients reduces to 10^4-10^5 rows; a step on rows drawn by their symbols takes milliseconds.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

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
    key_inputs,
    pair_params,
    walk_bands,
)

logger = logging.getLogger(__name__)
LN2 = math.log(2.0)
BATCH_ROWS = 16384  # context rows per training step when sampled
SAMPLED_ROWS = 4 * BATCH_ROWS  # below this many rows a full-batch step costs about as little


@dataclass
class ContextStats:
    """Per band class and context key: zeros, nonzeros and the sum of (|q| - 1) over nonzeros."""

    inputs: np.ndarray  # (rows, INPUTS), the integer network inputs
    counts: np.ndarray  # (rows, 3)

    @property
    def symbols(self) -> float:
        return float(self.counts[:, :2].sum())


class StatsCollector:
    """Accumulates :class:`ContextStats` over coded chunks (dense per class, 65,536 keys each)."""

    def __init__(self) -> None:
        self._classes: dict[bytes, np.ndarray] = {}
        self._vectors: dict[bytes, np.ndarray] = {}

    def add(self, lattices, parents, levels: int, symbols: list[np.ndarray]) -> None:
        def visit(band, base, phase, idx, keys):
            values = symbols[band].reshape(-1)[idx]
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
        return ContextStats(np.concatenate(inputs), np.concatenate(counts))


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


def _train(net: nn.Sequential, x: torch.Tensor, counts: torch.Tensor, steps: int, lr: float) -> None:
    """Adam on the code length per symbol. Past SAMPLED_ROWS rows, each step takes BATCH_ROWS rows
    drawn in proportion to their symbols, each scaled to one symbol (an unbiased estimate of the
    full loss), for twice the steps: on head CT's 166k rows the same held-out bits in half the
    time, and a fit's time no longer grows with its rows."""
    symbols = counts[:, :2].sum(dim=1)
    sampled = len(x) > SAMPLED_ROWS
    steps = 2 * steps if sampled else steps
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    per_symbol = counts / symbols.clamp_min(1.0)[:, None]
    for _ in range(steps):
        if sampled:
            rows = torch.multinomial(symbols, BATCH_ROWS, replacement=True)
            loss = nll_bits(net(x[rows]), per_symbol[rows]) / BATCH_ROWS
        else:
            loss = nll_bits(net(x), counts) / symbols.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


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
    teacher_bits: float  # per symbol, on the training statistics
    student_bits: float


def fit_context_model(
    stats: ContextStats,
    hidden: int = 16,
    teacher_hidden: int = 64,
    teacher_steps: int = 300,
    student_steps: int = 600,
    distill: float = 0.5,
    seed: int = 0,
    lr: float = 0.04,
) -> FittedModels:
    """Teacher (two hidden layers of ``teacher_hidden``) fitted to ``stats``, then the one-layer
    student of ``hidden`` units distilled from it (fitted to the data's counts mixed with the
    teacher's expected counts, ``distill`` the teacher's share), rounded to integers."""
    if not len(stats.inputs):
        raise ValueError("no coefficients to fit a context model on")
    torch.manual_seed(seed)
    x = torch.from_numpy(stats.inputs.astype(np.float32) / BUCKETS)
    counts = torch.from_numpy(stats.counts.astype(np.float32))
    symbols = stats.symbols
    teacher = _mlp(teacher_hidden, 2)
    _init_output(teacher, stats.counts)
    _train(teacher, x, counts, teacher_steps, lr)
    with torch.no_grad():
        target = teacher(x)
        teacher_bits = float(nll_bits(target, counts)) / symbols
        soft = (1 - distill) * counts + distill * expected_counts(target, counts)
    student = _mlp(hidden, 1)
    _init_output(student, stats.counts)
    _train(student, x, soft, student_steps, lr)
    first, last = student[0], student[2]
    model = ContextModel.from_float(
        first.weight.detach().numpy().T, first.bias.detach().numpy(), last.weight.detach().numpy().T,
        last.bias.detach().numpy(),
    )
    student_bits = integer_bits(model, stats) / symbols
    logger.debug("context model: teacher %.4f, student %.4f bits/coefficient", teacher_bits, student_bits)
    return FittedModels(model, teacher_bits, student_bits)


def integer_bits(model: ContextModel, stats: ContextStats) -> float:
    """Code length of the statistics' symbols under the integer model's rounded codes."""
    p0, t = pair_params(model.codes(stats.inputs))
    n0, nnz, summ = stats.counts.T
    bits = -(n0 * np.log2(p0) + nnz * (np.log2((1 - p0) / 2) + np.log2(1 - t)) + summ * np.log2(t))
    return float(bits.sum())
