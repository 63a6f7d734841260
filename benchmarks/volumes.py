"""Which real volumes are benchmarked, which crop of each, and at which target ratios.

Targets follow what each modality tolerates: EM texture is nearly incompressible so 4-20x; CT is
mostly air and smooth tissue so 64-1024x; the 4D diffusion series sits between (16-256x). Three
modes: ``quick`` takes tiny crops and two ratios, enough to exercise every code path in minutes
(its numbers say little: per-slice and per-stream headers dominate tiny crops); ``standard`` (the
committed report) takes crops of a few chunks per volume and every ratio, sized so that the whole
run, per-chunk INR training included, takes about half an hour on 2 CPU cores; ``full`` takes the
whole volumes. Files are found through :mod:`benchmarks.data` (``$STREAMCOMP_DATA``, else
``../shared/data``); ``bundled`` names the small crop of each volume shipped in the repository
(``tests/data/``, ``examples/``), which quick runs can take instead (``--bundled``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks import data
from benchmarks.data import Crop

MODES = ("quick", "standard", "full")


@dataclass(frozen=True)
class VolumeSpec:
    """A benchmark volume: file, modality, its crop per mode (None: whole) and target ratios."""

    name: str
    file: str
    modality: str
    full_targets: tuple[float, ...]
    bundled: str  # file-name prefix of the crop shipped in tests/data/ or examples/
    quick_crop: Crop
    quick_targets: tuple[float, ...]
    standard_crop: Crop | None
    modes: tuple[str, ...] = MODES

    @property
    def path(self) -> Path:
        """The whole volume (it may be missing on this machine)."""
        return data.data_file(self.file)

    @property
    def bundled_path(self) -> Path | None:
        """The small crop of this volume shipped in the repository, or None."""
        return data.bundled_file(self.bundled)

    def crop(self, mode: str) -> Crop | None:
        return {"quick": self.quick_crop, "standard": self.standard_crop}.get(mode)

    def shipped_or_skip(self) -> Path | None:
        """:attr:`bundled_path`, or None after saying the volume is skipped (no crop shipped): so a
        study run ``--bundled`` on its default volumes measures those it has."""
        if self.bundled_path is None:
            print(f"skipped {self.name}: no bundled crop ({self.bundled}*.npy)", flush=True)
        return self.bundled_path

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
            bundled="em_isbi2012",
            quick_crop=((0, 8), (192, 256), (192, 256)),
            quick_targets=(4, 10),
            standard_crop=((0, 16), (192, 320), (192, 320)),
        ),
        VolumeSpec(
            name="ct_head",
            file="ct_head_invesalius_cranium_108x256x256_i16.npy",
            modality="head CT, int16 HU (z, y, x)",
            full_targets=(64, 128, 256, 512, 1024),
            bundled="ct_head",
            quick_crop=((48, 64), (64, 128), (64, 128)),
            quick_targets=(32, 64),
            standard_crop=((40, 72), (64, 192), (64, 192)),
        ),
        VolumeSpec(
            name="ct_thorax",
            file="ct_thorax_totalseg_aorta_164x126x120_i16.npy",
            modality="thorax CT, int16 HU (z, y, x)",
            full_targets=(64, 128, 256, 512, 1024),
            bundled="ct_thorax",
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
            bundled="mri4d",
            quick_crop=((0, 2), (16, 24), (16, 48), (16, 48)),
            quick_targets=(16, 32),
            standard_crop=((0, 4), (12, 28), (0, 64), (0, 64)),
        ),
    )
}


def load(spec: VolumeSpec, crop: Crop | None, path: str | Path | None = None) -> np.ndarray:
    """Read ``crop`` of the volume (of ``path`` when given, e.g. its bundled crop) into memory."""
    return data.load(spec.path if path is None else path, crop)
