"""Turn measured points into RD curves and Bjøntegaard deltas against the anchor codecs.

Kept apart from the report's rendering so the numbers in ``results.json`` and in ``REPORT.md`` come
from one computation. A codec's curve is its successful lossy points (PSNR finite), as (bits per
voxel, PSNR); BD figures need two curves with at least two points each that overlap, otherwise
the row carries the reason instead of a number.
"""

from __future__ import annotations

from typing import Any

from benchmarks.bd import BDError, bd_psnr, bd_rate, fit_degree


def curve(entry: dict[str, Any]) -> tuple[list[float], list[float]]:
    """(bpv, PSNR) of an entry's lossy points that succeeded, sorted by rate."""
    pts = [
        (p["bpv"], p["psnr_db"])
        for p in entry.get("points", [])
        if not p.get("error") and p.get("psnr_db") is not None and p.get("bpv")
    ]
    # Targets a codec cannot reach all land on the same knob end: count that point once.
    pts = sorted(set(pts))
    return [p[0] for p in pts], [p[1] for p in pts]


def bd_rows(entries: list[dict[str, Any]], anchors: tuple[str, ...]) -> list[dict[str, Any]]:
    """BD-rate and BD-PSNR of every lossy codec/method of one volume against each anchor."""
    by_name = {e["codec"]: e for e in entries}
    rows: list[dict[str, Any]] = []
    for anchor in anchors:
        ref = by_name.get(anchor)
        ref_curve = curve(ref) if ref else ([], [])
        for e in entries:
            if e["codec"] == anchor or e.get("lossless"):
                continue
            test_curve = curve(e)
            if not test_curve[0]:
                continue
            row: dict[str, Any] = {
                "codec": e["codec"],
                "kind": e["kind"],
                "anchor": anchor,
                "points": len(test_curve[0]),
                "anchor_points": len(ref_curve[0]),
                "fit_degree": min(fit_degree(len(test_curve[0])), fit_degree(max(len(ref_curve[0]), 1))),
                "bd_rate_pct": None,
                "bd_psnr_db": None,
                "note": None,
            }
            if ref is None or not ref_curve[0]:
                row["note"] = f"anchor {anchor} has no points on this volume"
            else:
                notes = []
                try:
                    row["bd_rate_pct"] = bd_rate(ref_curve[0], ref_curve[1], *test_curve)
                except BDError as exc:
                    notes.append(f"BD-rate: {exc}")
                try:
                    row["bd_psnr_db"] = bd_psnr(ref_curve[0], ref_curve[1], *test_curve)
                except BDError as exc:
                    notes.append(f"BD-PSNR: {exc}")
                row["note"] = "; ".join(notes) or None
            rows.append(row)
    return rows
