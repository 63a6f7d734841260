"""Adapters that run streamcomp's own methods the way a user would: ``.npy`` in, zarr store out.

Methods are listed from ``streamcomp.methods.method_names()`` (the package's entry points), so a
newly registered method joins the benchmark without edits here; their parameters are the fields of
each method's ``Params`` dataclass. Each run writes the crop to a temporary ``.npy``, calls
``streamcomp.api.compress(src, dst, method=..., ratio=target)`` and reads the store back with
plain ``zarr.open_array(dst)[...]`` (the path any downstream reader takes). Stored bytes are every
byte under the store reopened from disk, metadata included, counted by
:func:`streamcomp.format.store.array_stored_bytes`; the figure the API returned is recorded beside it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.memory import PeakMemory


@dataclass
class MethodRun:
    """One compress/decompress round trip of a project method."""

    stored_bytes: int
    decoded: np.ndarray
    encode_s: float
    decode_s: float
    chunk_decode_s: float
    api_stored_bytes: int | None
    api_ratio: float | None
    params_applied: dict[str, Any]
    phases: dict[str, float]  # the pipeline's seconds per phase (scan, fit, encode, total)
    encode_peak_mib: float | None = None  # resident memory the call added at its peak (PeakMemory)
    decode_peak_mib: float | None = None


def method_names() -> tuple[list[str], str | None]:
    """Registered method names, or ([], why the project API cannot be used here)."""
    try:
        from streamcomp.methods import method_names as registered

        return registered(), None
    except Exception as exc:
        return [], f"streamcomp.methods not usable: {type(exc).__name__}: {exc}"


def api_reason() -> str | None:
    """Why ``streamcomp.api.compress`` cannot be called here, or None."""
    try:
        from streamcomp.api import compress  # noqa: F401
    except Exception as exc:
        return f"streamcomp.api.compress not importable: {type(exc).__name__}: {exc}"
    return None


def unsupported(name: str, volume: np.ndarray) -> str | None:
    """Why method ``name`` cannot take ``volume`` (its declared ranks), or None.

    Checked before launching a worker so a 3D-only method on the 4D series is reported as
    unsupported, with the reason, rather than as a failure.
    """
    from streamcomp.methods import method_class

    ndims = tuple(method_class(name).ndims)
    if ndims and volume.ndim not in ndims:
        return f"method {name!r} handles {'/'.join(map(str, ndims))}-D volumes; this one is {volume.ndim}-D"
    return None


def applicable_params(name: str, wanted: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``wanted`` the method declares (e.g. ``steps`` only for INR methods).

    Methods reject unknown parameters, and quick mode's ``steps`` means nothing to a method
    without a training loop, so each method gets only what it knows.
    """
    known = _defaults(name)
    return {k: v for k, v in wanted.items() if k in known}


def capped_steps(name: str, max_steps: int) -> dict[str, int]:
    """Every training-length parameter of the method (``steps``, ``*_steps``) capped at ``max_steps``.

    Methods name their loops differently (``steps`` for per-chunk INRs, ``teacher_steps``,
    ``student_steps``, ... for distillation), so quick mode caps them all by name pattern rather
    than knowing each method.
    """
    return {
        k: min(int(v), int(max_steps))
        for k, v in _defaults(name).items()
        if (k == "steps" or k.endswith("_steps")) and isinstance(v, int) and not isinstance(v, bool)
    }


def _defaults(name: str) -> dict[str, Any]:
    """Every parameter of method ``name`` with its default (the fields of its ``Params``)."""
    from streamcomp.methods import method_class

    return {f.name: f.default for f in dataclasses.fields(method_class(name).Params)}


def device_name() -> str:
    """The torch device streamcomp trains on in this process (cpu, cuda:0, ...)."""
    try:
        from streamcomp.device import default_device

        return str(default_device())
    except Exception as exc:
        return f"unknown ({type(exc).__name__}: {exc})"


_WARMED: set[str] = set()


def warm_up(name: str, method_params: dict[str, Any] | None = None) -> None:
    """Run method ``name`` once on a small synthetic block, untimed, before measuring it.

    The first training step in a process imports and initialises parts of torch (the optimizers
    pull in ``torch._dynamo``: seconds on a CPU); without this, that one-time cost would land in
    the first volume's encode time. Failures are ignored: only the initialisation matters.
    """
    if name in _WARMED:
        return
    _WARMED.add(name)
    rng = np.random.default_rng(0)
    block = (rng.random((8, 32, 32)) * 255).astype(np.uint8)
    params = {**(method_params or {}), **capped_steps(name, 2)}
    with contextlib.suppress(Exception):  # any outcome has done the initialisation
        run_method(name, block, 2.0, method_params=params, chunks=block.shape)


def run_method(
    name: str,
    volume: np.ndarray,
    target_ratio: float,
    *,
    method_params: dict[str, Any] | None = None,
    chunks: tuple[int, ...] | None = None,
    workdir: str | None = None,
    memory: bool = False,
) -> MethodRun:
    """Compress ``volume`` with project method ``name`` at ``target_ratio`` and read it back;
    with ``memory``, then once more each under :class:`PeakMemory` (the resident memory each adds)."""
    import zarr

    from streamcomp.api import compress
    from streamcomp.format.store import array_stored_bytes

    params = applicable_params(name, method_params or {})
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-", dir=workdir) as tmp:
        src = os.path.join(tmp, "volume.npy")
        dst = os.path.join(tmp, "out.zarr")
        np.save(src, volume)

        def encode() -> Any:
            return compress(src, dst, method=name, ratio=float(target_ratio), chunks=chunks,
                            method_params=params or None, overwrite=True, progress=False)  # fmt: skip

        t0 = time.perf_counter()
        result = encode()
        t1 = time.perf_counter()
        decoded = np.asarray(zarr.open_array(dst, mode="r")[...])
        t2 = time.perf_counter()
        # Memory is measured on calls of their own: PeakMemory returns the freed heap to the system
        # first, which would slow the timed calls by their page faults.
        encode_peak = decode_peak = None
        if memory:
            with PeakMemory() as decode_memory:
                zarr.open_array(dst, mode="r")[...]
            with PeakMemory() as encode_memory:
                encode()
            if encode_memory.resettable:
                encode_peak, decode_peak = encode_memory.delta_mib, decode_memory.delta_mib
        array = zarr.open_array(dst, mode="r")  # random access: one chunk, codec already loaded
        t3 = time.perf_counter()
        array[tuple(slice(0, c) for c in array.chunks)]
        chunk_decode_s = time.perf_counter() - t3
        stored = array_stored_bytes(zarr.open_array(dst, mode="r"))
    return MethodRun(
        stored_bytes=stored,
        decoded=decoded,
        encode_s=t1 - t0,
        decode_s=t2 - t1,
        chunk_decode_s=chunk_decode_s,
        api_stored_bytes=getattr(result, "stored_bytes", None),
        api_ratio=getattr(result, "ratio", None),
        params_applied=params,
        phases=dict(getattr(result, "run", {}).get("seconds", {})),
        encode_peak_mib=encode_peak,
        decode_peak_mib=decode_peak,
    )
