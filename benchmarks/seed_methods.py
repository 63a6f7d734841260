"""SCI and hybrid feature planes against the per-chunk INRs, on real crops, at equal ratio.

    python -m benchmarks.seed_methods [--steps 120] [--quick]

Part A, SCI ablations (paper Table 2) on real EM and CT crops, one chunk per crop at one ratio:
plain per-chunk ``siren`` (= NP with the same network), ``sci`` with adaptive / EP / NP
partitioning, ``fr`` 2.2 vs 1.0, and the four parameter-allocation rules; plus ``planes``
(tri-plane) on the same crops. Part B, the real 4D diffusion MRI: ``planes`` (adaptive and equal
plane scaling) against ``siren`` and ``nerf`` with 4D coordinate input (the paper's baselines).

Every run goes through the real chunk codec (:func:`streamcomp.chunk.encode_chunk`), so the ratio
is raw bytes over every framed chunk byte (the zarr metadata, the same for all methods, is left
out); PSNR uses the crop's max - min as peak; SSIM is the 3D Gaussian SSIM (mean over time
points for 4D); encode time is wall time on this shared machine. Writes
``benchmarks/results/seed_methods.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from streamcomp.chunk import decode_chunk, encode_chunk
from streamcomp.frame import header_size
from streamcomp.methods import method_class
from streamcomp.metrics import psnr, ssim

DATA = Path(os.environ.get("STREAMCOMP_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
OUT = Path(__file__).resolve().parent / "results"


def crops(quick: bool) -> dict[str, np.ndarray]:
    s = 64 if quick else 96
    em = np.load(DATA / "em_isbi2012_train_30x512x512_u8.npy", mmap_mode="r")
    ct = np.load(DATA / "ct_head_invesalius_cranium_108x256x256_i16.npy", mmap_mode="r")
    mri = np.load(DATA / "mri4d_dwi_toshiba_13x40x64x64_u16.npy", mmap_mode="r")
    return {
        f"EM (ISBI 2012) 16x{s}x{s} u8": np.ascontiguousarray(em[:16, 200 : 200 + s, 200 : 200 + s]),
        f"CT head 16x{s}x{s} i16": np.ascontiguousarray(ct[40:56, 80 : 80 + s, 80 : 80 + s]),
        "MRI 4D DWI 6x16x48x48 u16": np.ascontiguousarray(mri[:6, 12:28, 8:56, 8:56]),
    }


def run(name: str, params: dict, vol: np.ndarray, ratio: float) -> dict:
    method = method_class(name)(**params)
    budget = int(vol.nbytes / ratio)
    t = time.perf_counter()
    data = encode_chunk(method, vol, budget_bytes=budget)
    enc = time.perf_counter() - t
    t = time.perf_counter()
    out = decode_chunk(method, data)
    dec = time.perf_counter() - t
    peak = float(vol.max()) - float(vol.min())
    if vol.ndim == 4:
        s = float(np.mean([ssim(vol[i], out[i], peak) for i in range(vol.shape[0])]))
    else:
        s = ssim(vol, out, peak)
    row = {
        "method": name,
        "params": params,
        "ratio": vol.nbytes / len(data),
        "bytes": len(data),
        "psnr": psnr(vol, out, peak),
        "ssim": s,
        "encode_s": enc,
        "decode_s": dec,
    }
    if name == "sci":
        frame_sections = _sci_layout(method, data, vol.shape)
        row.update(frame_sections)
    return row


def _sci_layout(method, data: bytes, shape) -> dict:
    from streamcomp.frame import unpack

    frame = unpack(data)
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
    ("planes (tri-plane)", "planes", {}),
]
PLANES_4D = [
    ("planes (adaptive scaling)", "planes", {}),
    ("planes (equal scaling)", "planes", {"scaling": "equal"}),
    ("siren (4D input)", "siren", {}),
    ("nerf (4D input)", "nerf", {}),
]


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or "unknown",
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": "none",
        "note": "2 CPU cores shared with other jobs: times are indicative only",
    }


def table(rows: list[dict]) -> str:
    lines = ["| variant | ratio | PSNR dB | SSIM | encode s | leaves |", "|---|---|---|---|---|---|"]
    for r in rows:
        leaves = f"{r['net_leaves']}/{r['leaves']}" if "leaves" in r else ""
        lines.append(
            f"| {r['variant']} | {r['ratio']:.2f} | {r['psnr']:.2f} | {r['ssim']:.4f} | "
            f"{r['encode_s']:.1f} | {leaves} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=120, help="training steps of the SIREN/NeRF runs")
    ap.add_argument("--planes-steps", type=int, default=300)
    ap.add_argument("--ratio3d", type=float, default=16)
    ap.add_argument("--ratio4d", type=float, default=32)
    ap.add_argument("--quick", action="store_true", help="smaller crops (a smoke run)")
    args = ap.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    vols = crops(args.quick)
    results: dict = {"machine": machine(), "settings": vars(args), "runs": {}}
    t0 = time.perf_counter()
    for vname, vol in vols.items():
        variants = PLANES_4D if vol.ndim == 4 else SCI_VARIANTS
        ratio = args.ratio4d if vol.ndim == 4 else args.ratio3d
        rows = []
        for label, name, extra in variants:
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
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "seed_methods.json").write_text(json.dumps(results, indent=1, default=float))
    md = [
        f"# SCI and hybrid planes vs per-chunk INRs\n\nmachine: `{json.dumps(results['machine'])}`\n",
        f"settings: `{json.dumps(results['settings'])}`, total {results['total_s']:.0f} s\n",
    ]
    for vname, rows in results["runs"].items():
        md += [f"\n## {vname}\n", table(rows), ""]
    (OUT / "seed_methods.md").write_text("\n".join(md))
    plot(results, OUT / "seed_methods.png")
    print(f"wrote {OUT / 'seed_methods.json'}, .md, .png in {results['total_s']:.0f} s")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
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


if __name__ == "__main__":
    main()
