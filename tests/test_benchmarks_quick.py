"""The benchmark suite: Bjøntegaard deltas on curves with known answers, the data resolver, and
tiny end-to-end runs of the rate-distortion harness and of the studies.

The end-to-end runs take the small crops shipped in the repository (``tests/data/``, and the EM
sample in ``examples/``), so they need no ``../shared/data``; a volume whose bundled crop is absent
is left out, never skipped silently as a whole. They check structure only (files, one entry per
registered codec and method per volume, a reason wherever something did not run, finite numbers)
and that the studies' numbers come from the shipped paths, never timings or who wins.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import baselines, data, project_methods, run  # noqa: E402
from benchmarks.bd import BDError, bd_psnr, bd_rate  # noqa: E402
from benchmarks.volumes import VOLUMES  # noqa: E402

# Curves given as exact cubics, so the cubic fit is exact and the deltas are known in closed form.
PSNR = np.array([28.0, 31.0, 34.0, 37.0, 40.0])


def _log_rate(psnr: np.ndarray) -> np.ndarray:
    return -4.0 + 0.09 * psnr + 0.001 * (psnr - 34.0) ** 2 - 0.0001 * (psnr - 34.0) ** 3


def test_bd_rate_constant_rate_factor() -> None:
    rate_a = np.exp(_log_rate(PSNR))
    rate_b = 0.8 * rate_a  # same quality at 80 % of the bits, everywhere
    assert bd_rate(rate_a, PSNR, rate_b, PSNR) == pytest.approx(-20.0, abs=1e-6)
    assert bd_rate(rate_b, PSNR, rate_a, PSNR) == pytest.approx(25.0, abs=1e-6)
    assert bd_rate(rate_a, PSNR, rate_a, PSNR) == pytest.approx(0.0, abs=1e-9)


def test_bd_psnr_constant_offset() -> None:
    rates = np.array([0.25, 0.5, 1.0, 2.0, 4.0])
    x = np.log(rates)
    psnr_a = 35.0 + 4.0 * x - 0.2 * x**2 + 0.05 * x**3
    assert bd_psnr(rates, psnr_a, rates, psnr_a + 1.5) == pytest.approx(1.5, abs=1e-9)
    # PSNR linear in log-rate, rate scaled by 0.8: the gain is slope * ln(1 / 0.8).
    psnr_lin = 30.0 + 6.0 * np.log2(rates)
    gain = bd_psnr(rates, psnr_lin, 0.8 * rates, psnr_lin)
    assert gain == pytest.approx(6.0 * math.log2(1 / 0.8), abs=1e-9)


def test_bd_two_points_and_failures() -> None:
    # Quick mode has two points per curve: a straight-line fit, still exact for a constant factor.
    assert bd_rate([1.0, 2.0], [30.0, 33.0], [0.5, 1.0], [30.0, 33.0]) == pytest.approx(-50.0)
    with pytest.raises(BDError):
        bd_rate([1.0, 2.0], [30.0, 33.0], [1.0, 2.0], [40.0, 43.0])  # no PSNR overlap
    with pytest.raises(BDError):
        bd_psnr([1.0], [30.0], [1.0, 2.0], [30.0, 33.0])  # one point
    with pytest.raises(BDError):
        bd_rate([1.0, 2.0], [30.0, math.inf], [1.0, 2.0], [30.0, 33.0])  # inf dropped: one left


def _all_finite(obj: Any) -> bool:
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_all_finite(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_all_finite(v) for v in obj)
    return True


def test_crashed_worker_keeps_points_and_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_worker(jobs: list[dict[str, Any]], timeout_s: float) -> tuple[list[dict[str, Any]], str | None]:
        calls.append([j["volume"] for j in jobs])
        if len(calls) == 1:  # first worker: finishes "a", dies half-way through "b"
            return [
                {"points": [{"ratio": 2.0}], "error": None, "done": True},
                {"points": [{"ratio": 3.0}], "error": None, "done": False},
            ], "worker exited with -11: "
        return [{"points": [{"ratio": 4.0}], "error": None, "done": True} for _ in jobs], None

    monkeypatch.setattr(run, "_worker", fake_worker)
    states = run.run_jobs([{"volume": v} for v in "abc"], timeout_s=10)
    assert calls == [["a", "b", "c"], ["c"]]
    assert [len(st["points"]) for st in states] == [1, 1, 1]
    assert states[0]["error"] is None and states[2]["error"] is None
    assert "-11" in states[1]["error"] and states[1]["points"] == [{"ratio": 3.0}]


TINY_CROPS = {
    "em": ((0, 4), (192, 256), (192, 256)),
    "ct_head": ((52, 60), (64, 128), (64, 128)),
    "mri4d": ((0, 2), (18, 22), (16, 48), (16, 48)),
}
TINY_TARGETS = {"em": (4.0,), "ct_head": (16.0,), "mri4d": (8.0,)}
# The volumes with a crop in the repository (the EM sample always; CT and MRI from tests/data).
BUNDLED = [v for v in TINY_CROPS if VOLUMES[v].bundled_path is not None]


def test_data_resolver(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(data.ENV, raising=False)
    assert data.data_dir() == ROOT.parent / "shared" / "data"
    monkeypatch.setenv(data.ENV, str(tmp_path))
    assert data.data_dir() == tmp_path and VOLUMES["em"].path == tmp_path / VOLUMES["em"].file
    assert not VOLUMES["em"].path.is_file()
    with pytest.raises(SystemExit, match=data.ENV):
        data.load(VOLUMES["em"].path)
    assert VOLUMES["em"].bundled_path == ROOT / "examples" / "em_isbi2012_crop_30x256x256_u8.npy"
    assert data.fit_crop(((48, 64), (64, 128)), (16, 64)) == ((0, 16), (0, 64))
    assert data.fit_crop(((2, 6), (10, 20)), (30, 15)) == ((2, 6), (5, 15))
    assert data.centred_crop((30, 256), (16, 300)) == ((7, 23), (0, 256))
    # quick runs never write over the committed reports
    assert data.out_dir("unicompress", quick=False) == ROOT / "benchmarks" / "results" / "unicompress"
    assert not data.out_dir("unicompress", quick=True).is_relative_to(ROOT)
    assert data.out_dir("x", quick=True, given=tmp_path) == tmp_path


def test_bundled_config_reads_the_repository_crops() -> None:
    cfg = run.build_config("quick", bundled=True)
    assert cfg.volumes == BUNDLED
    for name in cfg.volumes:
        assert Path(cfg.files[name]) == VOLUMES[name].bundled_path
        shape = data.shape_of(cfg.files[name])
        assert all(0 <= a < b <= n for (a, b), n in zip(cfg.crops[name], shape, strict=True)), name
    lacking = [n for n, v in VOLUMES.items() if v.bundled_path is None]
    if lacking:
        with pytest.raises(SystemExit, match="no bundled crop"):
            run.build_config("quick", volumes=lacking[:1], bundled=True)


def test_quick_run_structure(tmp_path: Path) -> None:
    cfg = run.build_config(
        "quick",
        volumes=BUNDLED,
        crops=TINY_CROPS,
        targets=TINY_TARGETS,
        inr_steps=10,
        max_evals=4,
        worker_timeout_s=300,
        bundled=True,
    )
    results = run.run_benchmarks(tmp_path, cfg, log=lambda _msg: None)

    assert (tmp_path / "results.json").is_file()
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["entries"] == results["entries"]
    report = (tmp_path / "REPORT.md").read_text()
    for heading in ("## Machine", "## Not run", "Bjøntegaard"):
        assert heading in report
    for v in BUNDLED:
        assert (tmp_path / f"rd_{v}.png").stat().st_size > 1000
        assert f"rd_{v}.png" in report

    machine = on_disk["machine"]
    assert machine["cpu_model"] and machine["logical_cores"] and "gpu" in machine

    avail = baselines.availability()
    methods, methods_reason = project_methods.method_names()
    api_reason = None if methods_reason else project_methods.api_reason()
    expected = set(baselines.REGISTRY) | (set(methods) if methods else {"streamcomp"})
    for v in BUNDLED:
        entries = [e for e in on_disk["entries"] if e["volume"] == v]
        names = [e["codec"] for e in entries]
        assert sorted(names) == sorted(expected), v
        for e in entries:
            assert e["status"] in {"ok", "unavailable", "unsupported", "error"}
            if e["status"] != "ok":
                assert isinstance(e["reason"], str) and e["reason"].strip(), e
                continue
            good = [p for p in e["points"] if not p.get("error")]
            assert good, e
            for p in good:
                assert _all_finite(p), p
                assert p["ratio"] > 0 and p["bpv"] > 0 and p["stored_bytes"] > 0
                assert p["encode_s"] >= 0 and p["decode_s"] >= 0
                assert (p["psnr_db"] is None) == p["lossless"]
                assert p["ssim"] is not None and -1.0 <= p["ssim"] <= 1.0 + 1e-9
                if e["kind"] == "method":
                    assert p["chunk_decode_ms"] > 0
        # Every baseline this machine can run must have produced points, not only reasons. A method
        # may refuse a tiny crop (e.g. an impossible ratio for its fixed overhead), with its reason,
        # but the method path itself must work for at least one method on each volume it can take.
        for e in entries:
            if e["kind"] == "baseline" and avail[e["codec"]] is None and e["status"] != "unsupported":
                assert e["status"] == "ok", e
        runnable = [e for e in entries if e["kind"] == "method" and e["status"] != "unsupported"]
        if api_reason is None and runnable:
            assert any(e["status"] == "ok" for e in runnable), runnable
        for row in on_disk["bd"][v]:
            assert row["anchor"] in baselines.ANCHORS
            for key in ("bd_rate_pct", "bd_psnr_db"):
                assert row[key] is None or math.isfinite(row[key])
            if row["bd_rate_pct"] is None or row["bd_psnr_db"] is None:
                assert row["note"]
    # Unavailable codecs are reported with their reason, never dropped.
    for name, reason in avail.items():
        assert on_disk["codecs"][name]["available"] == (reason is None)
        assert on_disk["codecs"][name]["reason"] == reason


def test_standard_mode_is_the_default_and_takes_crops_of_a_few_chunks() -> None:
    std = run.build_config()
    assert std.mode == "standard" and std.volumes == ["em", "ct_head", "mri4d"] and std.max_steps == 200
    for name, crop in std.crops.items():
        assert crop is not None and np.prod([b - a for a, b in crop]) <= 2**19, name
        assert std.targets[name] == VOLUMES[name].full_targets
    full = run.build_config("full")
    assert full.max_steps is None and all(c is None for c in full.crops.values()) and "ct_thorax" in full.volumes
    with pytest.raises(SystemExit, match="unknown mode"):
        run.build_config("huge")


def test_unicompress_study_quick(tmp_path: Path) -> None:
    """The study's quick mode on bundled crops; its bytes are the shipped planner's and store's."""
    from benchmarks.studies.unicompress import cli
    from benchmarks.studies.unicompress.measure import CHUNK, plan_for, student_at, with_modes

    volumes = ["em"] + (["ct"] if VOLUMES["ct_head"].bundled_path else [])
    argv = ["--quick", "--bundled", "--volumes", *volumes, "--em-shape", "16,64,128", "--em-ratios", "4", "64",
            "--ct-ratios", "4", "--siren-chunks", "1", "--siren-steps", "5", "--no-big-chunk",
            "--out", str(tmp_path)]  # fmt: skip
    res = cli.main(argv)
    for name in ("results.json", "REPORT.md", "rd.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert json.loads((tmp_path / "results.json").read_text())["volumes"].keys() == set(volumes)
    report = (tmp_path / "REPORT.md").read_text()
    assert "## Findings" in report and "streamcomp.plan.assign_budgets" in report
    em = res["volumes"]["em"]
    assert em["shape"] == [16, 64, 128] and em["chunks"] == 2 and em["fit"]["samples"] == 2
    ok, impossible = em["student"]
    # counted rows: every framed chunk plus the array's zarr metadata with the shared state inside
    assert ok["possible"] and ok["stored_bytes"] == ok["chunk_bytes"] + ok["meta_bytes"]
    assert ok["meta_bytes"] > em["fit"]["shared_stored_bytes"] > 0
    assert ok["ratio"] >= 4 * 0.99 and math.isfinite(ok["psnr"]) and 0 < ok["ssim"] <= 1
    assert impossible["possible"] is False and "impossible ratio 64" in impossible["reason"]
    amortized = em["inr_amortized"][0]
    assert amortized["meta_bytes"] == 0 and amortized["inr_chunks"] == amortized["chunks"] == 2
    assert em["residual_only"][0]["inr_chunks"] == 0 and em["siren"][0]["chunks"] == [0]
    assert {"jpegxl", "x265"} <= set(em["baselines"]) and "psnr" in em["baselines"]["jpegxl"][0]
    assert "vs_siren" in res["analysis"]["em"]

    # The residual layer alone has no fit: the study's bytes must be what streamcomp.api.compress
    # stores for the same crop, chunks and ratio (up to the rate the array's metadata records).
    from streamcomp.api import compress
    from streamcomp.methods import build_method

    vol = data.load(VOLUMES["em"].bundled_path, ((0, 16), (0, 64), (0, 128)))
    method = build_method("unicompress", {"modes": "residual"})
    method.load_shared_state(b"")
    rec = student_at(method, vol, 4.0, 255.0, True, [])
    np.save(tmp_path / "crop.npy", vol)
    api = compress(str(tmp_path / "crop.npy"), str(tmp_path / "crop.zarr"), method="unicompress", ratio=4.0,
                   chunks=CHUNK, method_params={"modes": "residual"}, progress=False, executor="local")  # fmt: skip
    assert 0 <= api.stored_bytes - rec["stored_bytes"] <= 32, (api.stored_bytes, rec["stored_bytes"])
    assert [it.kind for it in plan_for(vol, method).items] == ["data", "data"]
    assert with_modes(method, "residual").params.modes == "residual" and method.params.modes == "residual"


def test_seed_methods_study_quick(tmp_path: Path) -> None:
    from benchmarks.studies import seed_methods

    seed_methods.main(["--quick", "--bundled", "--steps", "5", "--planes-steps", "5", "--variants", "2",
                       "--out", str(tmp_path)])  # fmt: skip
    doc = json.loads((tmp_path / "seed_methods.json").read_text())
    assert doc["runs"] and all(len(rows) == 2 for rows in doc["runs"].values())
    for rows in doc["runs"].values():
        for r in rows:
            assert r["ratio"] > 1 and math.isfinite(r["psnr"]) and r["bytes"] > 0
    assert (tmp_path / "seed_methods.md").is_file() and (tmp_path / "seed_methods.png").is_file()


@pytest.mark.slow
def test_scale_study_on_loopback_s3_loses_nothing_to_a_killed_worker_or_driver(tmp_path: Path) -> None:
    from benchmarks.studies import scale

    scale.main(["--sizes-mib", "16", "--kill-mib", "32", "--bundled", "--workers", "2", "--out", str(tmp_path)])
    doc = json.loads((tmp_path / "scale.json").read_text())
    (row,) = doc["sweep"]
    assert row["objects"] == row["shards"] + 1 and row["ratio"] > 30  # shards + zarr.json
    runs = {r["run"]: r for r in doc["faults"]}
    assert len(runs) == 3 and all(r["lost"] == 0 and r["identical"] for r in runs.values())
    assert runs["driver SIGKILLed, rerun --resume"]["skipped"] >= 2
    assert "| size_mib |" in (tmp_path / "scale.md").read_text()


def test_allocation_study_on_the_bundled_ct_crop(tmp_path: Path) -> None:
    from benchmarks.studies import allocation

    allocation.main(["--bundled", "--volumes", "ct_head", "--chunks", "8,32,32", "--ratios", "16",
                     "--out", str(tmp_path)])  # fmt: skip
    rows = json.loads((tmp_path / "allocation.json").read_text())["volumes"]["ct_head"]["rows"]
    splits = {r["split"]: r for r in rows}
    assert list(splits) == ["voxels", "estimate", "oracle, one step", "oracle, one slope"]
    # Chunks unlike in detail: the estimated split beats the same bytes per voxel, in no more bytes
    # (by 0.89 dB; 1.05 before the compiled coder, whose bytes let the voxels split fill more).
    assert splits["estimate"]["psnr"] > splits["voxels"]["psnr"] + 0.75
    assert splits["estimate"]["bytes"] <= 1.02 * splits["voxels"]["bytes"]
    assert splits["oracle, one slope"]["bytes"] <= splits["estimate"]["bytes"]
    assert (tmp_path / "allocation.md").read_text().count("| 16.0x |") == 4


def test_half_scale_study_on_the_bundled_ct_crop(tmp_path: Path) -> None:
    from benchmarks.studies import half_scale

    half_scale.main(["--bundled", "--volumes", "ct_head", "--ratios", "16", "--steps", "20", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "half_scale.json").read_text())["volumes"]["ct_head"][1:]
    assert [r["weight"] for r in rows] == [0.0, 4.0] and all(abs(r["ratio"] - 16) < 1 for r in rows)
    assert all(set(r["scaled"]) == {"1/2"} and r["scaled"]["1/2"]["speedup"] > 0 for r in rows)
    assert "| half_scale_weight |" in (tmp_path / "half_scale.md").read_text()
