"""Reads at scale 1/2 of ``siren`` arrays fitted for them (``half_scale_weight``) or not.

A plain SIREN is only fitted at voxel centres, so a read at scale 1/2 averages two points of each
output cell (:func:`streamcomp.scaled.supersampling_offsets`) and keeps part of the network's
fine-scale error. With ``half_scale_weight`` the fit also trains the network's closed-form cell
evaluation (:meth:`streamcomp.models.siren.FunnelSiren.forward_cells`) on the means of two-voxel
cells, and the read evaluates each output voxel once. Each run is ``streamcomp.api.compress``
(every stored byte counted) on the crops of the sr study (:mod:`benchmarks.studies.sr`), then a
plain zarr read and ``read_scaled`` at 1/2 (the MRI series in space only), both scored against
the block-averaged original.

    python -m benchmarks.studies.half_scale [--ratios 16,32,64] [--weight 4] [--volumes mri4d,ct_head]
                                            [--bundled | --whole] [--steps 300] [--out DIR]

Writes ``half_scale.{json,md}`` (``--whole``: the whole volumes, ``half_scale_whole.{json,md}``) to
``--out`` (default ``benchmarks/results/``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import data
from benchmarks.studies.common import machine, write_json
from benchmarks.studies.sr import VOLUMES, load_volume, run_one
from benchmarks.volumes import VOLUMES as BUNDLED


def _volume(name: str, bundled: bool, whole: bool) -> np.ndarray:
    if bundled:
        path = BUNDLED[name].bundled_path
        if path is None:
            raise SystemExit(f"{name} has no crop shipped in the repository")
        return np.load(path)
    file, crop, _, _ = VOLUMES[name]
    return load_volume(file, crop, whole)


def render(report: dict) -> str:
    lines = [
        "# Reads at scale 1/2 of siren arrays fitted for them", "",
        f"machine: `{report['machine']}`", "",
        f"settings: `{report['settings']}`, total {report['seconds']:.0f} s", "",
        "`half_scale_weight` 0: the plain fit, read at 1/2 by averaging two points per output voxel; > 0: the fit",
        "also trains the network's closed-form cell evaluation on two-voxel means, and the read evaluates each",
        "output voxel once. Scaled and full-then-averaged reads are both scored against the block-averaged",
        "original; speedup: a whole plain-zarr read's time over the scaled read's "
        f"({report['settings'].get('reads', 'one read each')}).", "",
    ]
    for name, rows in report["volumes"].items():
        lines += [f"## {name} {rows[0]['shape']}, chunks {rows[0]['chunks']}", "",
                  "| half_scale_weight | target | ratio | PSNR dB | SSIM | encode s | 1/2: scaled dB | full+avg dB "
                  "| gap dB | speedup |", "|---" * 10 + "|"]
        for r in rows[1:]:
            h = r["scaled"]["1/2"]
            gap = h["full_then_average_psnr"] - h["scaled_psnr"]
            lines.append(f"| {r['weight']:g} | {r['target']:g} | {r['ratio']:.2f} | {r['psnr']:.2f} | "
                         f"{r['ssim']:.4f} | {r['encode_s']:.1f} | {h['scaled_psnr']:.2f} | "
                         f"{h['full_then_average_psnr']:.2f} | {gap:+.2f} | {h['speedup']:.1f}x |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ratios", default="16,32,64")
    parser.add_argument("--weight", type=float, default=4.0, help="the half_scale_weight compared with 0")
    parser.add_argument("--volumes", default=",".join(VOLUMES), help=f"some of {', '.join(VOLUMES)}")
    parser.add_argument("--bundled", action="store_true", help="the crops shipped in the repository")
    parser.add_argument("--whole", action="store_true", help="the whole volumes instead of their crops")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", default=str(data.RESULTS))
    args = parser.parse_args(argv)
    names = [v for v in args.volumes.split(",") if v]
    if unknown := set(names) - set(VOLUMES):
        parser.error(f"unknown volumes {sorted(unknown)}: choose from {', '.join(VOLUMES)}")
    ratios = [float(r) for r in args.ratios.split(",")]
    start = time.perf_counter()
    report = {"machine": machine(), "volumes": {},
              "settings": {"reads": "each the median of three reads",
                           "ratios": ratios, "weight": args.weight, "steps": args.steps, "bundled": args.bundled,
                           "whole": args.whole}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            _, _, chunks, axes = VOLUMES[name]
            volume = _volume(name, args.bundled, args.whole)
            rows: list = [{"shape": "x".join(map(str, volume.shape)), "chunks": "x".join(map(str, chunks))}]
            for ratio in ratios:
                for weight in (0.0, args.weight):
                    params = {"steps": args.steps, "layers": 5, "half_scale_weight": weight}
                    row = run_one(volume, chunks, axes, "siren", params, ratio, Path(tmp), (2,)) | {"weight": weight}
                    rows.append(row)
                    half = row["scaled"]["1/2"]
                    print(f"{name} weight {weight:g} {ratio:g}x: ratio {row['ratio']:.2f}, {row['psnr']:.2f} dB, "
                          f"1/2 {half['scaled_psnr']:.2f} dB vs {half['full_then_average_psnr']:.2f}, "
                          f"{half['speedup']:.1f}x", flush=True)
            report["volumes"][name] = rows
    report["seconds"] = time.perf_counter() - start
    out = Path(args.out)
    stem = "half_scale_whole" if args.whole else "half_scale"
    write_json(out / f"{stem}.json", report)
    (out / f"{stem}.md").write_text(render(report))
    print(render(report))


if __name__ == "__main__":
    main()
