"""How the byte budget is split across chunks: the same bytes per voxel, the planner's split at
one estimated step (the default), and an oracle that coded every chunk at many steps.

    python -m benchmarks.studies.allocation [--volumes em,ct_head,ct_thorax] [--bundled] [--chunks 16,64,64]
                                            [--ratios 64,256] [--out DIR]

Each whole volume is cut into the ``wavelet`` method's default chunks, each chunk normalized as the
pipeline does. A context model is fitted on all of them (at the steps their voxel budgets need, as
the method's fit does; no post-filter, so only the split differs). Then, at each ratio:

- ``voxels``: every chunk coded in its share of the voxels (``allocation=voxels``);
- ``estimate``: in the budget :func:`streamcomp.plan.assign_budgets` gives it from the scan's
  rate curves (the default; the real plan code, fed the real curves);
- ``oracle, one step``: every chunk coded at 17 steps around its own; the one step in the data's
  units (read between those points) whose bytes add up to the estimate's;
- ``oracle, one slope``: each chunk's point minimizing error + lambda * bytes, lambda set so the
  bytes do not exceed the estimate's (the best split those points allow).

Error is summed in the data's units (each chunk's normalized error times its half range squared);
PSNR with peak = max - min of the volume. Writes ``allocation.{json,md}`` to ``--out`` (default
``benchmarks/results/``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import data
from benchmarks.studies.common import machine, write_json
from benchmarks.volumes import VOLUMES, load
from streamcomp.coding.fit_context import StatsCollector, fit_context_model
from streamcomp.coding.residual import ResidualCoder, encode_residual, step_of
from streamcomp.format.frame import header_size
from streamcomp.methods.wavelet import STEP_SPREAD, WaveletMethod
from streamcomp.plan import assign_budgets, chunk_grid, chunk_stats, plan_from_stats
from streamcomp.values import normalize

RATIOS = {"em": (4, 8, 20), "ct_head": (64, 256, 1024), "ct_thorax": (64, 256, 1024)}
OFFSETS = np.arange(-2.0, 2.01, 0.25)  # log2 steps around a chunk's own, for the oracle


def _chunks(volume: np.ndarray, chunks: tuple[int, ...]):
    """(normalized block, half range) of every data chunk, and the plan with the scan's rate curves."""
    items = list(chunk_grid(volume.shape, chunks))
    method = WaveletMethod()
    stats = [chunk_stats(volume[it.slices], None, method.rate_curve) for it in items]
    plan = plan_from_stats(volume.shape, chunks, volume.dtype, items, stats)
    blocks = []
    for it, st in zip(items, stats, strict=True):
        if st[2] == "data":
            x, lo, hi = normalize(volume[it.slices])
            blocks.append((x, (hi - lo) / 2))
    return plan, blocks


def _budgets(plan, ratio: float, curves: bool) -> list[int]:
    """The data chunks' payload budgets (their frames left out) under either split."""
    rates = plan.rates
    if not curves:
        plan.rates = None
    assign_budgets(plan, ratio, 0, 0)
    plan.rates = rates
    frame = header_size(len(plan.shape), 3)
    return [int(b) - frame for b in plan.budgets[plan.budgets >= 0]]


def _coded(blocks, budgets: list[int], model) -> tuple[int, float]:
    size = error = 0.0
    for (x, half), budget in zip(blocks, budgets, strict=True):
        data_bytes, decoded = encode_residual(x, budget=budget, model=model)
        size += len(data_bytes)
        error += float(((decoded - x) ** 2).sum()) * half**2
    return int(size), error


def _ratio_rows(blocks, plan, ratio: float, peak: float, voxels: int) -> list[dict[str, Any]]:
    even = _budgets(plan, ratio, curves=False)
    steps = [step_of(encode_residual(x, budget=b)[0]) for (x, _), b in zip(blocks, even, strict=True)]
    collector = StatsCollector()
    for (x, _), (log2_step, planar) in zip(blocks, steps, strict=True):
        coder = ResidualCoder(x, planar)
        for offset in STEP_SPREAD:
            collector.add(coder.lattices, coder.parents, coder.levels, coder.quantize(log2_step + offset)[1])
    model = fit_context_model(collector.stats(), 16, 32).student
    rows = []
    for name, budgets in (("voxels", even), ("estimate", _budgets(plan, ratio, curves=True))):
        size, error = _coded(blocks, budgets, model)
        rows.append({"split": name, "bytes": size, "sse": error})
    # Every chunk at steps around its own, under the transform its estimate-split coding chose.
    points = []
    for (x, half), (log2_step, planar) in zip(blocks, steps, strict=True):
        coder = ResidualCoder(x, planar, model)
        curve = []
        for offset in OFFSETS:
            coded, decoded = coder.code(log2_step + offset)
            error = float(((decoded - x) ** 2).sum()) * half**2
            curve.append((log2_step + offset + np.log2(half), len(coded), error))
        points.append(np.array(curve))
    target = rows[1]["bytes"]
    rows.append({"split": "oracle, one step", **_one_step(points, target)})
    rows.append({"split": "oracle, one slope", **_one_slope(points, target)})
    for r in rows:
        r.update(ratio_target=ratio, ratio=voxels * plan.dtype.itemsize / r["bytes"],
                 psnr=float(10 * np.log10(peak**2 * voxels / r["sse"])))
    return rows


