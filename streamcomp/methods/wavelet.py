"""``wavelet`` (the default method): the 3D wavelet coder with a learned entropy model shared by
every chunk of an array.

Each chunk is its CDF 9/7 wavelet transform (volumetric or per section, whichever codes better),
quantized at the step that fills its byte budget or meets the error target, and
entropy coded under the array's context model (:mod:`streamcomp.coding.context_model`): a small
integer network, fitted once per array on a sample of its chunks (the student the shipped start
distilled from its teacher, tuned; or with ``start=none`` a teacher and the student distilled from
it), that gives each coefficient a distribution from its decoded context. No per-chunk
side information; every chunk still decodes on its own.

The encoder picks each coefficient's symbol by rate and distortion under the model
(:func:`streamcomp.coding.learned_bands.rdoq`). The fit judges itself on held-out sample chunks at
the run's rate: when, coded under it in the bytes the hand-set per-chunk models spend (its stored
bytes counted), they do not decode with less error, it is dropped, nothing is stored and chunks use
the hand-set models (``entropy=context`` forces that).

Under a ratio target every chunk's budget is its estimated bytes at one quantizer step common to
the array (:mod:`streamcomp.coding.rate_estimate`, :func:`streamcomp.plan.assign_budgets`): the
chunks that need many bytes for their detail get them from those that need few
(``allocation=voxels``: the same bytes per voxel everywhere).

A post-filter (:mod:`streamcomp.models.postfilter`), fine-tuned from a shipped start (trained on
other volumes by :mod:`streamcomp.methods.starts`; ``start`` picks another or none)
on the same sample decoded at its rate, then corrects what the quantizer left; it is kept only
when the held-out chunks, coded in their budgets less its share of bytes and filtered, beat them
coded without it, and each chunk's section says whether it applies (the encoder checks the
chunk against its original). Runs that target an error rather than a size skip it;
``filter_channels=0`` leaves it out.
"""

from __future__ import annotations

import itertools
import logging
import math
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from streamcomp.coding.context_model import ContextModel
from streamcomp.coding.rate_estimate import rate_curve
from streamcomp.coding.residual import (
    ResidualCoder,
    decode_residual,
    encode_residual,
    is_filtered,
    mark_filtered,
    min_residual_bytes,
    step_of,
)
from streamcomp.errors import ChunkFormatError, InputError
from streamcomp.methods.base import FitTargets, Method, Params, Target, encode_only
from streamcomp.metrics import mse
from streamcomp.models.start_points import STARTS, check_start, read_start
from streamcomp.plan import RATE_LOG2_STEPS, SAMPLE_BLOCKS
from streamcomp.values import normalize

if TYPE_CHECKING:  # fit_context imports torch, which only a fit needs
    from streamcomp.coding.fit_context import ContextStats

logger = logging.getLogger(__name__)
ENTROPY = ("learned", "context")
ALLOCATION = ("rate", "voxels")
STEP_SPREAD = (-0.5, 0.0, 0.5)  # log2 offsets around each sample's step the model learns from
DEFAULT_LOG2_STEP = -6.0  # a sample's step when the fit is given no target
# Shared state holding a post-filter: magic, context model length, the model, then the filter.
# A state without the filter is the context model alone (or empty), as arrays stored it before.
_STATE = struct.Struct("<4sI")
_STATE_MAGIC = b"SCWF"
DB_PER_BIT = 20 * math.log10(2)  # what one more bit per voxel buys at high rate
FILTER_VOXELS_PER_STEP = 4096  # the filter trains one step per this many voxels of the array, up to filter_steps
MIN_FIT_CHUNKS = 8  # a head CT fit on 4 of its 8 chunks came out 0.39 dB lower at 64x
# The fit learns from tiles of at most this shape cut from its sample chunks: the shared state's few
# thousand parameters learn as much from eight such tiles as from eight whole larger chunks, in a
# fraction of the time (the README's chunk-shape measurements).
FIT_CROP = {3: (64, 128, 128), 4: (4, 16, 64, 64)}
FILTER_MAX_GAIN_DB = 3.0  # more than the post-filter gained anywhere: a share of bytes costing more skips it


