"""The study's findings from its measured points: unicompress against the anchor codec (PSNR at
the same bits per voxel, Bjøntegaard deltas from :mod:`benchmarks.bd`), the student against siren
on the same chunks, the teacher against its student, and encode speed."""

from __future__ import annotations

import math

import numpy as np

# (volume, anchor codec, the target whose comparison is singled out)
ANCHORS = (("em", "jpegxl", 8), ("ct", "x265", None))
# head-to-head against siren: (analysis key, the rows of the student that are compared)
VS_SIREN = (
    ("vs_siren", "inr_forced"),
    ("vs_siren_amortized", "inr_amortized"),
    ("vs_siren_coarse", "coarse_forced"),
    ("vs_siren_coarse_amortized", "coarse_amortized"),
)


def _interp_psnr(curve: list[dict], bpv: float) -> float | None:
    pts = sorted((p["bpv"], p["psnr"]) for p in curve if "bpv" in p and math.isfinite(p.get("psnr", math.nan)))
    if len(pts) < 2 or not pts[0][0] <= bpv <= pts[-1][0]:
        return None
    x = np.log([p[0] for p in pts])
    return float(np.interp(math.log(bpv), x, [p[1] for p in pts]))


def _vs_anchor(v: dict, anchor: str, at: float | None) -> dict:
    """unicompress (auto) against ``anchor``: PSNR at the same bpv per target, BD-PSNR, BD-rate."""
    from benchmarks.bd import BDError, bd_psnr, bd_rate

    stu = [p for p in v.get("student", []) if p.get("possible")]
    base = [p for p in v.get("baselines", {}).get(anchor, []) if "bpv" in p]
    a: dict = {"anchor": anchor, "points": []}
    for p in stu:
        ref = _interp_psnr(base, p["bpv"])
        a["points"].append(
            {
                "target": p["target"],
                "student_psnr": p["psnr"],
                "anchor_psnr_at_same_bpv": ref,
                "delta_db": None if ref is None else p["psnr"] - ref,
            }
        )
    for key, fn in (("bd_psnr_db", bd_psnr), ("bd_rate_pct", bd_rate)):
        try:
            a[key] = fn(
                [p["bpv"] for p in base], [p["psnr"] for p in base], [p["bpv"] for p in stu], [p["psnr"] for p in stu]
            )
        except (BDError, ValueError) as exc:
            a[key + "_error"] = str(exc)
    if at is not None:
        a["at_target"] = next((q for q in a["points"] if q["target"] == at), None)
    return a


def _vs_siren(v: dict, rows: str) -> list[dict]:
    """The student rows ``rows`` against siren at each target both have, on siren's chunks.

    Uses rows where every chunk carries the student's prediction (modes=inr): in auto mode the
    encoder may code a chunk by its residual alone, which is not the student.
    """
    sir = {p["target"]: p for p in v.get("siren", []) if "psnr" in p}
    return [
        {
            "target": p["target"],
            "student_subset_psnr": p["siren_subset"]["psnr"],
            "siren_psnr": sir[p["target"]]["psnr"],
            "delta_db": p["siren_subset"]["psnr"] - sir[p["target"]]["psnr"],
            "student_ratio_whole": p["ratio"],
            "siren_ratio_subset": sir[p["target"]]["ratio"],
            "equal_ratio": abs(p["ratio"] / p["target"] - 1) <= 0.1,
        }
        for p in v.get(rows, [])
        if p.get("possible") and p["target"] in sir
    ]


def _teacher_vs_student(v: dict) -> list[dict]:
    """The paper's distillation claim (the student keeps the teacher's quality with fewer
    parameters), at equal targets, both forced to code with their network."""
    stu = {p["target"]: p for p in v.get("inr_forced", []) if p.get("possible")}
    stu_am = {p["target"]: p for p in v.get("inr_amortized", []) if p.get("possible")}
    return [
        {
            "target": t["target"],
            "accounting": accounting,
            "teacher_psnr": t["psnr"],
            "student_psnr": rows[t["target"]]["psnr"],
            "teacher_ratio": t["ratio"],
            "student_ratio": rows[t["target"]]["ratio"],
            "teacher_encode_vox_s": t["encode_vox_s"],
            "student_encode_vox_s": rows[t["target"]]["encode_vox_s"],
        }
        for accounting, key, rows in (("counted", "teacher_forced", stu), ("amortized", "teacher_amortized", stu_am))
        for t in v.get(key, [])
        if t.get("possible") and t["target"] in rows
    ]


def _speed(v: dict) -> dict:
    """Encode throughput of the forced student over siren's, without and with the one-off fit."""
    enc_s = [p["encode_vox_s"] for p in v.get("inr_forced", []) if p.get("possible")]
    enc_r = [p["encode_vox_s"] for p in v.get("siren", []) if "encode_vox_s" in p]
    if not (enc_s and enc_r):
        return {}
    tot_stu = v["voxels"] / np.median(enc_s) + v["fit"]["fit_s"]
    return {
        "encode_speed_student_over_siren": float(np.median(enc_s) / np.median(enc_r)),
        "encode_speed_incl_fit_over_siren_whole_crop": float((v["voxels"] / np.median(enc_r)) / tot_stu),
    }


def analyse(res: dict) -> dict:
    """Per volume: :func:`_vs_anchor`, :func:`_vs_siren` (four accountings), the teacher, speed."""
    out: dict = {}
    for vname, anchor, at in ANCHORS:
        v = res["volumes"].get(vname)
        if not v:
            continue
        a = _vs_anchor(v, anchor, at)
        for key, rows in VS_SIREN:
            a[key] = _vs_siren(v, rows)
        a["teacher_vs_student"] = _teacher_vs_student(v)
        a.update(_speed(v))
        out[vname] = a
    return out
