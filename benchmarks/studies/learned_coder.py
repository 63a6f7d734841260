"""The learned context model (the ``wavelet`` method's default) against the same coder with its
hand-set models, and against JPEG XL and x265, on whole volumes as a user runs them.

    python -m benchmarks.studies.learned_coder [--quick] [--bundled] [--volumes em,ct_head,ct_thorax]
                                               [--codecs jpegxl,x265] [--out DIR]
                                               [--baselines-from JSON [--reuse OLD:NEW,...]]

Every streamcomp row is ``streamcomp.api.compress`` at a target ratio, in its default chunks,
read back through plain zarr (:func:`benchmarks.project_methods.run_method`), every stored byte
counted (the model travels in the codec configuration). Rows: ``wavelet`` (learned context model
and post-filter, the default), the same with every chunk's budget its share of the voxels instead of
its bytes at one step common to the array (``allocation=voxels``), the same without the
post-filter (``filter_channels=0``),
``wavelet`` with ``entropy=context`` and no filter (the same transform, quantizer and rate control
with the hand-set per-chunk models: the coder as it was before the learned parts), and the
baselines, searched to the same ratios (or taken from an earlier run's JSON with
``--baselines-from``, their inputs and code being the same; ``--reuse OLD:NEW`` also takes that
run's streamcomp row OLD as row NEW: a row whose code has not changed since, or, under a name of
its own, the coder as it was then, to measure what changed). Ablations at one
ratio per volume: no starts at all (the context model's teacher and student and the post-filter
fitted from scratch), and, without the filter, the context model from scratch, that without
distillation (the student fitted alone) and with a wider student (which has no start either).
Every row that starts from starts trained (:mod:`streamcomp.methods.starts`) takes ones trained on
the other shared volumes only, never on the one measured. The fit's own report (teacher and student bits per
coefficient, the model's and the filter's held-out gains, fit seconds) is read from the run's
log. BD-rate and BD-PSNR are over each volume's ratios. Writes ``learned_coder.{json,md}`` to ``--out`` (default
``benchmarks/results/``; ``--quick``: a temp folder).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import baselines, bd, data
from benchmarks.project_methods import run_method
from benchmarks.studies.common import machine, peak_of, quality, write_json
from benchmarks.volumes import VOLUMES, load
from streamcomp.methods import starts as start_points

RESULTS = data.RESULTS
NO_FILTER = {"filter_channels": 0}
ROWS = {"learned": {}, "same bytes per voxel": {"allocation": "voxels"}, "no post-filter": NO_FILTER,
        "hand-set": {"entropy": "context", **NO_FILTER}}
ABLATIONS = {"no starts": {"start": "none"}, "model from scratch": {"start": "none", **NO_FILTER},
             "no distillation": {"start": "none", "distill": 0.0, **NO_FILTER},
             "student 32 hidden": {"hidden": 32, **NO_FILTER}, "signs at one bit": {"signs": False}}
ABLATION_RATIO = {"em": 8, "ct_head": 64, "ct_thorax": 64}
QUICK_TARGETS = {"em": (8,), "ct_head": (64,), "ct_thorax": (64,)}
PLANAR_VOLUMES = {"em"}  # serial-section EM codes its chunks section by section (the CT chunks in 3D)
_FIT = re.compile(
    r"context model \(.*?\) in ([\d.]+) s .*?: ([\d.]+) bits/coefficient \(.*?\), ([\d.]+) \(stored student"
)
_HELD = re.compile(r"decodes (-?[\d.]+|inf) dB closer|did not pay")
# One note per filter size tried: "post-filter (C channels, ...) trained ... in T s ...: G dB on ...: kept".
_FILTER = re.compile(
    r"post-filter \((\d+) channels.*?(?:in ([\d.]+) s .*?: ([-+][\d.]+) dB on .*?: (kept|dropped)|skipped)"
)
_KEPT = re.compile(r"(\d+) ch [-+][\d.]+ dB, kept")  # the kept filter in a row's "filter" cell


class _Notes(logging.Handler):
    """Collects the driver's log lines (the method's fit notes)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _fit_report(lines: list[str]) -> dict[str, Any]:
    text = " ".join(lines)
    out: dict[str, Any] = {}
    if m := _FIT.search(text):
        out.update(fit_s=float(m[1]), teacher_bits=float(m[2]), student_bits=float(m[3]))
    if m := _HELD.search(text):
        out["held_out_gain_db"] = float(m[1]) if m[1] else None
        out["kept"] = m[1] is not None
    tries = [f"{m[1]} ch " + ("skipped" if m[4] is None else f"{m[3]} dB, {m[4]}") for m in _FILTER.finditer(text)]
    if tries:
        out["filter"] = "; ".join(tries)
        out["fit_s"] = out.get("fit_s", 0.0) + sum(float(m[2]) for m in _FILTER.finditer(text) if m[2])
    elif "post-filter skipped" in text:
        out["filter"] = "skipped"
    return out


