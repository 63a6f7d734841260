"""Entry point: ``python -m benchmarks.run [--quick | --full] [--out benchmarks/results]``.

Sweeps target ratios on each volume for every registered baseline and every streamcomp method,
in worker processes (see :mod:`benchmarks.worker`; one for baselines, one for methods), then writes
``results.json``, one RD plot per volume and ``REPORT.md`` with tables, Bjøntegaard deltas against
JPEG XL and x265, the machine description and every codec that did not run, with its reason.
Everything runs one job at a time, so no two codecs share the CPU while being timed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import analysis, baselines, data, machine, project_methods, report
from benchmarks.data import ROOT, Crop
from benchmarks.volumes import MODES, VOLUMES, load

MODE_STEPS = {"quick": 100, "standard": 200}  # cap on every method's training steps, per mode


@dataclass
class Config:
    """What one run measures; ``mode`` (see :mod:`benchmarks.volumes`) sets crops, targets and step caps."""

    mode: str = "standard"
    volumes: list[str] = field(default_factory=list)
    crops: dict[str, Crop | None] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # the .npy each volume is read from
    targets: dict[str, tuple[float, ...]] = field(default_factory=dict)
    codecs: list[str] | None = None
    methods: list[str] | None = None
    method_params: dict[str, Any] = field(default_factory=dict)
    max_steps: int | None = None  # caps every ``steps``/``*_steps`` parameter of every method
    method_chunks: str = "default"  # "default": the project's choice; "whole": one chunk per crop
    max_evals: int = 10
    ssim: bool = True
    worker_timeout_s: float = 6 * 3600.0


def build_config(
    mode: str = "standard",
    *,
    volumes: Sequence[str] | None = None,
    crops: dict[str, Crop | None] | None = None,
    targets: dict[str, Sequence[float]] | None = None,
    codecs: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    inr_steps: int | None = None,
    max_evals: int | None = None,
    worker_timeout_s: float | None = None,
    bundled: bool = False,
) -> Config:
    """Mode defaults, overridden by whatever is given (tests pass tinier crops and one target).

    ``bundled``: read the small crops shipped in the repository (:attr:`VolumeSpec.bundled_path`)
    instead of the whole volumes, every crop moved inside them (:func:`benchmarks.data.fit_crop`);
    without ``volumes``, every volume that has one.
    """
    if mode not in MODES:
        raise SystemExit(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    quick = mode == "quick"
    names = list(volumes) if volumes else [n for n, v in VOLUMES.items() if mode in v.modes]
    unknown = [n for n in names if n not in VOLUMES]
    if unknown:
        raise SystemExit(f"unknown volume(s) {unknown}; choose from {sorted(VOLUMES)}")
    if bundled and not volumes:
        names = [n for n in names if VOLUMES[n].bundled_path is not None]
    files = {n: _volume_file(n, bundled) for n in names}
    chosen = {n: (crops or {}).get(n, VOLUMES[n].crop(mode)) for n in names}
    if bundled:
        chosen = {n: data.fit_crop(c, data.shape_of(files[n])) if c else None for n, c in chosen.items()}
    steps = inr_steps if inr_steps is not None else MODE_STEPS.get(mode)
    return Config(
        mode=mode,
        volumes=names,
        crops=chosen,
        files=files,
        targets={n: tuple((targets or {}).get(n, VOLUMES[n].targets(mode))) for n in names},
        codecs=list(codecs) if codecs else None,
        methods=list(methods) if methods else None,
        max_steps=None if steps is None else int(steps),
        method_chunks="whole" if quick else "default",
        max_evals=max_evals or (6 if quick else 10),
        worker_timeout_s=worker_timeout_s or (600.0 if quick else 6 * 3600.0),
    )


def _volume_file(name: str, bundled: bool) -> str:
    spec = VOLUMES[name]
    if not bundled:
        return str(spec.path)
    if spec.bundled_path is None:
        raise SystemExit(f"no bundled crop of {name!r} ({spec.bundled}*.npy) in {[str(d) for d in data.BUNDLED_DIRS]}")
    return str(spec.bundled_path)


def _worker(jobs: list[dict[str, Any]], timeout_s: float) -> tuple[list[dict[str, Any]], str | None]:
    """Run ``jobs`` in one fresh interpreter: (the job states it saved, why it died or None)."""
    with tempfile.TemporaryDirectory(prefix="bench-job-") as tmp:
        job_path, out_path = Path(tmp, "jobs.json"), Path(tmp, "out.json")
        job_path.write_text(json.dumps({"jobs": jobs}))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        env.setdefault("MPLBACKEND", "Agg")
        failure = None
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "benchmarks.worker", str(job_path), str(out_path)],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s, check=False,
            )  # fmt: skip
            if proc.returncode != 0:
                failure = f"worker exited with {proc.returncode}: {proc.stderr.strip()[-600:]}"
        except subprocess.TimeoutExpired:
            failure = f"worker timed out after {timeout_s:.0f} s"
        states = json.loads(out_path.read_text())["results"] if out_path.exists() else []
        return states, failure


def run_jobs(jobs: list[dict[str, Any]], timeout_s: float) -> list[dict[str, Any]]:
    """Run one codec's jobs (one per volume) in a worker, restarting it after a crash.

    The job a crash interrupts keeps the points it saved and gets the crash as its error; a fresh
    worker takes the jobs after it. ``timeout_s`` applies per job.
    """
    states: list[dict[str, Any]] = []
    while len(states) < len(jobs):
        todo = jobs[len(states) :]
        saved, failure = _worker(todo, timeout_s * len(todo))
        done = [st for st in saved if st.get("done")]
        states += done
        if len(done) < len(todo):
            st = saved[len(done)] if len(saved) > len(done) else {"points": []}
            why = failure or "worker stopped without finishing"
            st.update(error=f"{why} (after {len(st['points'])} target(s))", done=True)
            states.append(st)
    return states


def _entry(volume: str, codec: str, kind: str, **kw: Any) -> dict[str, Any]:
    return {"volume": volume, "codec": codec, "kind": kind, "status": "ok", "reason": None, "points": [], **kw}


def _fill_entry(entry: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """Copy a job's state into its report entry, with status and reasons from its errors."""
    entry["points"] = state["points"]
    good = [p for p in state["points"] if not p.get("error")]
    errors = [state.get("error")] + [p["error"] for p in state["points"] if p.get("error")]
    if any(errors):
        entry["reason"] = "; ".join(dict.fromkeys(e for e in errors if e))[:2000]
    if not good:
        entry["status"] = "error"
        entry["reason"] = entry["reason"] or "no point was produced"
    return entry


