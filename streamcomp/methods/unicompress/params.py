"""UniCompress parameters: the student's (or teacher's) architecture a decoder rebuilds, and the
training knobs only the encoder uses."""

from __future__ import annotations

from dataclasses import dataclass

from streamcomp.errors import InputError
from streamcomp.methods.base import Params, encode_only
from streamcomp.methods.unicompress.model import parse_patch

# Which payloads the encoder may choose from: the residual alone (the default: no shared fit, no
# shared state, a wavelet codec), the best of both, or INR + residual only (ablation).
MODES = ("residual", "auto", "inr")
NETWORKS = ("student", "teacher")
MODALITIES = ("high", "low", "raw")


@dataclass(frozen=True)
class UniCompressParams(Params):
    features: int = 16
    dim: int = 16
    codebook: int = 256
    latent_channels: int = 8
    patch: str = "2x8x8"
    student_hidden: int = 32
    layers: int = 4
    w0: float = 10.0
    modes: str = "residual"
    network: str = "student"
    teacher_hidden: int = encode_only(48)
    prior: str = encode_only("high,low,raw")
    pretrain_steps: int = encode_only(50)
    teacher_steps: int = encode_only(300)
    student_steps: int = encode_only(200)
    finetune_steps: int = encode_only(50)
    batch: int = encode_only(16)
    train_points: int = encode_only(2048)
    lr: float = encode_only(3e-3)
    gamma: float = encode_only(1.0)
    latent_l2: float = encode_only(1e-3)
    latent_noise: float = encode_only(0.05)
    tau: float = encode_only(2.0)
    kd_code: float = encode_only(1.0)
    kd_logits: float = encode_only(1.0)
    kd_out: float = encode_only(1.0)
    latent_share: float = encode_only(0.0)
    refine_steps: int = encode_only(0)
    refine_points: int = encode_only(16384)
    refine_lr: float = encode_only(0.02)
    max_tiles: int = encode_only(512)
    seed: int = encode_only(0)
    teacher: str = encode_only("")
    save_teacher: str = encode_only("")

    def __post_init__(self) -> None:
        prior = [m for m in self.prior.split(",") if m]
        if not prior or set(prior) - set(MODALITIES):
            raise InputError(f"prior must name some of high,low,raw, got {self.prior!r}")
        if self.modes not in MODES:
            raise InputError(f"modes must be one of {', '.join(MODES)}, got {self.modes!r}")
        if not 0 <= self.latent_share < 1:
            raise InputError(f"latent_share must be in [0, 1), got {self.latent_share!r}")
        parse_patch(self.patch)
        if self.network not in NETWORKS:
            raise InputError(f"network must be one of {', '.join(NETWORKS)}, got {self.network!r}")

    def stored(self) -> dict:
        """The student's architecture; a teacher-coded array also needs the teacher's (its width
        and the prior's modalities shape its stored weights)."""
        stored = super().stored()
        if self.network == "teacher":
            stored.update(teacher_hidden=self.teacher_hidden, prior=self.prior)
        return stored