def _method_row(
    volume: np.ndarray, ratio: float, params: dict[str, Any], peak: float, memory: bool = False
) -> dict[str, Any]:
    notes = _Notes()
    logger = logging.getLogger("streamcomp")
    level = logger.level
    logger.addHandler(notes)
    logger.setLevel(logging.INFO)
    try:
        run = run_method("wavelet", volume, ratio, method_params=params, memory=memory)
    finally:
        logger.removeHandler(notes)
        logger.setLevel(level)
    mvox = volume.size / 1e6
    return {
        "ratio": volume.nbytes / run.stored_bytes,
        "bpv": 8.0 * run.stored_bytes / volume.size,
        **quality(volume, run.decoded, peak),
        "encode_mvox_s": mvox / run.encode_s,
        "decode_mvox_s": mvox / run.decode_s,
        "chunk_decode_ms": 1e3 * run.chunk_decode_s,
        "encode_peak_mib": run.encode_peak_mib,
        "decode_peak_mib": run.decode_peak_mib,
        **_fit_report(notes.lines),
        **({"fit_phase_s": run.phases["fit"]} if "fit" in run.phases else {}),
    }


def _baseline_row(name: str, volume: np.ndarray, ratio: float, peak: float) -> dict[str, Any]:
    best = baselines.at_ratio(name, volume, ratio).best
    mvox = volume.size / 1e6
    return {
        "ratio": best.ratio,
        "bpv": 8.0 * best.result.stored_bytes / volume.size,
        **quality(volume, best.result.decoded, peak),
        "encode_mvox_s": mvox / best.result.encode_s,
        "decode_mvox_s": mvox / best.result.decode_s,
    }


def _bd(rows: list[dict], test: str, anchor: str) -> dict[str, float | None]:
    def curve(name):
        pts = sorted((r["bpv"], r["psnr"]) for r in rows if r["row"] == name)
        return [p[0] for p in pts], [p[1] for p in pts]

    (ra, pa), (rt, pt) = curve(anchor), curve(test)
    if min(len(ra), len(rt)) < 2:
        return {"bd_rate_pct": None, "bd_psnr_db": None}
    try:
        return {"bd_rate_pct": bd.bd_rate(ra, pa, rt, pt), "bd_psnr_db": bd.bd_psnr(ra, pa, rt, pt)}
    except ValueError:
        return {"bd_rate_pct": None, "bd_psnr_db": bd.bd_psnr(ra, pa, rt, pt) if len(ra) > 1 else None}


def machine_line(m: dict[str, Any]) -> str:
    """The machine of a run in one line, its vector units included (throughput follows them)."""
    return (f"{m.get('cpu_model', '?')} ({m.get('vector_units', 'vector units not recorded')}), "
            f"{m.get('usable_cores', '?')} usable cores, {m.get('ram_gib', '?')} GiB, GPU: {m.get('gpu') or 'none'}; "
            f"load at start {m.get('load_average_at_start')}")


def _earlier_rows(path: str | None) -> dict[tuple[str, str, float], dict[str, Any]]:
    """Baseline rows of an earlier run of this study, by (volume, codec, target)."""
    if not path:
        return {}
    earlier = json.loads(Path(path).read_text())["volumes"]
    return {(v, r["row"], float(r["target"])): r for v, vol in earlier.items() for r in vol["rows"]}


def _start_without(name: str, bundled: bool, folder: Path) -> tuple[str, dict[str, Any]]:
    """(folder, record) of starts trained on every shared volume but ``name``, so that
    no row is measured with a start that saw its own volume (the shipped starts saw them all);
    ``bundled``: on the other volumes' bundled crops, where they have one."""
    others = [VOLUMES[n] for n in VOLUMES if n != name]
    found = [s.bundled_path if bundled else data.require(s.path) for s in others]
    paths = [str(p) for p in found if p is not None]
    record = start_points.train(paths, folder)
    record["volumes"] = [{**v, "source": Path(v["source"]).name} for v in record["volumes"]]
    return str(folder), record


def run_study(
    volumes: list[str], codecs: list[str], quick: bool, bundled: bool, baselines_from: str | None = None,
    reuse: dict[str, str] | None = None,
) -> dict[str, Any]:
    reuse = reuse or {}
    results: dict[str, Any] = {
        "machine": machine(), "volumes": {}, "baselines_from": baselines_from, "reused": reuse,
    }
    earlier = _earlier_rows(baselines_from)
    if baselines_from:
        results["baselines_machine"] = machine_line(json.loads(Path(baselines_from).read_text())["machine"])
    taken = {new: old for old, new in reuse.items()}

    def method_row(name, row, ratio, params, volume, peak, memory=False):
        if row in taken and (name, taken[row], float(ratio)) in earlier:
            return {**earlier[(name, taken[row], float(ratio))], "row": row}
        params = {"start": starts[name], **params}
        return {"row": row, "target": ratio, **_method_row(volume, ratio, params, peak, memory)}

    starts = {}
    for name in volumes:
        spec = VOLUMES[name]
        path = spec.shipped_or_skip() if bundled else data.require(spec.path)
        if path is None:
            continue
        starts[name], record = _start_without(name, bundled, Path(tempfile.mkdtemp()))
        crop = spec.crop("quick") if quick else None
        volume = load(spec, data.fit_crop(crop, np.load(path, mmap_mode="r").shape) if bundled and crop else crop,
                      path)
        peak = peak_of(volume)
        targets = QUICK_TARGETS[name] if quick else spec.targets("full")
        rows: list[dict[str, Any]] = []
        for ratio in targets:
            for row, params in ROWS.items():
                # The default's memory, at the volume's first rate: a second encode and decode.
                memory = row == "learned" and ratio == targets[0]
                rows.append(method_row(name, row, ratio, params, volume, peak, memory))
                print(_line(name, rows[-1]), flush=True)
            for row, old in taken.items():  # earlier rows kept under a name of their own (code since changed)
                if row not in ROWS and (name, old, float(ratio)) in earlier:
                    rows.append({**earlier[(name, old, float(ratio))], "row": row})
            for codec in codecs:
                # An earlier run's row stands for the codec even where this machine lacks it (its
                # machine is recorded with it).
                row = earlier.get((name, codec, float(ratio)))
                if row is None:
                    if baselines.unsupported(codec, volume) or baselines.availability()[codec]:
                        continue
                    row = {"row": codec, "target": ratio, **_baseline_row(codec, volume, ratio, peak)}
                rows.append(row)
                print(_line(name, rows[-1]), flush=True)
        ablation_ratio = QUICK_TARGETS[name][0] if quick else ABLATION_RATIO[name]
        for row, params in ABLATIONS.items():
            rows.append(method_row(name, row, ablation_ratio, params, volume, peak))
            print(_line(name, rows[-1]), flush=True)
        anchors = ["hand-set", "same bytes per voxel", "no post-filter", *codecs, *(r for r in taken if r not in ROWS)]
        bds = {f"learned vs {a}": _bd(rows, "learned", a) for a in anchors}
        results["volumes"][name] = {"shape": list(volume.shape), "dtype": str(volume.dtype), "rows": rows, "bd": bds,
                                    "starts": record}
    return results


