"""The study's command line and the order of its measurements (see the package docstring)."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks import data
from benchmarks.studies.common import evenly, machine, peak_of, torch_threads, write_json
from benchmarks.studies.unicompress import measure
from benchmarks.studies.unicompress.analysis import analyse
from benchmarks.studies.unicompress.measure import CHUNK, COARSE_PATCH, fit_unicompress, student_at, with_modes
from benchmarks.studies.unicompress.report import plot, write_report
from benchmarks.volumes import VOLUMES

PROG = "python -m benchmarks.studies.unicompress"
# study volume -> (benchmark volume, crop centred rather than at the origin, ratios, quick ratios)
STUDY_VOLUMES = {
    "em": ("em", False, (4, 8, 12, 16, 20), (4, 8)),
    "ct": ("ct_head", True, (64, 128, 256, 512), (16, 64)),
}
BASE_PARAMS = {"modes": "auto"}  # the student and the residual, the best per chunk (the default is residual alone)
QUICK_PARAMS = {"pretrain_steps": 5, "teacher_steps": 20, "student_steps": 10, "finetune_steps": 5, "refine_steps": 5}
BASELINES = ("jpegxl", "x265")


@dataclass
class Study:
    """What one run measures."""

    out: Path
    quick: bool = False
    bundled: bool = False
    volumes: tuple[str, ...] = tuple(STUDY_VOLUMES)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    ratios: dict[str, tuple[float, ...]] = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    siren_chunks: int = 4
    siren_steps: int = 300
    big_chunk: bool = True
    ablations: bool = False
    command: str = PROG


def crop_of(study: Study, vname: str) -> tuple[np.ndarray, str]:
    """The study's crop of volume ``vname`` (of its bundled crop with ``bundled``), and its file."""
    name, centre, _, _ = STUDY_VOLUMES[vname]
    spec = VOLUMES[name]
    path = spec.bundled_path if study.bundled else spec.path
    if path is None:
        raise FileNotFoundError(f"no bundled crop of {name} ({spec.bundled}*.npy) in tests/data or examples/")
    shape = data.shape_of(data.require(path))
    crop = (data.centred_crop if centre else data.corner_crop)(shape, study.shapes[vname])
    return data.load(path, crop), path.name


def _rows(v: dict, label: str, method, vol, study: Study, peak: float, counted: bool, subset: list[int]) -> None:
    v[label] = [student_at(method, vol, r, peak, counted, subset) for r in study.ratios[v["name"]]]
    print(f"[{v['name']}] {label}: {[(p.get('ratio'), p.get('psnr')) for p in v[label]]}", flush=True)


