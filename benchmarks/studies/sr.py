"""The sr method against per-chunk SIREN at equal ratio, and decoding at a chosen scale.

Each run is ``streamcomp.api.compress`` (every stored byte counted, the SR network included) on
real crops of the shared 4D MRI and head CT, then a plain zarr read. Scaled decoding is timed
against a full decode followed by block averaging, and both are scored against the block-averaged
original. Fit memory is measured apart, in this process (:func:`fit_memory`): sr's network is fitted
once more for it, so each sr row takes its fit time twice.

    python -m benchmarks.studies.sr [--quick] [--ratios 16,32,64] [--whole] [--volumes mri4d,ct_head]

Writes ``benchmarks/results/sr.{json,md}`` (``--whole``: the whole volumes, not their crops, to
``sr_whole.{json,md}``).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

from benchmarks import data
from benchmarks.memory import PeakMemory
from benchmarks.studies.common import evenly, machine, median_time, peak_of, quality, write_json
from streamcomp.api import compress
from streamcomp.methods import build_method
from streamcomp.methods.base import FitTargets, Target
from streamcomp.scaled import read_scaled
from streamcomp.values import normalize

RESULTS = Path(__file__).resolve().parents[1] / "results"
VOLUMES = {
    # name: (file, crop, chunks, which axes a scaled read makes coarser: the MRI series' time points
    # are different diffusion directions, so only its space is)
    "mri4d": ("mri4d_dwi_toshiba_13x40x64x64_u16.npy", np.s_[:12, 12:28], (4, 16, 32, 32), (0, 1, 1, 1)),
    "ct_head": ("ct_head_invesalius_cranium_108x256x256_i16.npy", np.s_[40:72, 64:192, 64:192], (16, 64, 64),
                (1, 1, 1)),
}
SCALES = (2, 4)  # read at 1/2 and 1/4 along the scaled axes
STEPS = 300


def methods(ndim: int, quick: bool) -> dict[str, tuple[str, dict]]:
    steps = 60 if quick else STEPS
    sr = {"steps": steps, "sr_steps": 60 if quick else 400, "refine_steps": 10 if quick else 50, "channels": 4}
    return {"siren": ("siren", {"steps": steps, "layers": 5}), "sr": ("sr", sr)}


def block_mean(volume: np.ndarray, factors: tuple[int, ...]) -> np.ndarray:
    """Averages over blocks of ``factors`` voxels per axis (the volume cropped to whole blocks)."""
    shape = tuple(n // f for n, f in zip(volume.shape, factors, strict=True))
    cropped = volume[tuple(slice(0, n * f) for n, f in zip(shape, factors, strict=True))].astype(np.float64)
    split = [v for n, f in zip(shape, factors, strict=True) for v in (n, f)]
    return cropped.reshape(split).mean(axis=tuple(range(1, 2 * len(shape), 2)))


def run_one(
    volume: np.ndarray, chunks: tuple[int, ...], axes: tuple[int, ...], method: str, params: dict, ratio: float,
    tmp: Path, scales: tuple[int, ...] = SCALES,
) -> dict:
    src, dst = tmp / "src.npy", tmp / f"{method}_{ratio}.zarr"
    np.save(src, volume)
    notes: list[str] = []
    handler, logger = _Collect(notes), logging.getLogger("streamcomp")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with PeakMemory() as memory:
            result = compress(str(src), str(dst), method=method, ratio=ratio, chunks=chunks, method_params=params,
                              overwrite=True, progress=False, workers=2)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    full, full_s = median_time(lambda: zarr.open_array(str(dst), mode="r")[...])
    peak = peak_of(volume)
    row = {"method": method, "target": ratio, "ratio": result.ratio, **quality(volume, full, peak),
           "encode_s": result.seconds, "fit_s": result.run.get("seconds", {}).get("fit", 0.0),
           "decode_s": full_s, "driver_peak_mib": memory.delta_mib,
           "notes": [n for n in notes if "trade-off" in n or "trained" in n]}
    row["fit_memory"] = fit_memory(volume, chunks, method, params, ratio)
    row["scaled"] = {}
    for k in scales:
        factors = tuple(k if a else 1 for a in axes)
        scaled, scaled_s = median_time(lambda factors=factors: read_scaled(str(dst), [1 / f for f in factors]))
        reference = block_mean(volume, factors)
        crop = tuple(slice(0, n) for n in reference.shape)
        row["scaled"][f"1/{k}"] = {
            "scaled_psnr": quality(reference, scaled[crop], peak)["psnr"],
            "full_then_average_psnr": quality(reference, block_mean(full, factors), peak)["psnr"],
            "scaled_s": scaled_s,
            "full_then_average_s": full_s,
            "speedup": full_s / max(scaled_s, 1e-9),
        }
    return row


def fit_memory(volume: np.ndarray, chunks: tuple[int, ...], method: str, params: dict, ratio: float) -> dict:
    """Peak resident memory (MiB over what this process held) of the fit, measured in this process
    (the runs above fit in Ray workers): the shared fit on the sample (sr's network; none for
    siren) and one chunk's fit, the middle one, at the run's ratio. The chunk is fitted twice and
    the second fit measured, so neither method's number holds the libraries' first-use pages."""
    grid_counts = [max(n // c, 1) for n, c in zip(volume.shape, chunks, strict=True)]
    corners = [np.unravel_index(i, grid_counts) for i in evenly(int(np.prod(grid_counts)), 8)]
    blocks = [normalize(volume[tuple(slice(i * c, (i + 1) * c) for i, c in zip(corner, chunks, strict=True))])[0]
              for corner in corners]
    target = Target(budget_bytes=int(blocks[0].size * volume.itemsize / ratio))
    coder = build_method(method, params, volume.ndim)
    with PeakMemory() as shared:
        if coder.needs_fit():
            coder.fit_shared(blocks, FitTargets((target,) * len(blocks), int(np.prod(grid_counts))))
    coder.encode(blocks[len(blocks) // 2], target)
    with PeakMemory() as chunk:
        coder.encode(blocks[len(blocks) // 2], target)
    return {"shared_mib": shared.delta_mib, "chunk_mib": chunk.delta_mib, "chunk_voxels": blocks[0].size}


def remeasure_fit_memory(name: str, names: list[str], ratios: list[float], quick: bool, whole: bool) -> None:
    """Measure the fit memory again for the recorded rows (after a change that moves memory, not
    results), and say so in the report's settings."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        raise SystemExit(f"{path} does not exist: run the study first")
    report = json.loads(path.read_text())
    measured = 0
    for volume_name in names:
        file, crop, chunks, _ = VOLUMES[volume_name]
        volume = load_volume(file, crop, whole)
        for row in report["volumes"].get(volume_name, [])[1:]:
            if row["target"] in ratios:
                method, params = methods(volume.ndim, quick)[row["method"]]
                row["fit_memory"] = fit_memory(volume, tuple(chunks), method, params, row["target"])
                measured += 1
                memory = row["fit_memory"]
                print(f"{volume_name} {row['method']} {row['target']:g}x: fit memory "
                      f"{memory['shared_mib']:.0f} / {memory['chunk_mib']:.0f} MiB", flush=True)
    if not measured:
        raise SystemExit(f"{path} has no rows for {', '.join(names)} at {ratios}: run the study for them first")
    report["settings"]["fit_memory"] = (f"re-measured on {machine()['cpu_model']} for {', '.join(names)} at "
                                        f"{'/'.join(f'{r:g}' for r in ratios)}x with --fit-memory-only")
    write_json(path, report)
    (RESULTS / f"{name}.md").write_text(render(report))


class _Collect(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.INFO)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


def render(report: dict) -> str:
    lines = [
        "# sr (downsampling + INR + SR network) vs per-chunk SIREN, and decoding at scale 1/2", "",
        f"machine: `{report['machine']}`", "",
        f"settings: `{report['settings']}`, total {report['seconds']:.0f} s", "",
        "Every stored byte counted (the SR network is in the array's metadata). Decode: plain zarr read.",
        "Scale 1/k: `read_scaled` (each chunk evaluated on the coarse grid, two points per voxel) vs the full",
        "decode then block averaging, both scored against the block-averaged original; the 4D MRI is scaled in",
        "space only (its time points are different diffusion directions). Speedup: full decode time over",
        f"scaled read time ({report['settings'].get('reads', 'one read each')}). Driver peak: the calling "
        "process's peak resident",
        "memory during the encode above what it held before; the chunks and the fit run in Ray workers",
        "(workers=2), whose memory it does not count, so it is no measure of the fit's memory. Fit memory",
        "(shared / chunk): measured apart, in this process, as the peak resident memory above what it held",
        "before: the shared fit on eight of the volume's chunks (sr's network; siren has none) and one chunk's",
        "fit at the run's ratio (its second fit: the first holds the libraries' first-use pages).", "",
    ]
    for name, rows in report["volumes"].items():
        lines += [f"## {name} {rows[0]['shape']}", "",
                  "| method | target | ratio | PSNR dB | SSIM | encode s | fit s | driver peak MiB | fit memory MiB "
                  "shared / chunk | decode s "
                  + "".join(f"| 1/{k}: scaled dB | full+avg dB | speedup " for k in SCALES) + "|",
                  "|---" * (10 + 3 * len(SCALES)) + "|"]
        for r in rows[1:]:
            cells = "".join(f"| {h['scaled_psnr']:.2f} | {h['full_then_average_psnr']:.2f} | {h['speedup']:.1f}x "
                            for h in r["scaled"].values())
            lines.append(f"| {r['method']} | {r['target']:g} | {r['ratio']:.2f} | {r['psnr']:.2f} | {r['ssim']:.4f} | "
                         f"{r['encode_s']:.1f} | {r['fit_s']:.1f} | {r.get('driver_peak_mib', float('nan')):.0f} | "
                         f"{_fit_memory(r)} | {r['decode_s']:.2f} {cells}|")
        chosen = [n for r in rows[1:] for n in r["notes"]]
        if chosen:
            lines += ["", "What the sr fits chose:", ""] + [f"- {n}" for n in chosen]
        lines.append("")
    return "\n".join(lines)


