"""What the benchmark ran on: CPU, cores, memory, GPU, and the versions of every codec library.

Throughput and memory figures mean nothing without the machine and library versions beside them,
so the report embeds this description. Every probe degrades to a string saying what is unknown.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from typing import Any

_PACKAGES = ("numpy", "scipy", "zarr", "numcodecs", "imagecodecs", "zfpy", "pysz", "torch", "matplotlib")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# Vector extensions the codecs' and torch's kernels dispatch on: two "AMD EPYC" instances with and
# without AVX-512 bfloat16 differ twofold in the post-filter's time.
_VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def _vector_units() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return ", ".join(f for f in _VECTOR_FLAGS if f in flags) or "none of " + ", ".join(_VECTOR_FLAGS)
    except OSError:
        pass
    return "unknown"


def _ram_gib() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _gpu() -> str:
    """GPUs as the NVIDIA driver lists them; torch is not imported (seconds) just to ask."""
    if shutil.which("nvidia-smi") is None:
        return "none (no NVIDIA driver: nvidia-smi not found)"
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown (nvidia-smi failed: {exc})"
    names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return "; ".join(names) if names else "none (nvidia-smi lists no GPU)"


def _ffmpeg_version() -> str | None:
    if shutil.which("ffmpeg") is None:
        return None
    try:
        out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    first = out.stdout.splitlines()[0] if out.stdout else ""
    return first.replace("ffmpeg version ", "").split(" Copyright")[0] or None


def describe() -> dict[str, Any]:
    """Machine and library description for ``results.json`` and the report."""
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["ffmpeg"] = _ffmpeg_version()
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {
        "cpu_model": _cpu_model(),
        "vector_units": _vector_units(),
        "logical_cores": os.cpu_count(),
        "usable_cores": affinity,
        "ram_gib": _ram_gib(),
        "gpu": _gpu(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }
