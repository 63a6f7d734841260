"""``wavelet`` (the default method): the 3D wavelet coder with a learned entropy model shared by
every chunk of an array.

Each chunk is its CDF 9/7 wavelet transform (volumetric or per section, whichever codes better),
dead-zone quantized at the step that fills its byte budget or meets the error target, and
entropy coded under the array's context model (:mod:`streamcomp.coding.context_model`): a small
integer network, fitted once per array on a sample of its chunks (a teacher, distilled into the
stored student), that gives each coefficient a distribution from its decoded context. No per-chunk
side information; every chunk still decodes on its own.

The fit judges itself on held-out sample chunks at the run's rate: when the learned model does not
code them in fewer bytes than the hand-set per-chunk models (its stored bytes counted), it is
dropped, nothing is stored and chunks use the hand-set models (``entropy=context`` forces that).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from streamcomp.coding.context_model import ContextModel
from streamcomp.coding.residual import ResidualCoder, decode_residual, encode_residual, min_residual_bytes, step_of
from streamcomp.errors import ChunkFormatError, InputError
from streamcomp.methods.base import FitTargets, Method, Params, Target, encode_only

logger = logging.getLogger(__name__)
ENTROPY = ("learned", "context")
STEP_SPREAD = (-0.5, 0.0, 0.5)  # log2 offsets around each sample's step the model learns from
DEFAULT_LOG2_STEP = -6.0  # a sample's step when the fit is given no target


@dataclass(frozen=True)
class WaveletParams(Params):
    entropy: str = encode_only("learned")
    hidden: int = encode_only(16)
    teacher_hidden: int = encode_only(32)
    teacher_steps: int = encode_only(300)
    student_steps: int = encode_only(600)
    lr: float = encode_only(0.04)
    distill: float = encode_only(0.5)
    held_out: int = encode_only(4)
    seed: int = encode_only(0)

    def __post_init__(self) -> None:
        if self.entropy not in ENTROPY:
            raise InputError(f"entropy must be one of {', '.join(ENTROPY)}, got {self.entropy!r}")
        if self.hidden < 1 or self.teacher_hidden < 1:
            raise InputError("hidden and teacher_hidden must be at least 1")
        if not 0 <= self.distill <= 1:
            raise InputError(f"distill must be in [0, 1], got {self.distill!r}")


class WaveletMethod(Method):
    name = "wavelet"
    method_id = 6
    ndims = (3, 4)
    payload_sections = 1
    # Longer transforms and more coefficients per context at the same rate; one still decodes fast.
    default_chunks = {3: (32, 128, 128), 4: (4, 16, 64, 64)}
    Params = WaveletParams

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.model: ContextModel | None = None
        self._blob: bytes | None = None if self.needs_fit() else b""

    def needs_fit(self) -> bool:
        return self.params.entropy == "learned"

    def fit_note(self) -> str:
        return "chunks are coded under the hand-set per-chunk context models (entropy=context)"

    def fit_shared(self, samples: list[np.ndarray], targets: FitTargets | None = None) -> list[str]:
        """Fit the context model on ``samples`` quantized near the steps their targets need; keep it
        only if it codes the held-out samples in fewer bytes, its own bytes counted."""
        from streamcomp.coding.fit_context import StatsCollector, fit_context_model

        if not self.needs_fit():
            return []
        if not samples:
            raise InputError("wavelet needs at least one non-constant chunk to learn its context model from")
        start = time.perf_counter()
        p = self.params
        steps = [self._sample_step(s, None if targets is None else targets.targets[i]) for i, s in enumerate(samples)]
        # Every fourth sample (up to held_out) is kept out of the fit to judge it: spread over the
        # sample rather than its tail, which is often the array's thin edge chunks.
        held = set(range(3, len(samples), 4)[: p.held_out])
        fit = [i for i in range(len(samples)) if i not in held]
        collector = StatsCollector()
        for i in fit:
            log2_step, planar = steps[i]
            for other in (False, True):
                for offset in STEP_SPREAD if other == planar else (0.0,):
                    coder = ResidualCoder(samples[i], other)
                    collector.add(coder.lattices, coder.parents, coder.levels, coder.quantize(log2_step + offset)[1])
        fitted = fit_context_model(
            collector.stats(), p.hidden, p.teacher_hidden, p.teacher_steps, p.student_steps, p.distill, p.seed, p.lr
        )
        self._use(fitted.student)
        notes = [
            f"context model fitted in {time.perf_counter() - start:.1f} s on {len(fit)} sample chunks: "
            f"{fitted.teacher_bits:.4f} bits/coefficient (teacher, {p.teacher_hidden}x2 hidden), "
            f"{fitted.student_bits:.4f} (stored student, {p.hidden} hidden, {len(self._blob)} bytes)"
        ]
        # Too few samples to hold any out: judged on what it was fitted on (which flatters the model,
        # but on such small arrays its own bytes decide).
        judged = sorted(held) or fit
        data_chunks = targets.data_chunks if targets is not None else len(samples)
        full = max(block.size for block in samples)
        notes.append(self._judge(
            [samples[i] for i in judged], [steps[i] for i in judged], data_chunks * full,
            "held-out" if held else "sample",
        ))
        return notes

    @staticmethod
    def _sample_step(block: np.ndarray, target: Target | None) -> tuple[float, bool]:
        """(log2 step, planar) the hand-set coder picks for ``block`` under ``target``."""
        if target is None:
            return DEFAULT_LOG2_STEP, False
        data, _ = encode_residual(block, budget=target.budget_bytes, max_mse=target.max_mse)
        return step_of(data)

    def _judge(self, blocks: list[np.ndarray], steps: list[tuple[float, bool]], data_voxels: int, what: str) -> str:
        """Keep the model only if it codes ``blocks`` (at the steps the hand-set coder picked for
        them) in fewer bytes than the hand-set models, its share of the stored model counted."""
        # The stored model (base64 in the metadata) costs every voxel of the array the same share:
        # an edge chunk of a few sections carries a few sections' worth of it.
        per_voxel = math.ceil(len(self._blob) * 4 / 3) / max(data_voxels, 1)
        learned = hand = 0.0
        for block, (log2_step, planar) in zip(blocks, steps, strict=True):
            hand += len(ResidualCoder(block, planar).code_bytes(log2_step))
            learned += len(ResidualCoder(block, planar, self.model).code_bytes(log2_step)) + per_voxel * block.size
        saving = 1 - learned / hand
        if learned >= hand:
            self._use(None)
            return (
                f"the context model did not pay for its bytes on {len(blocks)} {what} chunks ({learned:.0f} bytes "
                f"with it, {hand:.0f} with the hand-set models): dropped, chunks use the hand-set models"
            )
        return (f"on {len(blocks)} {what} chunks it codes {100 * saving:.1f} % fewer bytes than the hand-set "
                "models, its own bytes counted")

    def _use(self, model: ContextModel | None) -> None:
        self.model = model
        self._blob = b"" if model is None else model.to_bytes()

    def shared_state(self) -> bytes:
        if self._blob is None:
            raise InputError("wavelet has no shared state yet: fit_shared() was not run")
        return self._blob

    def load_shared_state(self, blob: bytes) -> None:
        self._use(ContextModel.from_bytes(blob) if blob else None)

    def min_payload_bytes(self, shape: tuple[int, ...]) -> int:
        return min_residual_bytes(shape)

    def encode(self, block: np.ndarray, target: Target) -> list[bytes]:
        if self._blob is None:
            raise InputError("wavelet needs its shared state: fit_shared() or a codec configuration")
        data, _ = encode_residual(block, budget=target.budget_bytes, max_mse=target.max_mse, model=self.model)
        return [data]

    def decode(self, sections: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
        if len(sections) != 1:
            raise ChunkFormatError("wavelet chunk must have one section")
        return decode_residual(sections[0], tuple(shape), self.model)
