"""What several test modules share besides fixtures: paths, fast settings, loaders and checks.

Fixtures live in ``conftest.py``; import these with ``from helpers import ...``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import zarr

from streamcomp.format.store import stored_bytes
from streamcomp.plan import Plan, chunk_grid, chunk_stats, plan_from_stats

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"  # small real crops shipped with the tests (README.md)
SAMPLE = ROOT / "examples" / "em_isbi2012_crop_30x256x256_u8.npy"  # the bundled EM sample
# A short per-chunk fit: enough that the decodes the tests check are clearly better than the
# chunk's mean (a SIREN sized for 8 bits per weight needs ~30 steps for that, EM 8x: +3.3 dB).
FAST = {"steps": 30, "batch": 4096}


def command_line(process) -> str:
    """A ``psutil.Process``'s command line, or "" once it has exited (a zombie included) or is not
    ours to read: children listed a moment earlier may be gone by the time they are asked."""
    import psutil

    try:
        return " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):  # ZombieProcess is a NoSuchProcess
        return ""


def load_data(name: str) -> np.ndarray:
    """A shipped crop from ``tests/data`` (every one is in the repository: nothing is skipped)."""
    return np.load(DATA / name)


def run_fresh_python(code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run code in a new interpreter (which never imports streamcomp unless the code does)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)


def assert_fresh_read_matches(store: str | Path, expected: np.ndarray, scratch: str | Path) -> None:
    """A plain ``zarr`` read of ``store`` in a new interpreter (the codec registered by its entry
    point alone) gives exactly ``expected``; ``scratch`` is a folder for the comparison file."""
    path = Path(scratch) / f"expected_{Path(store).name}.npy"
    np.save(path, expected)
    proc = run_fresh_python(
        f"import numpy as np, zarr; a = zarr.open_array({str(store)!r}, mode='r')[...]; "
        f"print(bool(np.array_equal(a, np.load({str(path)!r}))))"
    )
    assert proc.returncode == 0 and proc.stdout.split() == ["True"], proc.stderr


def local_stored_bytes(path: str | Path) -> int:
    """Every byte a local output holds (chunks and metadata documents), as the ratio counts them."""
    return stored_bytes(zarr.storage.LocalStore(str(path), read_only=True), "")


def plan_in_process(
    source, chunks: tuple[int, ...], weight: Callable[[np.ndarray], float | None] | None = None
) -> Plan:
    """The plan the pipeline's scan phase builds, computed here chunk by chunk from ``source``
    (anything with ``shape``, ``dtype`` and ``read(slices)``, or a plain array)."""
    read = source.read if hasattr(source, "read") else (lambda slices: np.asarray(source[slices]))
    items = list(chunk_grid(tuple(source.shape), tuple(chunks)))
    stats = [chunk_stats(read(it.slices), weight) for it in items]
    return plan_from_stats(tuple(source.shape), tuple(chunks), source.dtype, items, stats)