def measure_volume(study: Study, vname: str, res: dict, save) -> object:
    """Every row of one volume (fit, student modes, coarse tokens, teacher, baselines, siren);
    returns the fitted auto-mode method."""
    vol, fname = crop_of(study, vname)
    peak, ratios = peak_of(vol), study.ratios[vname]
    n_chunks = int(np.prod([-(-n // c) for n, c in zip(vol.shape, CHUNK, strict=True)]))
    subset = evenly(n_chunks, study.siren_chunks)
    v = res["volumes"][vname] = {
        "name": vname, "file": fname, "shape": list(vol.shape), "dtype": str(vol.dtype), "peak": peak,
        "raw_bytes": vol.nbytes, "voxels": int(vol.size), "chunks": n_chunks, "siren_chunks": subset,
        "student": [], "siren": [], "baselines": {},
    }  # fmt: skip
    print(f"[{vname}] {vol.shape} {vol.dtype}: fitting unicompress ...", flush=True)
    method, v["fit"] = fit_unicompress(vol, study.params)
    print(f"[{vname}] fit {v['fit']}", flush=True)
    _rows(v, "student", method, vol, study, peak, True, subset)
    save()
    # the same shared state with the INR payload forced (ablation), counted and amortized (a large
    # volume's accounting: the array-level bytes per chunk -> 0), then the residual layer alone
    forced = with_modes(method, "inr")
    _rows(v, "inr_forced", forced, vol, study, peak, True, subset)
    _rows(v, "inr_amortized", forced, vol, study, peak, False, subset)
    _rows(v, "residual_only", with_modes(method, "residual"), vol, study, peak, True, subset)
    save()
    variants = [("teacher", {"network": "teacher", "modes": "inr"})]  # the coding network in the student's place
    if vname == "ct":
        variants.insert(0, ("coarse", {"patch": COARSE_PATCH, "modes": "inr"}))
    for label, extra in variants:
        print(f"[{vname}] fitting the {label} variant {extra} ...", flush=True)
        other, v[f"{label}_fit"] = fit_unicompress(vol, {**study.params, **extra})
        _rows(v, f"{label}_forced", other, vol, study, peak, True, subset)
        _rows(v, f"{label}_amortized", other, vol, study, peak, False, subset)
        save()
    for name in BASELINES:
        v["baselines"][name] = [measure.baseline_at(name, vol, r, peak) for r in ratios]
        print(f"[{vname}] {name}: {[(p.get('ratio'), p.get('psnr'), p.get('error')) for p in v['baselines'][name]]}")
        save()
    v["siren"] = [measure.siren_at(vol, r, peak, subset, study.siren_steps) for r in ratios]
    print(f"[{vname}] siren: {[(p.get('ratio'), p.get('psnr')) for p in v['siren']]}", flush=True)
    save()
    return method


def run_ablations(study: Study) -> list[dict]:
    """The paper's ablations on the EM crop at 8x: prior modalities and KD terms, one full shared
    fit each, scored with the student forced (``modes=inr``) so every chunk carries its
    prediction, shared state counted; ``default`` is the reference fit."""
    vol, _ = crop_of(study, "em")
    peak = peak_of(vol)
    rows: list[dict] = []
    variants = [("default", {})] + [("prior=" + p, {"prior": p}) for p in ("raw", "low,raw", "high,raw")]
    variants += [(f"{k}=0", {k: 0.0}) for k in ("kd_code", "kd_logits", "kd_out")]
    for name, extra in variants:
        try:
            m, fit = fit_unicompress(vol, {**study.params, **extra})
            rec = student_at(with_modes(m, "inr"), vol, 8, peak, True, [])
            scores = {k: rec.get(k) for k in ("psnr", "ssim", "ratio")}
            rows.append({"name": name, "params": extra, "fit_s": fit["fit_s"], **scores})
        except Exception as exc:
            rows.append({"name": name, "params": extra, "error": f"{type(exc).__name__}: {exc}"})
        print(f"[ablation] {rows[-1]}", flush=True)
    return rows


def _finish(res: dict, out: Path) -> None:
    res["analysis"] = analyse(res)
    write_json(out / "results.json", res)
    plot(res, out)
    write_report(res, out)


def run_study(study: Study) -> dict:
    """Measure everything ``study`` asks for; write results.json, rd.png and REPORT.md."""
    study.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    threads = torch_threads(1)
    res: dict = {
        "quick": study.quick, "command": study.command, "accounting": "zarr-metadata",
        "params_override": study.params, "siren_steps": study.siren_steps, "chunk": list(CHUNK),
        "machine": machine(torch_threads=threads), "volumes": {}, "skipped": [], "wall_s": 0.0,
        "torch_threads": threads,
    }  # fmt: skip

    def save() -> None:
        res["wall_s"] = time.perf_counter() - t_start
        write_json(study.out / "results.json", res)

    for vname in study.volumes:
        try:
            method = measure_volume(study, vname, res, save)
        except FileNotFoundError as exc:
            res["skipped"].append(f"{vname}: {exc}")
            continue
        if vname == "em" and study.big_chunk:
            try:
                em_stack = crop_of(Study(study.out, bundled=study.bundled, shapes={"em": (64, 256, 256)}), "em")[0]
                res["big_chunk"] = measure.decode_big_chunk(method, em_stack, 8.0)
            except Exception as exc:
                res["big_chunk"] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"[em] big chunk: {res['big_chunk']}", flush=True)
            save()
    if study.ablations:
        res["ablations"] = run_ablations(study)
    else:
        res["skipped"].append(
            "Ablations (prior modalities, KD terms): not run (each needs a full shared fit; "
            "use --ablations). The default (prior=high,low,raw, all KD=1) is the reference row."
        )
    save()
    _finish(res, study.out)
    print(f"done in {res['wall_s']:.0f} s -> {study.out}", flush=True)
    return res


def add_ablations(study: Study) -> dict:
    """The ablations added to the ``results.json`` already in ``study.out``."""
    t_start = time.perf_counter()
    torch_threads(1)
    res = json.loads((study.out / "results.json").read_text())
    res["skipped"] = [s for s in res["skipped"] if not s.startswith("Ablations")]
    res["ablations"] = run_ablations(study)
    res["ablations_wall_s"] = time.perf_counter() - t_start
    _finish(res, study.out)
    print(f"ablations added in {res['ablations_wall_s']:.0f} s -> {study.out}", flush=True)
    return res


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(s) for s in text.split(","))


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog=PROG, description="UniCompress: shared model once per volume, student per chunk")
    ap.add_argument("--quick", action="store_true", help="tiny crops, short fits: checks that everything runs")
    ap.add_argument("--bundled", action="store_true", help="crop the volumes shipped in tests/data and examples/")
    ap.add_argument("--out", help="output folder (default benchmarks/results/unicompress; --quick: a temp folder)")
    ap.add_argument("--volumes", nargs="+", choices=sorted(STUDY_VOLUMES), default=list(STUDY_VOLUMES))
    ap.add_argument("--em-shape", type=_shape, help="EM crop (default 16,256,256; --quick 16,128,128)")
    ap.add_argument("--ct-shape", type=_shape, help="CT crop, centred (default 32,256,256; --quick 16,128,128)")
    ap.add_argument("--em-ratios", type=float, nargs="+", help="EM targets (default 4 8 12 16 20; --quick 4 8)")
    ap.add_argument("--ct-ratios", type=float, nargs="+", help="CT targets (default 64 128 256 512; --quick 16 64)")
    ap.add_argument("--siren-chunks", type=int, default=4)
    ap.add_argument("--siren-steps", type=int, help="default 300; --quick 20")
    ap.add_argument("--ablations", action="store_true")
    ap.add_argument(
        "--ablations-only", action="store_true", help="add the ablations to the results.json already in --out"
    )
    ap.add_argument("--report-only", action="store_true", help="re-render REPORT.md and rd.png from --out")
    ap.add_argument("--no-big-chunk", action="store_true")
    return ap.parse_args(argv)


def study_from_args(args: argparse.Namespace, argv: list[str] | None) -> Study:
    q = args.quick
    default_shape = {"em": (16, 128, 128) if q else (16, 256, 256), "ct": (16, 128, 128) if q else (32, 256, 256)}
    given_shape = {"em": args.em_shape, "ct": args.ct_shape}
    given_ratios = {"em": args.em_ratios, "ct": args.ct_ratios}
    return Study(
        out=data.out_dir("unicompress", q, args.out),
        quick=q,
        bundled=args.bundled,
        volumes=tuple(args.volumes),
        shapes={k: given_shape[k] or default_shape[k] for k in STUDY_VOLUMES},
        ratios={k: tuple(given_ratios[k] or spec[3 if q else 2]) for k, spec in STUDY_VOLUMES.items()},
        params={**BASE_PARAMS, **(QUICK_PARAMS if q else {})},
        siren_chunks=args.siren_chunks,
        siren_steps=args.siren_steps or (20 if q else 300),
        big_chunk=not args.no_big_chunk,
        ablations=args.ablations,
        command=" ".join([PROG, *(argv or [])]),
    )


def main(argv: list[str] | None = None) -> dict:
    import sys

    argv = sys.argv[1:] if argv is None else argv
    args = _parse(argv)
    study = study_from_args(args, argv)
    if args.report_only:
        res = json.loads((study.out / "results.json").read_text())
        plot(res, study.out)
        write_report(res, study.out)
        return res
    if args.ablations_only:
        return add_ablations(study)
    return run_study(study)