def _line(volume: str, r: dict[str, Any]) -> str:
    return (f"{volume:10s} {r['row']:18s} {r['target']:>6}x  ratio {r['ratio']:7.2f}  PSNR {r['psnr']:6.2f}  "
            f"SSIM {r['ssim']:.4f}  enc {r['encode_mvox_s']:6.2f}  dec {r['decode_mvox_s']:6.2f} Mvox/s")


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def decoder_multiplications(planar: bool, filter_channels: int) -> float:
    """Multiplications per voxel a chunk's decode runs: dequantization (one), the inverse CDF 9/7
    lifting (a scaling and four half-steps of one multiplication, three per sample along each
    transformed axis, over the levels: 8 planar, 72/7 volumetric) and, where one is kept, the
    post-filter's three convolutions (1x3x3 kernels on planar EM, 3x3x3 on CT; an upper bound, a
    chunk's flag may leave it out). The context model is a table lookup per coefficient (its
    network runs once per distinct context)."""
    lifting = 2 * 3 * 4 / 3 if planar else 3 * 3 * 8 / 7
    c = filter_channels
    return 1 + lifting + (c + c * c + c) * 9 * (1 if planar else 3)


def report(results: dict[str, Any]) -> str:
    m = results["machine"]
    out = [
        "# The learned context model and post-filter on whole volumes",
        "",
        "`python -m benchmarks.studies.learned_coder`: `streamcomp compress --method wavelet` (learned context model "
        "and post-filter, the default) against the same with budgets split by voxels instead of by each chunk's "
        "bytes at one step common to the array (`allocation=voxels`), without the post-filter "
        "(`filter_channels=0`), the same "
        "coder with its hand-set per-chunk models and no filter (`entropy=context`) and the "
        "baselines at the same target ratios; every stored byte counted, PSNR and SSIM with peak = max - min "
        "of the original; encode is `compress` end to end (\"after the fit\": without its fit phase, which "
        "the fit column times whole, sample coding and judgement included), "
        "decode is a whole plain-zarr read, chunk read the first chunk's, the codec loaded. Throughput is "
        "for the whole machine (streamcomp: these volumes are under 64 MiB, so `compress` runs in-process, "
        "coding chunks on a thread per core; the baselines multi-threaded). Peak MiB: the resident memory "
        "an encode (the fit included) and a whole decode add at their peak, over what the process held before "
        "(`benchmarks.memory.PeakMemory`), measured on a second encode and decode of the default at each "
        "volume's first rate (the timed ones run without it). Decoder mult/voxel: dequantization, the inverse "
        "lifting and the kept post-filter's convolutions, counted from their shapes (the context model is a "
        "table lookup per coefficient).",
        "",
        f"Machine: {machine_line(m)}; {m.get('note', '')}.",
    ]
    if results.get("baselines_from"):
        reused = ", ".join(f"`{old}` as `{new}`" for old, new in (results.get("reused") or {}).items())
        earlier = results.get("baselines_machine") or "the same machine"
        out += ["", f"The baseline rows were taken from an earlier run of this study on the same data, on {earlier} "
                "(`--baselines-from`; their times are that run's)"
                + (f", and these streamcomp rows of that run: {reused} (the coder as it "
                   "was then: the README says what changed since)" if reused else "")
                + "; the other rows were measured again."]
    for name, vol in results["volumes"].items():
        mvox = float(np.prod(vol["shape"])) / 1e6
        out += ["", f"## {name} ({'x'.join(map(str, vol['shape']))} {vol['dtype']})", ""]
        if vol.get("starts"):
            start = vol["starts"]
            trained_on = ", ".join(v["source"] for v in start["volumes"])
            out += [f"Starts (context model, post-filters) trained on {trained_on} "
                    f"({start['steps']} steps, {start['seconds']} s), not on this volume.", ""]
        out += ["",
                "| row | target | ratio | bits/voxel | PSNR | SSIM | encode Mvox/s | after the fit | decode Mvox/s | "
                "chunk read ms | peak MiB encode / decode | decoder mult/voxel | fit s | teacher / student bits/coef | "
                "model, held-out gain | post-filter (held-out) |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in vol["rows"]:
            bits = (f"{r['teacher_bits']:.4f} / {r['student_bits']:.4f}" if "teacher_bits" in r else "-")
            gain = r.get("held_out_gain_db")
            held = "-" if "kept" not in r else "dropped" if not r["kept"] else f"+{gain:.2f} dB" if gain else "kept"
            fit = r.get("fit_phase_s", r.get("fit_s"))
            after = mvox / (mvox / r["encode_mvox_s"] - fit) if fit is not None else None
            memory = ("-" if r.get("encode_peak_mib") is None else
                      f"{r['encode_peak_mib']:.0f} / {_fmt(r.get('decode_peak_mib'), '.0f')}")
            kept = _KEPT.search(r.get("filter", ""))
            mults = (decoder_multiplications(name in PLANAR_VOLUMES, int(kept[1]) if kept else 0)
                     if "chunk_decode_ms" in r else None)  # streamcomp's rows, not the baselines'
            out.append(
                f"| {r['row']} | {r['target']}x | {r['ratio']:.2f} | {r['bpv']:.4f} | {r['psnr']:.2f} | "
                f"{r['ssim']:.4f} | {r['encode_mvox_s']:.2f} | {_fmt(after, '.2f')} | {r['decode_mvox_s']:.2f} | "
                f"{_fmt(r.get('chunk_decode_ms'), '.0f')} | {memory} | {_fmt(mults, '.0f')} | {_fmt(fit, '.1f')} | "
                f"{bits} | {held} | {r.get('filter', '-')} |"
            )
        out += ["", "| learned vs | BD-rate | BD-PSNR |", "|---|---|---|"]
        for k, v in vol["bd"].items():
            out.append(f"| {k.split(' vs ')[1]} | {_fmt(v['bd_rate_pct'], '+.1f')} % | "
                       f"{_fmt(v['bd_psnr_db'], '+.2f')} dB |")
    return "\n".join(out) + "\n"


def render(path: Path) -> None:
    """Re-render ``learned_coder.md`` beside ``path`` from its JSON."""
    path.with_suffix(".md").write_text(report(json.loads(path.read_text())))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small crops, one ratio (output to a temp folder)")
    p.add_argument("--bundled", action="store_true", help="the crops shipped in the repository")
    p.add_argument("--volumes", default="em,ct_head,ct_thorax")
    p.add_argument("--codecs", default="jpegxl,x265", help="baselines (comma-separated; empty for none)")
    p.add_argument("--out", help="output folder (default benchmarks/results/, with --quick a temp folder)")
    p.add_argument("--baselines-from", help="reuse the baseline rows of an earlier learned_coder.json (same data)")
    p.add_argument("--reuse", default="", help="OLD:NEW,... also take that run's streamcomp row OLD as row NEW")
    args = p.parse_args(argv)
    pairs = [item.split(":") for item in args.reuse.split(",") if item]
    if any(len(pair) != 2 for pair in pairs) or (pairs and not args.baselines_from):
        raise SystemExit("--reuse takes OLD:NEW,... row names and needs --baselines-from")
    volumes = [v for v in args.volumes.split(",") if v]
    unknown = [v for v in volumes if v not in ABLATION_RATIO]
    if unknown:
        raise SystemExit(f"unknown volume(s) {unknown}; choose from {sorted(ABLATION_RATIO)}")
    codecs = [c for c in args.codecs.split(",") if c]
    results = run_study(volumes, codecs, args.quick, args.bundled, args.baselines_from, dict(pairs))
    out = Path(args.out) if args.out else (
        Path(tempfile.gettempdir()) / "streamcomp-bench" if args.quick else RESULTS
    )
    write_json(out / "learned_coder.json", results)
    (out / "learned_coder.md").write_text(report(results))
    print(f"wrote {out / 'learned_coder.md'}")


if __name__ == "__main__":
    main()
