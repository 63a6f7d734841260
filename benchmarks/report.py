"""Render ``results.json`` into RD plots (PNG) and ``REPORT.md``.

Only rendering lives here: every number shown is read from the results dictionary (the same one
written to ``results.json``), so the report can be regenerated from a saved run with
``python -m benchmarks.report RESULTS_DIR``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

MB = 1e6


def _fmt(x: Any, spec: str = ".2f", none: str = "-") -> str:
    if x is None:
        return none
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int | float):
        return format(x, spec)
    return str(x)


def _rate(x: float | None) -> str:
    return "-" if x is None else f"{x / MB:.3g}"


def plot_volume(volume: str, entries: list[dict[str, Any]], raw_bits: int, path: Path) -> None:
    """PSNR and SSIM against bits per voxel for every codec of one volume (log rate axis).

    streamcomp methods are drawn thick and solid, baselines thin and dashed; lossless floors are
    listed in a note (as vertical lines they would stretch the axis far from the lossy range).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(12.5, 5))
    base_colours = iter(plt.get_cmap("tab10").colors * 3)
    method_colours = iter(["black", "crimson", "navy", "darkgreen", "darkorange", "purple"] * 3)
    floors = []
    for e in entries:
        pts = sorted((p for p in e.get("points", []) if not p.get("error") and p.get("bpv")), key=lambda p: p["bpv"])
        if not pts:
            continue
        if e.get("lossless"):
            floors.append(f"{e['codec']} {pts[0]['ratio']:.2f}x")
            continue
        mine = e["kind"] == "method"
        style: dict[str, Any] = {"color": next(method_colours if mine else base_colours), "label": e["codec"]}
        style.update({"lw": 2.4, "marker": "o", "ms": 6} if mine else {"lw": 1.0, "marker": ".", "ls": "--"})
        for ax, key in zip(axes, ("psnr_db", "ssim"), strict=True):
            xy = [(p["bpv"], p[key]) for p in pts if p.get(key) is not None]
            if xy:
                ax.plot([x for x, _ in xy], [y for _, y in xy], **style)
                style.pop("label", None)

    def flip(v: Any) -> Any:  # bits per voxel <-> compression ratio (its own inverse)
        return raw_bits / np.maximum(v, 1e-12)

    for ax, label in zip(axes, ("PSNR (dB, peak = max - min)", "SSIM (3D Gaussian)"), strict=True):
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("bits per voxel (every stored byte)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)

        top = ax.secondary_xaxis("top", functions=(flip, flip))
        top.set_xlabel("compression ratio")
        top.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        top.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        top.xaxis.set_minor_formatter(NullFormatter())
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="center right", fontsize=8)
    note = f"  (lossless floors: {', '.join(floors)})" if floors else ""
    fig.suptitle(f"{volume}: rate-distortion{note}")
    fig.tight_layout(rect=(0, 0, 0.87, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _machine_md(m: dict[str, Any]) -> list[str]:
    v = m.get("versions", {})
    lines = [
        "## Machine",
        "",
        f"- CPU: {m.get('cpu_model')} — {m.get('logical_cores')} logical cores "
        f"({m.get('usable_cores')} usable by this process)",
        f"- RAM: {m.get('ram_gib')} GiB",
        f"- GPU: {m.get('gpu')}",
        f"- Python {m.get('python')} on {m.get('platform')}",
        "- Versions: " + ", ".join(f"{k} {val or 'not installed'}" for k, val in v.items()),
        "",
    ]
    return lines


def _points_table(entries: list[dict[str, Any]]) -> list[str]:
    head = (
        "| codec | kind | target | ratio | hit | bpv | PSNR dB | SSIM | max err | enc MVox/s | dec MVox/s "
        "| chunk dec ms | ΔRSS MiB | proc peak MiB | ffmpeg peak MiB | knob |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for e in entries:
        for p in e.get("points", []):
            if p.get("error"):
                lines.append(
                    f"| {e['codec']} | {e['kind']} | {_fmt(p.get('target_ratio'), 'g')} | error: "
                    f"{str(p['error'])[:160]} |" + " |" * 12
                )
                continue
            psnr = "lossless" if p.get("lossless") else _fmt(p.get("psnr_db"))
            knob = "" if p.get("knob_name") is None else f"{p['knob_name']}={p['knob']:.4g}"
            lines.append(
                f"| {e['codec']} | {e['kind']} | {_fmt(p.get('target_ratio'), 'g')} | {_fmt(p['ratio'], '.1f')} "
                f"| {_fmt(p.get('hit_target'))} | {_fmt(p['bpv'], '.3f')} | {psnr} | {_fmt(p.get('ssim'), '.4f')} "
                f"| {_fmt(p.get('max_abs_error'), '.0f')} | {_rate(p.get('encode_voxels_per_s'))} "
                f"| {_rate(p.get('decode_voxels_per_s'))} | {_fmt(p.get('chunk_decode_ms'), '.0f')} "
                f"| {_fmt(p.get('rss_delta_mib'), '.1f')} "
                f"| {_fmt(p.get('process_peak_rss_mib'), '.0f')} | {_fmt(p.get('child_peak_rss_mib'), '.0f')} "
                f"| {knob} |"
            )
    return lines


def _bd_table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return ["No BD figures: no lossy codec has two or more points here.", ""]
    lines = [
        "| codec | kind | vs anchor | BD-rate % | BD-PSNR dB | points (test/anchor) | fit degree | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["anchor"], r["kind"] != "method", r["codec"])):
        lines.append(
            f"| {r['codec']} | {r['kind']} | {r['anchor']} | {_fmt(r['bd_rate_pct'], '+.1f')} "
            f"| {_fmt(r['bd_psnr_db'], '+.2f')} | {r['points']}/{r['anchor_points']} | {r['fit_degree']} "
            f"| {r['note'] or ''} |"
        )
    return [*lines, ""]


def write_report(results: dict[str, Any], out_dir: Path) -> Path:
    """Write the plots and ``REPORT.md`` into ``out_dir``; returns the report path."""
    meta = results["meta"]
    flag = {"quick": " --quick", "full": " --full"}.get(meta["mode"], "")
    lines = [
        f"# streamcomp rate-distortion benchmark ({meta['mode']} mode)",
        "",
        f"Run {meta['started']} in {meta['wall_s']:.0f} s. Generated by `python -m benchmarks.run{flag}`; "
        "raw numbers in `results.json`; what is measured and the caveats: `benchmarks/README.md`.",
        "",
    ]
    if meta["mode"] == "quick":
        lines += [
            "> Quick mode: tiny crops, two ratios, few INR steps. It checks that every path runs; the "
            "numbers are dominated by per-stream headers and are not representative.",
            "",
        ]
    elif meta["mode"] == "standard":
        lines += [
            f"> Standard mode: crops of a few chunks per volume (listed per volume below), every ratio; "
            f"every method's training steps capped at {meta['config']['max_steps']} (their defaults are "
            "200-600), so the per-chunk INRs (siren, nerf, sci, planes) are measured short of their best. "
            "Whole volumes: `--full` (many hours on 2 cores).",
            "",
        ]
    lines += _machine_md(results["machine"])
    devices = sorted({p["device"] for e in results["entries"] for p in e["points"] if p.get("device")})
    if devices:
        lines[-1:-1] = [f"- streamcomp methods trained on: {', '.join(devices)}"]
    lines += [
        "## Not run",
        "",
        "| codec | volume | status | reason |",
        "|---|---|---|---|",
    ]
    skipped = [e for e in results["entries"] if e["status"] != "ok"]
    for e in skipped:
        lines.append(f"| {e['codec']} | {e['volume']} | {e['status']} | {e.get('reason') or ''} |")
    if not skipped:
        lines.append("| - | - | - | every codec ran on every volume |")
    lines.append("")
    lines += [
        "Columns: *ratio* = raw bytes / every stored byte; *hit* = within 10 % of the target; "
        "*chunk dec ms* = reading one chunk (the first) from a freshly opened array, codec loaded "
        "(streamcomp methods; the baselines are whole streams); "
        "*ΔRSS* = peak resident memory the in-process call added; *proc peak* = the worker process's "
        "peak RSS during the call (interpreter and libraries included, an upper bound); *ffmpeg peak* = "
        "peak RSS of the ffmpeg processes; throughput = million voxels per second, wall clock.",
        "",
    ]
    for vname, vol in results["volumes"].items():
        entries = [e for e in results["entries"] if e["volume"] == vname]
        png = f"rd_{vname}.png"
        raw_bits = 8 * vol["raw_bytes"] // max(1, int(np.prod(vol["shape"])))
        plot_volume(vname, entries, raw_bits, out_dir / png)
        lines += [
            f"## {vname}: {vol['modality']}",
            "",
            f"`{vol['file']}` crop {vol['crop']} → shape {vol['shape']} {vol['dtype']}, "
            f"{vol['raw_bytes']} raw bytes; targets {vol['targets']}.",
            "",
            f"![{vname} rate-distortion]({png})",
            "",
            *_points_table([e for e in entries if e["status"] == "ok"]),
            "",
            "### Bjøntegaard deltas (rate = bits per voxel, quality = PSNR)",
            "",
            *_bd_table(results["bd"].get(vname, [])),
        ]
    path = out_dir / "REPORT.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out_dir = Path(args[0] if args else "benchmarks/results")
    results = json.loads((out_dir / "results.json").read_text())
    print(write_report(results, out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
