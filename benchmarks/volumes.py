"""Which real volumes are benchmarked, which crop of each, and at which target ratios.

Targets follow what each modality tolerates: EM texture is nearly incompressible so 4-20x; CT is
mostly air and smooth tissue so 64-1024x; the 4D diffusion series sits between (16-256x). Three
modes: ``quick`` takes tiny crops and two ratios, enough to exercise every code path in minutes
(its numbers say little: per-slice and per-stream headers dominate tiny crops); ``standard`` (the
committed report) takes crops of a few chunks per volume and every ratio, sized so that the whole
run, per-chunk INR training included, takes about half an hour on 2 CPU cores; ``full`` takes the
whole volumes. Crops are taken with ``np.load(mmap_mode="r")`` so only the crop is read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_REPO = Path(__file__).resolve().parents[1]


def _data_dir() -> Path:
    """``$STREAMCOMP_DATA``, else the first of shared/data beside or inside the checkout."""
    env = os.environ.get("STREAMCOMP_DATA")
    if env:
        return Path(env)
    for cand in (_REPO.parent / "shared" / "data", _REPO / "shared" / "data", Path("/work/shared/data")):
        if cand.is_dir():
            return cand
    return _REPO.parent / "shared" / "data"


DATA_DIR = _data_dir()

Crop = tuple[tuple[int, int], ...]


MODES = ("quick", "standard", "full")


@dataclass(frozen=True)
class VolumeSpec:
    """A benchmark volume: file, modality, its crop per mode (None: whole) and target ratios."""

    name: str
    file: str
    modality: str
    full_targets: tuple[float, ...]
    quick_crop: Crop
    quick_targets: tuple[float, ...]
    standard_crop: Crop | None
    modes: tuple[str, ...] = MODES

    @property
    def path(self) -> Path:
        return DATA_DIR / self.file

    def crop(self, mode: str) -> Crop | None:
        return {"quick": self.quick_crop, "standard": self.standard_crop}.get(mode)

    def targets(self, mode: str) -> tuple[float, ...]:
        return self.quick_targets if mode == "quick" else self.full_targets


VOLUMES: dict[str, VolumeSpec] = {
    v.name: v
    for v in (
        VolumeSpec(
            name="em",
            file="em_isbi2012_train_30x512x512_u8.npy",
            modality="serial-section TEM, uint8 (z, y, x)",
            full_targets=(4, 6, 8, 12, 16, 20),
            quick_crop=((0, 8), (192, 256), (192, 256)),
            quick_targets=(4, 10),
            standard_crop=((0, 16), (192, 320), (192, 320)),
        ),
        VolumeSpec(
            name="ct_head",
            file="ct_head_invesalius_cranium_108x256x256_i16.npy",
            modality="head CT, int16 HU (z, y, x)",
            full_targets=(64, 128, 256, 512, 1024),
            quick_crop=((48, 64), (64, 128), (64, 128)),
            quick_targets=(32, 64),
            standard_crop=((40, 72), (64, 192), (64, 192)),
        ),
        VolumeSpec(
            name="ct_thorax",
            file="ct_thorax_totalseg_aorta_164x126x120_i16.npy",
            modality="thorax CT, int16 HU (z, y, x)",
            full_targets=(64, 128, 256, 512, 1024),
            quick_crop=((64, 80), (32, 96), (32, 96)),
            quick_targets=(32, 64),
            standard_crop=None,
            modes=("full",),
        ),
        VolumeSpec(
            name="mri4d",
            file="mri4d_dwi_toshiba_13x40x64x64_u16.npy",
            modality="4D diffusion MRI, uint16 (t, z, y, x)",
            full_targets=(16, 32, 64, 128, 256),
            quick_crop=((0, 2), (16, 24), (16, 48), (16, 48)),
            quick_targets=(16, 32),
            standard_crop=((0, 4), (12, 28), (0, 64), (0, 64)),
        ),
    )
}


def missing_files(names: list[str] | None = None) -> list[str]:
    """Paths of the requested volumes that are not on this machine (for skips and errors)."""
    specs = [VOLUMES[n] for n in (names or list(VOLUMES))]
    return [str(s.path) for s in specs if not s.path.is_file()]


def load(spec: VolumeSpec, crop: Crop | None) -> np.ndarray:
    """Read ``crop`` of the volume into memory (the whole volume when ``crop`` is None)."""
    arr = np.load(spec.path, mmap_mode="r")
    if crop is not None:
        if len(crop) != arr.ndim:
            raise ValueError(f"{spec.name}: crop {crop} has {len(crop)} axes, the volume {arr.ndim}")
        arr = arr[tuple(slice(a, b) for a, b in crop)]
    return np.ascontiguousarray(arr)