def load_volume(file: str, crop: tuple, whole: bool) -> np.ndarray:
    """The volume ``file`` of the data folder (``$STREAMCOMP_DATA``, else ``../shared/data``), whole
    or its ``crop``."""
    volume = np.load(data.require(data.data_file(file)), mmap_mode="r")
    return np.ascontiguousarray(volume[slice(None) if whole else crop])


def _fit_memory(row: dict) -> str:
    memory = row.get("fit_memory")
    return "-" if memory is None else f"{memory['shared_mib']:.0f} / {memory['chunk_mib']:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few steps, one ratio (a smoke run)")
    parser.add_argument("--ratios", default="16,32,64")
    parser.add_argument("--whole", action="store_true", help="the whole volumes instead of their crops")
    parser.add_argument("--volumes", default=",".join(VOLUMES), help=f"some of {', '.join(VOLUMES)}")
    parser.add_argument("--fit-memory-only", action="store_true",
                        help="re-measure only the fit memory of the recorded rows of these volumes and ratios")
    args = parser.parse_args()
    names = [v for v in args.volumes.split(",") if v]
    if unknown := set(names) - set(VOLUMES):
        parser.error(f"unknown volumes {sorted(unknown)}: choose from {', '.join(VOLUMES)}")
    ratios = [16.0] if args.quick else [float(r) for r in args.ratios.split(",")]
    out_name = "sr_quick" if args.quick else "sr_whole" if args.whole else "sr"
    if args.fit_memory_only:
        remeasure_fit_memory(out_name, names, ratios, args.quick, args.whole)
        return
    start = time.perf_counter()
    report = {"machine": machine(), "volumes": {},
              "settings": {"ratios": ratios, "quick": args.quick, "steps": STEPS, "whole": args.whole,
                           "reads": "each the median of three reads"}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            file, crop, chunks, axes = VOLUMES[name]
            volume = load_volume(file, crop, args.whole)
            rows: list = [{"shape": "x".join(map(str, volume.shape)), "chunks": chunks}]
            for ratio in ratios:
                for label, (method, params) in methods(volume.ndim, args.quick).items():
                    row = run_one(volume, chunks, axes, method, params, ratio, Path(tmp))
                    row["method"] = label
                    rows.append(row)
                    half = row["scaled"]["1/2"]
                    print(f"{name} {label} {ratio:g}x: ratio {row['ratio']:.2f}, {row['psnr']:.2f} dB, "
                          f"encode {row['encode_s']:.1f} s; 1/2 {half['scaled_psnr']:.2f} dB vs "
                          f"{half['full_then_average_psnr']:.2f}, {half['speedup']:.1f}x", flush=True)
            report["volumes"][name] = rows
    report["seconds"] = time.perf_counter() - start
    write_json(RESULTS / f"{out_name}.json", report)
    (RESULTS / f"{out_name}.md").write_text(render(report))
    print(render(report))


if __name__ == "__main__":
    main()