@dataclass(frozen=True)
class WaveletParams(Params):
    entropy: str = encode_only("learned")
    allocation: str = encode_only("rate")
    hidden: int = encode_only(16)
    teacher_hidden: int = encode_only(32)
    teacher_steps: int = encode_only(300)
    student_steps: int = encode_only(600)
    lr: float = encode_only(0.04)
    distill: float = encode_only(0.5)
    held_out: int = encode_only(4)
    seed: int = encode_only(0)
    filter_channels: int = encode_only(8)
    filter_steps: int = encode_only(1500)
    start: str = encode_only("shipped")
    filter_tune_steps: int = encode_only(750)
    filter_lr: float = encode_only(3e-3)
    signs: bool = encode_only(True)
    fit_voxels: int = encode_only(1 << 22)

    def __post_init__(self) -> None:
        if self.fit_voxels < 1:
            raise InputError(f"fit_voxels must be at least 1, got {self.fit_voxels!r}")
        if self.entropy not in ENTROPY:
            raise InputError(f"entropy must be one of {', '.join(ENTROPY)}, got {self.entropy!r}")
        if self.allocation not in ALLOCATION:
            raise InputError(f"allocation must be one of {', '.join(ALLOCATION)}, got {self.allocation!r}")
        if self.hidden < 1 or self.teacher_hidden < 1:
            raise InputError("hidden and teacher_hidden must be at least 1")
        if not 0 <= self.distill <= 1:
            raise InputError(f"distill must be in [0, 1], got {self.distill!r}")
        if not 0 <= self.filter_channels <= 64 or min(self.filter_steps, self.filter_tune_steps) < 0:
            raise InputError(
                f"filter_channels must be in [0, 64] (0: no post-filter), filter_steps and filter_tune_steps "
                f">= 0, got {self.filter_channels!r}, {self.filter_steps!r}, {self.filter_tune_steps!r}"
            )
        try:
            check_start(self.start)
        except ValueError as e:
            raise InputError(str(e)) from None
        if self.start not in STARTS:  # workers may run in another folder
            object.__setattr__(self, "start", str(Path(self.start).resolve()))


