"""SCI and hybrid feature planes against the per-chunk INRs, on real crops, at equal ratio.

    python -m benchmarks.studies.seed_methods [--steps 120] [--quick] [--bundled] [--out DIR]
        [--volumes em ct_head ct_thorax] [--methods sci] [--update]

Part A, SCI ablations (paper Table 2) on real EM, head CT and thorax CT crops, one chunk per crop at one ratio:
plain per-chunk ``siren`` (= NP with the same network), ``sci`` with adaptive / EP / NP
partitioning, ``fr`` 2.2 vs 1.0, and the four parameter-allocation rules; plus ``planes``
(tri-plane) on the same crops. Part B, the real 4D diffusion MRI: ``planes`` (adaptive and equal
plane scaling) against ``siren`` and ``nerf`` with 4D coordinate input (the paper's baselines).

Every run goes through the real chunk codec (:func:`benchmarks.studies.common.roundtrip`, i.e.
``encode_chunk``), so the ratio is raw bytes over every framed chunk byte (the zarr metadata, the
same for all methods, is left out); PSNR uses the crop's max - min as peak; SSIM is the 3D Gaussian
SSIM (mean over time points for 4D); encode time is wall time on this shared machine. Writes
``seed_methods.{json,md,png}`` to ``--out`` (default ``benchmarks/results/``; ``--quick``: a
temp folder, so the committed report stays). ``--volumes`` / ``--methods`` run only some crops
and rows; with ``--update`` those rows replace their namesakes in the existing report, the others
stay as they were, and the report lists which rows were rerun when.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from benchmarks import data
from benchmarks.studies.common import machine, peak_of, quality, roundtrip, torch_threads, write_json
from benchmarks.volumes import VOLUMES


def crops(quick: bool, bundled: bool = False, volumes: list[str] | None = None) -> dict[str, np.ndarray]:
    """The crops (smaller with ``quick``), from the whole volumes or the bundled crops."""
    s = 64 if quick else 96
    wanted = {
        "em": ((0, 16), (200, 200 + s), (200, 200 + s)),
        "ct_head": ((40, 56), (80, 80 + s), (80, 80 + s)),
        "ct_thorax": ((74, 90), (15, 15 + s), (12, 12 + s)),
        "mri4d": ((0, 6), (12, 28), (8, 56), (8, 56)),
    }
    labels = {
        "em": "EM (ISBI 2012) {} u8",
        "ct_head": "CT head {} i16",
        "ct_thorax": "CT thorax {} i16",
        "mri4d": "MRI 4D DWI {} u16",
    }
    out = {}
    for name, crop in wanted.items():
        if volumes and name not in volumes:
            continue
        spec = VOLUMES[name]
        path = spec.shipped_or_skip() if bundled else spec.path
        if path is None:
            continue
        if bundled:
            crop = data.fit_crop(crop, data.shape_of(path))
        vol = data.load(path, crop)
        out[labels[name].format("x".join(map(str, vol.shape)))] = vol
    return out


def run(name: str, params: dict, vol: np.ndarray, ratio: float) -> dict:
    """One method on one crop, as one chunk at ``ratio``."""
    from streamcomp.methods import build_method

    method = build_method(name, params)
    r = roundtrip(method, vol, int(vol.nbytes / ratio))
    row = {
        "method": name,
        "params": params,
        "ratio": vol.nbytes / len(r.data),
        "bytes": len(r.data),
        **quality(vol, r.decoded, peak_of(vol)),
        "encode_s": r.encode_s,
        "decode_s": r.decode_s,
    }
    if name == "sci":
        row.update(_sci_layout(method, r.data, vol.shape))
    return row


def _sci_layout(method, framed: bytes, shape) -> dict:
    from streamcomp.format.frame import unpack

    frame = unpack(framed)
    code, boxes, hiddens, _, _ = method._parse(frame.sections, shape)
    return {
        "leaves": len(boxes),
        "net_leaves": sum(h > 0 for h in hiddens),
        "deblock_code": code,
        "widths": sorted(set(hiddens)),
    }


SCI_VARIANTS = [
    ("siren (per-chunk, NP)", "siren", {}),
    ("SCI (adaptive, fr 2.2, |x|/D)", "sci", {}),
    ("SCI EP (equidistant)", "sci", {"partition": "equal"}),
    ("SCI NP (no partition)", "sci", {"partition": "none"}),
    ("SCI fr = 1.0", "sci", {"fr": 1.0}),
    ("SCI alloc by_size", "sci", {"allocation": "by_size"}),
    ("SCI alloc by_d", "sci", {"allocation": "by_d"}),
    ("SCI alloc equal", "sci", {"allocation": "equal"}),
    ("SCI deblock off", "sci", {"deblock": "off"}),
    ("SCI D above noise floor", "sci", {"d_noise_floor": True}),
    ("planes (tri-plane)", "planes", {}),
]
PLANES_4D = [
    ("planes (adaptive scaling)", "planes", {}),
    ("planes (equal scaling)", "planes", {"scaling": "equal"}),
    ("siren (4D input)", "siren", {}),
    ("nerf (4D input)", "nerf", {}),
]


def table(rows: list[dict]) -> str:
    lines = ["| variant | ratio | PSNR dB | SSIM | encode s | leaves |", "|---|---|---|---|---|---|"]
    for r in rows:
        leaves = f"{r['net_leaves']}/{r['leaves']}" if "leaves" in r else ""
        lines.append(
            f"| {r['variant']} | {r['ratio']:.2f} | {r['psnr']:.2f} | {r['ssim']:.4f} | "
            f"{r['encode_s']:.1f} | {leaves} |"
        )
    return "\n".join(lines)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.studies.seed_methods", description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=120, help="training steps of the SIREN/NeRF runs")
    ap.add_argument("--planes-steps", type=int, default=300)
    ap.add_argument("--ratio3d", type=float, default=16)
    ap.add_argument("--ratio4d", type=float, default=32)
    ap.add_argument("--quick", action="store_true", help="smaller crops (a smoke run)")
    ap.add_argument("--bundled", action="store_true", help="crop the volumes shipped in tests/data and examples/")
    ap.add_argument("--variants", type=int, help="only the first N variants per crop (smoke runs)")
    ap.add_argument("--volumes", nargs="+", choices=["em", "ct_head", "ct_thorax", "mri4d"], help="only these crops")
    ap.add_argument("--methods", nargs="+", help="only the rows of these methods (e.g. sci)")
    ap.add_argument("--update", action="store_true", help="merge the rows run into the existing report")
    ap.add_argument("--out", help="output folder (default benchmarks/results; --quick: a temp folder)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    from streamcomp.format.frame import header_size

    args = _parse(argv)
    out = data.out_dir("", args.quick, args.out)
    threads = torch_threads(min(2, os.cpu_count() or 1))
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "update")}
    results: dict = {"machine": machine(torch_threads=threads), "settings": settings, "runs": {}}
    t0 = time.perf_counter()
    for vname, vol in crops(args.quick, args.bundled, args.volumes).items():
        variants = PLANES_4D if vol.ndim == 4 else SCI_VARIANTS
        ratio = args.ratio4d if vol.ndim == 4 else args.ratio3d
        rows = []
        for label, name, extra in variants[: args.variants]:
            if args.methods and name not in args.methods:
                continue
            steps = args.planes_steps if name == "planes" else args.steps
            row = run(name, {"steps": steps, **extra}, vol, ratio)
            row["variant"] = label
            rows.append(row)
            print(
                f"{vname:32s} {label:32s} ratio {row['ratio']:6.2f}  PSNR {row['psnr']:6.2f}  "
                f"SSIM {row['ssim']:.4f}  enc {row['encode_s']:6.1f}s  {row.get('leaves', '')}",
                flush=True,
            )
        results["runs"][vname] = rows
        print(table(rows), flush=True)
    results["total_s"] = time.perf_counter() - t0
    results["frame_header_bytes"] = header_size(3, 2)
    if args.update:
        results = merged(json.loads((out / "seed_methods.json").read_text()), results)
    write_json(out / "seed_methods.json", results)
    md = [
        f"# SCI and hybrid planes vs per-chunk INRs\n\nmachine: `{json.dumps(results['machine'])}`\n",
        f"settings: `{json.dumps(results['settings'])}`, total {results['total_s']:.0f} s\n",
    ]
    for up in results.get("updates", []):
        md.append(
            f"rerun {up['date']} (`{json.dumps(up['settings'])}`, {up['total_s']:.0f} s, machine "
            f"`{json.dumps(up['machine'])}`): {'; '.join(f'{v}: {len(r)} rows' for v, r in up['rows'].items())}\n"
        )
    for vname, rows in results["runs"].items():
        md += [f"\n## {vname}\n", table(rows), ""]
    (out / "seed_methods.md").write_text("\n".join(md))
    plot(results, out / "seed_methods.png")
    print(f"wrote {out / 'seed_methods.json'}, .md, .png in {time.perf_counter() - t0:.0f} s")
    return out


def merged(old: dict, new: dict) -> dict:
    """``old`` with the rows of ``new`` in place of their namesakes (new crops and rows appended),
    and an entry in ``updates`` saying what was rerun, when, where and how."""
    out = {**old, "runs": {k: list(v) for k, v in old["runs"].items()}}
    for vname, rows in new["runs"].items():
        kept = out["runs"].setdefault(vname, [])
        for row in rows:
            at = [i for i, r in enumerate(kept) if r["variant"] == row["variant"]]
            if at:
                kept[at[0]] = row
            else:
                kept.append(row)
    update = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "settings": new["settings"],
        "machine": new["machine"],
        "total_s": new["total_s"],
        "rows": {v: [r["variant"] for r in rows] for v, rows in new["runs"].items()},
    }
    out["updates"] = [*old.get("updates", []), update]
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {k: rows for k, rows in results["runs"].items() if rows}
    if not runs:
        return
    fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 5))
    for ax, (vname, rows) in zip(np.atleast_1d(axes), runs.items(), strict=True):
        labels = [r["variant"] for r in rows]
        vals = [r["psnr"] for r in rows]
        ax.barh(
            range(len(rows)), vals, color=["tab:gray" if "siren" in x or "nerf" in x else "tab:blue" for x in labels]
        )
        ax.set_yticks(range(len(rows)), labels, fontsize=8)
        ax.invert_yaxis()
        lo = min(vals) - 1
        ax.set_xlim(lo, max(vals) + 0.5)
        for i, r in enumerate(rows):
            ax.text(r["psnr"], i, f" {r['psnr']:.2f} dB, {r['encode_s']:.0f}s", va="center", fontsize=7)
        ax.set_title(f"{vname}\nratio {rows[0]['ratio']:.1f}", fontsize=9)
        ax.set_xlabel("PSNR (dB)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