def _run_group(
    jobs: list[dict[str, Any]],
    entries: dict[tuple[str, str], dict[str, Any]],
    cfg: Config,
    log: Callable[[str], None],
) -> float:
    """Run a group of jobs in one worker (restarted after crashes); fill their entries."""
    if not jobs:
        return 0.0
    t0 = time.perf_counter()
    states = run_jobs(jobs, cfg.worker_timeout_s)
    for job, state in zip(jobs, states, strict=True):
        entry = _fill_entry(entries[job["volume"], job["name"]], state)
        log(f"[{job['volume']}] {job['name']}: {entry['status']} ({len(entry['points'])} point(s))")
    return time.perf_counter() - t0


def _codecs(names: list[str], avail: dict[str, str | None], api_reason: str | None) -> dict[str, Any]:
    """Every registered baseline and method, with whether it runs here and why not."""
    return {
        **{
            n: {
                "kind": "baseline",
                "family": b.family,
                "description": b.description,
                "lossless": b.lossless,
                "knob": None if b.knob is None else b.knob.name,
                "available": avail[n] is None,
                "reason": avail[n],
            }
            for n, b in baselines.REGISTRY.items()
        },
        **{m: {"kind": "method", "available": api_reason is None, "reason": api_reason} for m in names},
    }


def _load_volumes(cfg: Config, results: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """Read every crop; record it in ``results["volumes"]``; the job fields each volume shares."""
    volumes: dict[str, np.ndarray] = {}
    job_base: dict[str, dict[str, Any]] = {}
    for vname in cfg.volumes:
        spec = VOLUMES[vname]
        crop = cfg.crops[vname]
        volume = volumes[vname] = load(spec, crop, cfg.files.get(vname))
        results["volumes"][vname] = {
            "file": Path(cfg.files.get(vname, spec.path)).name,
            "modality": spec.modality,
            "crop": None if crop is None else [list(c) for c in crop],
            "shape": list(volume.shape),
            "dtype": str(volume.dtype),
            "raw_bytes": int(volume.nbytes),
            "value_range": [float(volume.min()), float(volume.max())],
            "targets": list(cfg.targets[vname]),
        }
        job_base[vname] = {
            "volume": vname,
            "file": cfg.files.get(vname),
            "crop": results["volumes"][vname]["crop"],
            "targets": list(cfg.targets[vname]),
            "max_evals": cfg.max_evals,
            "ssim": cfg.ssim,
        }
    return volumes, job_base


def _baseline_jobs(
    names: list[str], volumes: dict[str, np.ndarray], job_base: dict[str, dict[str, Any]],
    avail: dict[str, str | None], entries: dict[tuple[str, str], dict[str, Any]],
) -> list[dict[str, Any]]:  # fmt: skip
    """One job per (baseline, volume) that can run; an entry with its reason for each that cannot."""
    jobs = []
    for name in names:
        b = baselines.REGISTRY[name]
        for vname, volume in volumes.items():
            entry = entries[vname, name] = _entry(vname, name, "baseline", family=b.family, lossless=b.lossless)
            reason = avail[name] or b.unsupported(volume)
            if reason:
                entry.update(status="unavailable" if avail[name] else "unsupported", reason=reason)
            else:
                jobs.append({**job_base[vname], "kind": "baseline", "name": name})
    return jobs


def _method_jobs(
    names: list[str], volumes: dict[str, np.ndarray], job_base: dict[str, dict[str, Any]], cfg: Config,
    api_reason: str | None, entries: dict[tuple[str, str], dict[str, Any]],
) -> list[dict[str, Any]]:  # fmt: skip
    """One job per (method, volume) that can run; an entry with its reason for each that cannot."""
    jobs = []
    for name in names:
        for vname, volume in volumes.items():
            entry = entries[vname, name] = _entry(vname, name, "method", family="inr", lossless=False)
            if api_reason:
                entry.update(status="unavailable", reason=api_reason)
            elif why := project_methods.unsupported(name, volume):
                entry.update(status="unsupported", reason=why)
            else:
                chunks = list(volume.shape) if cfg.method_chunks == "whole" else None
                jobs.append({**job_base[vname], "kind": "method", "name": name, "chunks": chunks,
                             "method_params": cfg.method_params, "max_steps": cfg.max_steps})  # fmt: skip
    return jobs


def run_benchmarks(
    out_dir: str | Path, cfg: Config, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)
) -> dict[str, Any]:
    """Measure everything ``cfg`` asks for; write results.json, plots and REPORT.md into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    avail = baselines.availability()
    names, methods_reason = project_methods.method_names()
    api_reason = None if methods_reason else project_methods.api_reason()
    method_list = [m for m in names if cfg.methods is None or m in cfg.methods]
    baseline_list = [b for b in baselines.REGISTRY if cfg.codecs is None or b in cfg.codecs]

    config = {k: getattr(cfg, k) for k in ("max_evals", "method_params", "max_steps", "method_chunks", "ssim")}
    results: dict[str, Any] = {
        "meta": {"mode": cfg.mode, "started": started, "config": config},
        "machine": machine.describe(),
        "codecs": _codecs(names, avail, api_reason),
        "volumes": {},
        "entries": [],
        "bd": {},
    }
    if methods_reason:
        results["codecs"]["streamcomp"] = {"kind": "method", "available": False, "reason": methods_reason}
    volumes, job_base = _load_volumes(cfg, results)

    # Two worker processes: one for every baseline, one for every method (torch is imported and
    # warmed up once). A crash restarts the worker for the jobs after the one that crashed.
    entries: dict[tuple[str, str], dict[str, Any]] = {}
    baseline_jobs = _baseline_jobs(baseline_list, volumes, job_base, avail, entries)
    method_jobs = [] if methods_reason else _method_jobs(method_list, volumes, job_base, cfg, api_reason, entries)
    results["meta"]["baselines_wall_s"] = _run_group(baseline_jobs, entries, cfg, log)
    results["meta"]["methods_wall_s"] = _run_group(method_jobs, entries, cfg, log)
    if methods_reason:
        for vname in volumes:
            entries[vname, "streamcomp"] = _entry(
                vname, "streamcomp", "method", status="unavailable", reason=methods_reason
            )
    order = [*baseline_list, *([] if methods_reason else method_list), "streamcomp"]
    for vname in volumes:
        vol_entries = [entries[vname, n] for n in order if (vname, n) in entries]
        results["entries"] += vol_entries
        results["bd"][vname] = analysis.bd_rows(vol_entries, baselines.ANCHORS)

    results["meta"]["wall_s"] = time.perf_counter() - t_start
    (out / "results.json").write_text(json.dumps(results, indent=1, allow_nan=False))
    report.write_report(results, out)
    results["meta"]["wall_s"] = time.perf_counter() - t_start
    (out / "results.json").write_text(json.dumps(results, indent=1, allow_nan=False))
    return results


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="tiny crops, 2 ratios, 100 steps (minutes)")
    mode.add_argument("--full", action="store_true", help="whole volumes, default steps (many hours)")
    p.add_argument("--out", help="output directory (default benchmarks/results; --quick: a temp folder)")
    p.add_argument("--bundled", action="store_true", help="the small crops shipped in tests/data and examples/")
    p.add_argument("--volumes", nargs="+", choices=sorted(VOLUMES), help="subset of volumes")
    p.add_argument("--codecs", nargs="+", help="subset of baseline codecs (default: all registered)")
    p.add_argument("--methods", nargs="+", help="subset of streamcomp methods (default: all registered)")
    p.add_argument("--steps", type=int, help="cap on every method's *steps parameter (quick 100, standard 200)")
    p.add_argument("--max-evals", type=int, help="encodes per ratio search (quick 6, full 10)")
    p.add_argument("--timeout", type=float, help="seconds per (volume, codec) worker")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    cfg = build_config(
        "quick" if args.quick else "full" if args.full else "standard",
        volumes=args.volumes,
        codecs=args.codecs,
        methods=args.methods,
        inr_steps=args.steps,
        max_evals=args.max_evals,
        worker_timeout_s=args.timeout,
        bundled=args.bundled,
    )
    out = data.out_dir("", args.quick, args.out)
    results = run_benchmarks(out, cfg)
    print(f"wrote {out / 'REPORT.md'} in {results['meta']['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
