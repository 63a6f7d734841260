"""Benchmark jobs in a separate process: ``python -m benchmarks.worker JOBS.json OUT.json``.

Why a separate process: a C codec that crashes (zfpy segfaults on some rates) takes down only the
worker, and the runner restarts one for the jobs left; the baselines' worker never imports torch,
so its memory figures start clean; the runner's own state never leaks into the measurements.
The runner uses one worker for all baselines and one for all methods, so torch's multi-second
import and first-step initialisation are paid once (methods are also warmed up untimed, see
:func:`benchmarks.project_methods.warm_up`). The result file is rewritten after every target, so
a crash keeps what was already measured.

Quality numbers come from :mod:`streamcomp.metrics` (PSNR with peak = max - min of the original,
3D/4D Gaussian SSIM, ratio and bits per voxel), the same definitions the CLI and the tests use.
"""

from __future__ import annotations

import json
import math
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.memory import PeakMemory
from benchmarks.volumes import VOLUMES, load

HIT_TOL = 0.10


def _finite_or_none(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def quality_record(
    original: np.ndarray,
    decoded: np.ndarray,
    stored_bytes: int,
    encode_s: float,
    decode_s: float,
    with_ssim: bool = True,
) -> dict[str, Any]:
    """Rate, quality and throughput of one round trip (PSNR None when it was lossless)."""
    from streamcomp import metrics

    if decoded.shape != original.shape:
        raise RuntimeError(f"decoded shape {decoded.shape} differs from the original {original.shape}")
    psnr = metrics.psnr(original, decoded)
    err = np.abs(original.astype(np.float64) - decoded.astype(np.float64))
    voxels = int(original.size)
    return {
        "stored_bytes": int(stored_bytes),
        "raw_bytes": int(original.nbytes),
        "voxels": voxels,
        "ratio": metrics.ratio(original.nbytes, stored_bytes),
        "bpv": metrics.bits_per_voxel(stored_bytes, voxels),
        "lossless": bool(not math.isfinite(psnr)),
        "psnr_db": _finite_or_none(psnr),
        "ssim": float(metrics.ssim(original, decoded)) if with_ssim else None,
        "max_abs_error": float(err.max()),
        "encode_s": float(encode_s),
        "decode_s": float(decode_s),
        "encode_voxels_per_s": voxels / encode_s if encode_s > 0 else None,
        "decode_voxels_per_s": voxels / decode_s if decode_s > 0 else None,
    }


def finite_json(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None, so the JSON stays standard."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_json(v) for v in obj]
    return obj


def _target_fields(target: float | None, ratio: float) -> dict[str, Any]:
    if target is None:
        return {"target_ratio": None, "hit_target": None, "ratio_error_pct": None}
    return {
        "target_ratio": float(target),
        "hit_target": bool(abs(math.log(ratio / target)) <= math.log1p(HIT_TOL)),
        "ratio_error_pct": 100.0 * (ratio / target - 1.0),
    }


def _baseline_points(job: dict[str, Any], volume: np.ndarray, emit: Any) -> None:
    from benchmarks.baselines import REGISTRY, at_ratio

    b = REGISTRY[job["name"]]
    targets: list[float | None] = [None] if b.lossless else list(job["targets"])
    for target in targets:
        try:
            outcome = at_ratio(b.name, volume, target or 1.0, max_evals=job["max_evals"])
            ev = outcome.best
            r = ev.result
            point = quality_record(volume, r.decoded, r.stored_bytes, r.encode_s, r.decode_s, job["ssim"])
            point.update(_target_fields(target, point["ratio"]))
            point.update(
                knob_name=None if b.knob is None else b.knob.name,
                knob=ev.knob,
                evaluations=outcome.evaluations,
                search_trace=[[k, q] for k, q in outcome.trace],
                **ev.memory,
            )
        except Exception as exc:
            point = {"target_ratio": target, "error": f"{type(exc).__name__}: {exc}"}
        emit(point)


def _method_points(job: dict[str, Any], volume: np.ndarray, emit: Any) -> None:
    from benchmarks import project_methods

    reason = project_methods.api_reason()  # also imports torch/zarr before any measurement
    if reason:
        raise RuntimeError(reason)
    chunks = tuple(job["chunks"]) if job.get("chunks") else None
    params = dict(job.get("method_params") or {})
    if job.get("max_steps"):
        params = {**project_methods.capped_steps(job["name"], job["max_steps"]), **params}
    project_methods.warm_up(job["name"], params)
    impossible: float | None = None
    for target in sorted(job["targets"]):
        if impossible is not None and target > impossible:
            # Stored size only grows with quality, so a higher ratio than an impossible one is too.
            emit({"target_ratio": target, "error": f"skipped: ratio {impossible:g} was already impossible"})
            continue
        try:
            with PeakMemory() as mem:
                run = project_methods.run_method(job["name"], volume, target, method_params=params, chunks=chunks)
            point = quality_record(volume, run.decoded, run.stored_bytes, run.encode_s, run.decode_s, job["ssim"])
            point.update(_target_fields(target, point["ratio"]))
            point.update(
                api_stored_bytes=run.api_stored_bytes,
                api_ratio=run.api_ratio,
                chunk_decode_ms=1000.0 * run.chunk_decode_s,
                method_params=run.params_applied,
                device=project_methods.device_name(),
                chunks=list(chunks) if chunks else None,
                **mem.as_dict(),
            )
        except Exception as exc:
            point = {"target_ratio": target, "error": f"{type(exc).__name__}: {exc}"}
            if "impossible ratio" in str(exc):
                impossible = target
        emit(point)


def run_jobs(jobs: list[dict[str, Any]], out_path: Path) -> None:
    """Run ``jobs`` in order, keeping ``out_path`` up to date after every point and every job.

    ``out_path`` holds ``{"results": [state, ...]}``, one state per job started, each with its
    points, an error (or None) and ``done``; a job cut short by a crash has ``done: false``.
    """
    results: list[dict[str, Any]] = []

    def save() -> None:
        out_path.write_text(json.dumps({"results": results}, indent=1, allow_nan=False))

    for job in jobs:
        state: dict[str, Any] = {"points": [], "error": None, "done": False}
        results.append(state)

        def emit(point: dict[str, Any], state: dict[str, Any] = state) -> None:
            state["points"].append(finite_json(point))
            save()

        try:
            spec = VOLUMES[job["volume"]]
            crop = tuple(tuple(c) for c in job["crop"]) if job.get("crop") else None
            volume = load(spec, crop, job.get("file"))
            if job["kind"] == "baseline":
                _baseline_points(job, volume, emit)
            else:
                _method_points(job, volume, emit)
        except Exception as exc:
            state["error"] = f"{type(exc).__name__}: {exc}"
            state["traceback"] = traceback.format_exc(limit=5)
        state["done"] = True
        save()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m benchmarks.worker JOBS.json OUT.json", file=sys.stderr)
        return 2
    run_jobs(json.loads(Path(args[0]).read_text())["jobs"], Path(args[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