class WaveletMethod(Method):
    name = "wavelet"
    method_id = 6
    ndims = (3, 4)
    payload_sections = 1
    # Longer transforms and more coefficients per context at the same rate; one still decodes fast.
    # 64 sections, not 32: half the faces across z and a deeper low-pass band (CT gains, EM is alike);
    # 256 in-plane, not 128: a quarter of the faces (the README's chunk-shape measurements).
    default_chunks = {3: (64, 256, 256), 4: (4, 16, 64, 64)}
    Params = WaveletParams
    thread_safe = True  # a fitted model and filter, only read per chunk

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.model: ContextModel | None = None
        self.filter = None  # the array's PostFilter, when it has one
        self._blob: bytes | None = None if self.needs_fit() else b""
        self._filter_blob = b""

    def rate_curve(self, block: np.ndarray) -> np.ndarray | None:
        """The chunk's bytes by step (:func:`streamcomp.coding.rate_estimate.rate_curve`), unless
        ``allocation=voxels`` asks for the same bytes per voxel in every chunk."""
        if self.params.allocation != "rate":
            return None
        return rate_curve(normalize(block)[0], RATE_LOG2_STEPS)

    def needs_fit(self) -> bool:
        return self.params.entropy == "learned" or self.params.filter_channels > 0

    def fit_note(self) -> str:
        return "chunks are coded under the hand-set per-chunk context models (entropy=context), without a post-filter"

    def fit_sample_chunks(self, chunks: tuple[int, ...]) -> int:
        """About ``fit_voxels`` voxels of samples (tiles of at most :data:`FIT_CROP`: see
        :func:`fit_crops`), at least MIN_FIT_CHUNKS, at most the pipeline's SAMPLE_BLOCKS. The fit
        codes each sample several times, so its time follows the sample, while the few thousand
        parameters it fits stop gaining from more well before (the README's measurements, under
        the learned context model's parameters)."""
        crop = math.prod(min(n, c) for n, c in zip(chunks, FIT_CROP[len(chunks)], strict=True))
        return min(max(MIN_FIT_CHUNKS, math.ceil(self.params.fit_voxels / max(crop, 1))), SAMPLE_BLOCKS)

    def fit_shared(self, samples: list[np.ndarray], targets: FitTargets | None = None) -> list[str]:
        """Fit the context model on ``samples`` quantized near the steps their targets need; keep it
        only if the held-out samples decode closer in the same bytes, its own bytes counted. Then the
        post-filter, kept only if the held-out samples gain with it in budgets less its bytes."""
        if not self.needs_fit():
            return []
        if not samples:
            raise InputError("wavelet needs at least one non-constant chunk to learn its shared state from")
        p = self.params
        data_voxels = (targets.data_chunks if targets is not None else len(samples)) * max(b.size for b in samples)
        # As many tiles as the pipeline was asked for chunks: the count its tile size gives.
        samples, targets = fit_crops(samples, targets, self.fit_sample_chunks(max(samples, key=np.size).shape), p.seed)
        steps = [self._sample_step(s, None if targets is None else targets.targets[i]) for i, s in enumerate(samples)]
        # Every fourth sample (up to held_out) is kept out of the fit to judge it: spread over the
        # sample rather than its tail, which is often the array's thin edge chunks.
        held = set(range(3, len(samples), 4)[: p.held_out])
        fit = [i for i in range(len(samples)) if i not in held]
        # Too few samples to hold any out: judged on what it was fitted on (which flatters the
        # model, but on such small arrays its own bytes decide).
        judged = sorted(held) or fit
        what = "held-out" if held else "sample"
        self.filter, self._filter_blob = None, b""
        self._use(None)
        notes = []
        if p.entropy == "learned":
            notes += self._fit_model(samples, steps, fit, judged, data_voxels, what)
        if p.filter_channels:
            budgets = [t.budget_bytes for t in targets.targets] if targets is not None else []
            if budgets and all(b is not None for b in budgets):
                # The sample's edge chunks are judged too: the filter's share of bytes costs a thin
                # chunk, whose small budget sits on the steep end of its rate curve, the most.
                full = max(s.size for s in samples)
                edges = {i for i in fit if samples[i].size < full}
                train = [i for i in fit if i not in edges] or fit
                notes += self._fit_filter(samples, steps, budgets, train, sorted(edges.union(judged)), data_voxels,
                                          what + (" and edge" if edges else ""))
            elif targets is None:
                notes.append("post-filter skipped: the fit was given no byte budgets to judge it at")
            else:
                # The rate control meets an error target without the filter: it would only add bytes.
                notes.append("post-filter skipped: the run targets an error, not a size")
        return notes

    def _fit_model(self, samples, steps, fit: list[int], judged: list[int], data_voxels: int, what: str) -> list[str]:
        from streamcomp.coding.fit_context import ContextStart, fit_context_model, start_name

        began = time.perf_counter()
        p = self.params
        blob = read_start(p.start, start_name(p.hidden))
        try:
            start = None if blob is None else ContextStart.from_bytes(blob)
        except ValueError as e:
            raise InputError(f"start {p.start!r}, {start_name(p.hidden)}: {e}") from None
        fitted = fit_context_model(
            self._sample_stats(samples, steps, fit), p.hidden, p.teacher_hidden, p.teacher_steps,
            p.student_steps, p.distill, p.seed, p.lr, start, p.signs,
        )
        self._use(fitted.student)
        teacher = (f"teacher fitted, {p.teacher_hidden}x2 hidden" if start is None else
                   f"the {p.start} start's teacher as it is, {start.teacher_hidden}x2 hidden")
        how = "teacher and student fitted" if start is None else f"student tuned from the {p.start} start"
        note = (
            f"context model ({how}) in {time.perf_counter() - began:.1f} s on {len(fit)} sample chunks: "
            f"{fitted.teacher_bits:.4f} bits/coefficient ({teacher}), "
            f"{fitted.student_bits:.4f} (stored student, {p.hidden} hidden, {len(self._blob)} bytes); "
            f"signs from their neighbours in {len(fitted.student.signs.weights)} classes: "
            f"{fitted.sign_bits:.3f} bits/sign"
        )
        return [note, self._judge([samples[i] for i in judged], [steps[i] for i in judged], data_voxels, what)]

    @staticmethod
    def _sample_stats(samples, steps, fit: list[int]):
        """Context statistics of the fit samples' dead-zone symbols at their steps and, under the
        transform they chose, around them. The encoder codes the symbols its rate-distortion choice
        makes under the model, not these; fitting again on those gained 0.03 dB on EM at 8x for
        two thirds more fit time, so the model is fitted once."""
        from streamcomp.coding.fit_context import StatsCollector

        collector = StatsCollector()
        for i in fit:
            log2_step, planar = steps[i]
            for other in (False, True):
                coder = ResidualCoder(samples[i], other)
                for offset in STEP_SPREAD if other == planar else (0.0,):
                    collector.add(coder.lattices, coder.parents, coder.levels, coder.quantize(log2_step + offset)[1])
        return collector.stats()

    def _fit_filter(
        self, samples, steps, budgets: list[int], fit: list[int], judged: list[int], data_voxels: int, what: str
    ) -> list[str]:
        """Train the post-filter on the fit samples decoded at their steps; keep it if the judged
        chunks, coded in their budgets less the filter's share of bytes and filtered where that
        helps (as encode does), come out closer to their originals than at their whole budgets
        without it: the held-out run of the decision itself, so no rate-distortion model can
        misprice the bytes at low rates. A filter that does not pay is tried once more with half
        the channels (a third of the bytes), which can at the lower rates."""
        from streamcomp.models.postfilter import PostFilter, load_start

        p = self.params
        depth = filter_depth([steps[i] for i in fit])
        whole = [encode_residual(samples[i], budget=budgets[i], model=self.model)[1] for i in judged]
        without = sum(_sse(w, samples[i]) for w, i in zip(whole, judged, strict=True))
        pairs: list = []  # the fit samples decoded at their steps, made once for either size
        notes = []
        for channels in dict.fromkeys((p.filter_channels, max(p.filter_channels // 2, 1))):
            start = time.perf_counter()
            size = math.ceil(len(PostFilter(depth, channels).to_bytes()) * 4 / 3)  # base64
            head = f"post-filter ({channels} channels, {depth}x3x3 kernels, {size} stored bytes)"
            # At high rate a bit per voxel buys DB_PER_BIT, and less than anywhere else: a share
            # that costs more than a filter ever gained is not worth coding the judged chunks for.
            if DB_PER_BIT * 8 * size / max(data_voxels, 1) >= FILTER_MAX_GAIN_DB:
                notes.append(f"{head} skipped: too many bytes for this small array")
                continue
            reduced = self._reduced(samples, judged, budgets, size, data_voxels)
            loss = 10 * math.log10(sum(_sse(r[1], r[0]) for r in reduced) / without) if without else 0.0
            if loss >= FILTER_MAX_GAIN_DB:
                notes.append(f"{head} skipped: its bytes would cost the {what} chunks {loss:.2f} dB")
                continue
            pairs = pairs or [self._decoded_pair(samples[i], *steps[i]) for i in fit]
            begun = load_start(p.start, depth, channels)
            how = "trained from zeros" if begun is None else f"fine-tuned from the {p.start} start"
            net, train_steps, gain, used = self._train_filter(
                pairs, depth, channels, begun, data_voxels, reduced, without
            )
            kept = gain > 0
            notes.append(
                f"{head} {how} {train_steps} steps in {time.perf_counter() - start:.1f} s on {len(fit)} sample "
                f"chunks: {gain:+.2f} dB on {len(judged)} {what} chunks coded in their budgets less its share "
                f"({used} filtered): "
                + ("kept" if kept else "dropped")
            )
            if kept:
                self.filter, self._filter_blob = net, net.to_bytes()
                self._blob = self._state()
                break
        return notes

    def _reduced(self, samples, judged: list[int], budgets: list[int], size: int, data_voxels: int) -> list[tuple]:
        """(original, decoded, step) of the judged chunks coded in their budgets less their share of ``size``."""
        out = []
        for i in judged:
            share = math.ceil(size * samples[i].size / max(data_voxels, 1))
            data, less = encode_residual(samples[i], budget=max(budgets[i] - share, 0), model=self.model)
            out.append((np.asarray(samples[i], np.float32), less.astype(np.float32), 2.0 ** step_of(data)[0]))
        return out

    def _train_filter(self, pairs, depth: int, channels: int, start, data_voxels: int, reduced, without: float):
        """(filter as stored, training steps, gain in dB on ``reduced`` over ``without``, chunks it
        improves), each reduced chunk filtered only where that helps, as encode does."""
        from streamcomp.models import postfilter

        p = self.params
        # A small array is not worth a long fit: the training grows with the array, up to the cap
        # (fewer from a start, which gets as far in half the steps as zeros in all).
        cap = p.filter_steps if start is None else p.filter_tune_steps
        train_steps = min(cap, math.ceil(data_voxels / FILTER_VOXELS_PER_STEP))
        # Judged and flagged with the stored (int8) weights: the filter every decoder will run.
        net = postfilter.fit(pairs, depth, channels, train_steps, p.filter_lr, p.seed, start).stored()
        with_filter, used = 0.0, 0
        for original, less, step in reduced:
            base, filtered = _sse(less, original), _sse(postfilter.apply(net, less, step), original)
            with_filter += min(base, filtered)
            used += filtered < base
        gain = 10 * math.log10(without / with_filter) if with_filter > 0 and without > 0 else 0.0
        return net, train_steps, gain, used

    def start_data(self, samples: list[np.ndarray], targets: list[Target]) -> tuple[list, int, ContextStats]:
        """What the starting points (:mod:`streamcomp.methods.starts`) learn from: (each sample decoded
        at the step its target asks for, as :class:`~streamcomp.models.postfilter.Pair`; the kernel
        depth a post-filter fit on them would choose; their context statistics, as a fit gathers them)."""
        steps = [self._sample_step(s, t) for s, t in zip(samples, targets, strict=True)]
        pairs = [self._decoded_pair(s, *st) for s, st in zip(samples, steps, strict=True)]
        return pairs, filter_depth(steps), self._sample_stats(samples, steps, list(range(len(samples))))

    def _decoded_pair(self, block: np.ndarray, log2_step: float, planar: bool):
        from streamcomp.models.postfilter import Pair

        data, decoded = ResidualCoder(block, planar, self.model).code(log2_step)
        return Pair(decoded.astype(np.float32), np.asarray(block, np.float32), 2.0 ** step_of(data)[0])

    @staticmethod
    def _sample_step(block: np.ndarray, target: Target | None) -> tuple[float, bool]:
        """(log2 step, planar) near the hand-set coder's for ``block`` under ``target``. For a
        budget: the step where the rate estimate, scaled to the hand-set bytes of one coding at
        its first guess (near it they are a steady fraction of the estimate), reads the budget,
        under the transform that codes the guess in fewer bytes (at one step both err alike).
        The fit learns from steps around it, so the rate control's 20-40 codings are not needed."""
        if target is None:
            return DEFAULT_LOG2_STEP, False
        if target.budget_bytes is None:
            return step_of(encode_residual(block, max_mse=target.max_mse)[0])
        curve = np.log(np.maximum(rate_curve(block, RATE_LOG2_STEPS), 1.0))
        budget = math.log(max(target.budget_bytes, 1))
        guess = _step_at(curve, budget)
        sizes = [len(ResidualCoder(block, planar).code_bytes(guess)) for planar in (False, True)]
        planar = sizes[1] < sizes[0]
        scale = float(np.interp(guess, RATE_LOG2_STEPS, curve)) - math.log(sizes[planar])
        return _step_at(curve, budget + scale), planar

    def _judge(self, blocks: list[np.ndarray], steps: list[tuple[float, bool]], data_voxels: int, what: str) -> str:
        """Keep the model only if ``blocks``, coded under it in the bytes the hand-set models spend
        at their steps less the stored model's share, decode with less error: the encoder chooses
        its symbols under the model, so the same bytes, not the same symbols, is the fair test."""
        # The stored model (base64 in the metadata) costs every voxel of the array the same share:
        # an edge chunk of a few sections carries a few sections' worth of it.
        per_voxel = math.ceil(len(self._blob) * 4 / 3) / max(data_voxels, 1)
        learned = hand = 0.0
        for block, (log2_step, planar) in zip(blocks, steps, strict=True):
            data, decoded = ResidualCoder(block, planar).code(log2_step)
            hand += _sse(decoded, block)
            # Under the hand-set models' transform: the learned coder's own choice could only do better.
            budget = max(len(data) - math.ceil(per_voxel * block.size), 0)
            learned += _sse(ResidualCoder(block, planar, self.model).fit_budget(budget)[1], block)
        if learned >= hand:
            self._use(None)
            return (
                f"the context model did not pay for its bytes on {len(blocks)} {what} chunks (squared error "
                f"{learned:.4g} with it, {hand:.4g} with the hand-set models in their bytes): dropped, chunks use "
                "the hand-set models"
            )
        gain = 10 * math.log10(hand / learned) if learned > 0 else math.inf
        return (f"on {len(blocks)} {what} chunks it decodes {gain:.2f} dB closer in the hand-set models' bytes, "
                "its own bytes counted")

    def _use(self, model: ContextModel | None) -> None:
        self.model = model
        self._blob = self._state()

    def _state(self) -> bytes:
        model = b"" if self.model is None else self.model.to_bytes()
        if not self._filter_blob:
            return model
        return _STATE.pack(_STATE_MAGIC, len(model)) + model + self._filter_blob

    def shared_state(self) -> bytes:
        if self._blob is None:
            raise InputError("wavelet has no shared state yet: fit_shared() was not run")
        return self._blob

    def load_shared_state(self, blob: bytes) -> None:
        self.filter, self._filter_blob = None, b""
        if blob[: len(_STATE_MAGIC)] == _STATE_MAGIC:
            from streamcomp.models.postfilter import PostFilter

            if len(blob) < _STATE.size:
                raise ChunkFormatError("wavelet shared state is shorter than its header")
            _, length = _STATE.unpack_from(blob, 0)
            if _STATE.size + length > len(blob):
                raise ChunkFormatError("wavelet shared state is shorter than its context model says")
            self._filter_blob = blob[_STATE.size + length :]
            self.filter = PostFilter.from_bytes(self._filter_blob)
            blob = blob[_STATE.size : _STATE.size + length]
        self._use(ContextModel.from_bytes(blob) if blob else None)

    def min_payload_bytes(self, shape: tuple[int, ...]) -> int:
        return min_residual_bytes(shape)

    def encode(self, block: np.ndarray, target: Target) -> list[bytes]:
        if self._blob is None:
            raise InputError("wavelet needs its shared state: fit_shared() or a codec configuration")
        data, decoded = encode_residual(block, budget=target.budget_bytes, max_mse=target.max_mse, model=self.model)
        if self.filter is not None:
            from streamcomp.models.postfilter import apply

            filtered = apply(self.filter, decoded.astype(np.float32), 2.0 ** step_of(data)[0])
            if _sse(filtered, block) < _sse(decoded, block):
                data = mark_filtered(data)
        return [data]

    def decode(self, sections: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
        if len(sections) != 1:
            raise ChunkFormatError("wavelet chunk must have one section")
        decoded = decode_residual(sections[0], tuple(shape), self.model)
        if not is_filtered(sections[0]):
            return decoded
        if self.filter is None:
            raise ChunkFormatError("wavelet chunk asks for a post-filter the array does not carry")
        from streamcomp.models.postfilter import apply

        return apply(self.filter, decoded.astype(np.float32), 2.0 ** step_of(sections[0])[0])


def fit_crops(
    samples: list[np.ndarray], targets: FitTargets | None, count: int, seed: int = 0
) -> tuple[list[np.ndarray], FitTargets | None]:
    """``count`` of the samples' tiles of :data:`FIT_CROP` (each chunk cut on that grid; all of them
    where there are fewer), drawn at random in the samples' order, each tile's byte budget its
    chunk's bytes per voxel (an error target stays as it is): what an array of FIT_CROP chunks would
    have given its fit."""
    tiles = []
    for i, block in enumerate(samples):
        crop = FIT_CROP[block.ndim]
        starts = itertools.product(*(range(0, n, c) for n, c in zip(block.shape, crop, strict=True)))
        tiles += [(i, tuple(slice(a, a + c) for a, c in zip(start, crop, strict=True))) for start in starts]
    if len(tiles) > count:
        tiles = [tiles[j] for j in sorted(np.random.default_rng(seed).choice(len(tiles), count, replace=False))]
    crops = [samples[i][where] for i, where in tiles]
    if targets is None:
        return crops, None
    scaled = []
    for (i, _), crop in zip(tiles, crops, strict=True):
        t = targets.targets[i]
        budget = None if t.budget_bytes is None else max(1, round(t.budget_bytes * crop.size / samples[i].size))
        scaled.append(t if budget is None else Target(budget_bytes=budget))
    return crops, FitTargets(tuple(scaled), targets.data_chunks)


def _step_at(log_sizes: np.ndarray, log_bytes: float) -> float:
    """The log2 step where a rate curve (log bytes at RATE_LOG2_STEPS, falling) reads ``log_bytes``:
    linear between its points, clamped to its end steps beyond them."""
    return float(np.interp(-log_bytes, -log_sizes, RATE_LOG2_STEPS))


def filter_depth(steps: list[tuple[float, bool]]) -> int:
    """The post-filter's kernel depth for chunks coded at ``steps`` ((log2 step, planar) each):
    serial sections coded one by one barely correlate, so in-plane kernels where most are planar."""
    return 1 if 2 * sum(planar for _, planar in steps) > len(steps) else 3


def _sse(decoded: np.ndarray, original: np.ndarray) -> float:
    """Summed squared error: chunks of different sizes add up by their voxels."""
    return mse(np.asarray(original), np.asarray(decoded)) * np.size(original)