def _one_step(points: list[np.ndarray], target: int) -> dict[str, float]:
    def at(x: float) -> tuple[float, float]:
        size = sum(np.exp(np.interp(x, p[:, 0], np.log(np.maximum(p[:, 1], 1.0)))) for p in points)
        error = sum(np.exp(np.interp(x, p[:, 0], np.log(np.maximum(p[:, 2], 1e-30)))) for p in points)
        return size, error

    lo = min(p[0, 0] for p in points)
    hi = max(p[-1, 0] for p in points)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if at(mid)[0] > target else (lo, mid)
    size, error = at(hi)
    return {"bytes": int(size), "sse": error}


def _one_slope(points: list[np.ndarray], target: int) -> dict[str, float]:
    best = None
    for lam in np.geomspace(1e-12, 1e12, 2000):
        picks = [p[np.argmin(p[:, 2] + lam * p[:, 1])] for p in points]
        size, error = sum(q[1] for q in picks), sum(q[2] for q in picks)
        if size <= target and (best is None or error < best[1]):
            best = (size, error)
    return {"bytes": int(best[0]), "sse": best[1]}


def report(results: dict[str, Any]) -> str:
    m = results["machine"]
    out = ["# Splitting the bytes across chunks", "",
           "`python -m benchmarks.studies.allocation` (see its docstring): whole volumes in the `wavelet` method's "
           "default chunks, one context model fitted on all chunks, no post-filter, every chunk's coded bytes "
           "counted (not the frames or metadata). The oracle rows coded every chunk at 17 steps, a quarter of an "
           "octave apart; \"one slope\" can only pick among those points, so it may spend fewer bytes than the "
           "others (a higher ratio), which costs it where the steps are coarse for the rate (EM).", "",
           f"Machine: {m.get('cpu_model', '?')}, {m.get('usable_cores', '?')} usable cores.", ""]
    for name, vol in results["volumes"].items():
        out += [f"## {name} ({'x'.join(map(str, vol['shape']))} {vol['dtype']}, {vol['chunks']} chunks)", "",
                "| target | split | ratio | PSNR | vs voxels |", "|---|---|---|---|---|"]
        for target in sorted({r["ratio_target"] for r in vol["rows"]}):
            rows = [r for r in vol["rows"] if r["ratio_target"] == target]
            base = rows[0]["psnr"]
            for r in rows:
                out.append(f"| {target}x | {r['split']} | {r['ratio']:.2f} | {r['psnr']:.2f} | "
                           f"{r['psnr'] - base:+.2f} dB |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--volumes", default="em,ct_head,ct_thorax")
    p.add_argument("--bundled", action="store_true", help="the crops shipped in the repository")
    p.add_argument("--chunks", help="chunk shape, comma-separated (default: the wavelet method's)")
    p.add_argument("--ratios", help="target ratios, comma-separated (default: three per volume)")
    p.add_argument("--out", default=str(data.RESULTS))
    args = p.parse_args(argv)
    results: dict[str, Any] = {"machine": machine(), "volumes": {}}
    for name in args.volumes.split(","):
        spec = VOLUMES[name]
        path = spec.shipped_or_skip() if args.bundled else data.require(spec.path)
        if path is None:
            continue
        volume = load(spec, None, path)
        chunks = tuple(int(c) for c in args.chunks.split(",")) if args.chunks else None
        plan, blocks = _chunks(volume, chunks or WaveletMethod.default_chunks[volume.ndim])
        peak = float(volume.max()) - float(volume.min())
        rows = []
        for ratio in [float(r) for r in args.ratios.split(",")] if args.ratios else RATIOS[name]:
            start = time.perf_counter()
            rows += _ratio_rows(blocks, plan, ratio, peak, volume.size)
            for r in rows[-4:]:
                print(f"{name:10s} {ratio:>5}x {r['split']:18s} ratio {r['ratio']:8.2f} PSNR {r['psnr']:6.2f}",
                      flush=True)
            print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)
        results["volumes"][name] = {"shape": list(volume.shape), "dtype": str(volume.dtype),
                                    "chunks": len(blocks), "rows": rows}
    out = Path(args.out)
    write_json(out / "allocation.json", results)
    (out / "allocation.md").write_text(report(results))


if __name__ == "__main__":
    main()
