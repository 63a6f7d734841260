"""Where the benchmark data is, and where results go: the one resolver every benchmark uses.

- Whole volumes: ``$STREAMCOMP_DATA`` when set, else ``shared/data`` beside the checkout
  (``../shared/data``; the tests never read them: their fixtures are the bundled crops).
- Bundled crops: small real crops shipped in the repository (``tests/data/`` and the EM sample in
  ``examples/``), found by a file-name prefix, so quick runs and the tests work without the whole
  volumes.
- Output: a study's committed report lives under ``benchmarks/results/``; quick (smoke) runs write
  under the temp directory instead, so they never overwrite a committed report.

Crops are read with ``np.load(mmap_mode="r")``, so only the crop is read from disk.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ENV = "STREAMCOMP_DATA"
BUNDLED_DIRS = (ROOT / "tests" / "data", ROOT / "examples")
RESULTS = ROOT / "benchmarks" / "results"

Crop = tuple[tuple[int, int], ...]


def data_dir() -> Path:
    """``$STREAMCOMP_DATA``, else ``../shared/data`` beside the checkout."""
    env = os.environ.get(ENV)
    return Path(env) if env else ROOT.parent / "shared" / "data"


def data_file(name: str) -> Path:
    """A whole volume by file name (it may be missing: see :func:`missing`)."""
    return data_dir() / name


def bundled_file(prefix: str) -> Path | None:
    """The first ``<prefix>*.npy`` crop shipped in ``tests/data/`` or ``examples/``, or None."""
    for folder in BUNDLED_DIRS:
        found = sorted(folder.glob(f"{prefix}*.npy")) if folder.is_dir() else []
        if found:
            return found[0]
    return None


def require(path: str | Path) -> Path:
    """``path`` if it exists, else a SystemExit saying how to point the benchmarks at the data."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(
            f"benchmark volume {path} not found: set ${ENV} to the folder holding the sample volumes "
            "(default ../shared/data), or use the bundled crops (--bundled)"
        )
    return path


def shape_of(path: str | Path) -> tuple[int, ...]:
    """A ``.npy`` file's shape, read from its header only."""
    return tuple(np.load(path, mmap_mode="r").shape)


def fit_crop(crop: Crop, shape: Sequence[int]) -> Crop:
    """``crop`` moved (and, where an axis is shorter, shrunk) to lie inside ``shape``.

    Lets a crop written for a whole volume be taken from a smaller bundled crop of it.
    """
    if len(crop) != len(shape):
        raise ValueError(f"crop {crop} has {len(crop)} axes, the volume {len(shape)}")
    out = []
    for (a, b), n in zip(crop, shape, strict=True):
        length = min(b - a, n)
        start = min(a, n - length)
        out.append((start, start + length))
    return tuple(out)


def centred_crop(shape: Sequence[int], size: Sequence[int]) -> Crop:
    """The crop of ``size`` (clipped to ``shape``) centred in ``shape``."""
    size = [min(s, n) for s, n in zip(size, shape, strict=True)]
    return tuple(((n - s) // 2, (n - s) // 2 + s) for n, s in zip(shape, size, strict=True))


def corner_crop(shape: Sequence[int], size: Sequence[int]) -> Crop:
    """The crop of ``size`` (clipped to ``shape``) at the origin."""
    return tuple((0, min(s, n)) for s, n in zip(size, shape, strict=True))


def load(path: str | Path, crop: Crop | None = None) -> np.ndarray:
    """Read ``crop`` of the ``.npy`` volume at ``path`` into memory (all of it when None)."""
    arr = np.load(require(path), mmap_mode="r")
    if crop is not None:
        if len(crop) != arr.ndim:
            raise ValueError(f"{path}: crop {crop} has {len(crop)} axes, the volume {arr.ndim}")
        arr = arr[tuple(slice(a, b) for a, b in crop)]
    return np.ascontiguousarray(arr)


def out_dir(name: str, quick: bool, given: str | Path | None = None) -> Path:
    """Where a benchmark writes: ``given``, else ``benchmarks/results/<name>`` (committed reports),
    or for quick runs ``<tmp>/streamcomp-bench/<name>`` so a smoke run never replaces them."""
    if given is not None:
        return Path(given)
    base = Path(tempfile.gettempdir()) / "streamcomp-bench" if quick else RESULTS
    return base / name if name else base
