"""The command line: the four commands, and one-line errors that leave nothing behind."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT, run_fresh_python

from streamcomp.cli import main
from streamcomp.format.frame import FORMAT_VERSION

FAST_JSON = '{"steps": 10, "batch": 2048}'


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamcomp.cli", *args], capture_output=True, text=True)


def test_the_command_line_and_its_workers_start_without_torch():
    """torch takes over a second to import: the command line, its pipeline and a lossless run
    never need it (a fit, the coordinate methods and scaled reads import it themselves)."""
    proc = run_fresh_python("import sys, streamcomp.cli, streamcomp.pipeline.worker; print('torch' in sys.modules)")
    assert proc.returncode == 0 and proc.stdout.split() == ["False"], proc.stderr


def test_compress_info_decompress_evaluate(save, tmp_path, em, capsys):
    src = save(np.ascontiguousarray(em[:, :64, :64]))
    dst = str(tmp_path / "o.zarr")
    assert main(["compress", src, dst, "--method", "siren", "--ratio", "6", "--params", FAST_JSON, "--quiet"]) == 0
    assert "ratio" in capsys.readouterr().out
    assert main(["info", dst, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["method"] == "siren" and info["codec_format_version"] == FORMAT_VERSION
    assert info["chunks"] == [16, 64, 64] and info["mode"].startswith("lossy, rate target")
    assert main(["decompress", dst, str(tmp_path / "d.npy"), "--quiet"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert np.load(tmp_path / "d.npy").shape == (16, 64, 64)
    assert main(["evaluate", src, dst, "--json", "--quiet"]) == 0
    q = json.loads(capsys.readouterr().out)
    assert abs(q["ratio"] - 6) < 0.3 and q["psnr"] > 10 and 0 < q["ssim"] <= 1


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "does not exist"),
        ("method", "unknown method 'jpeg9'"),
        ("ratio", "ratio must be greater than 1"),
        ("dtype", "dtype complex64 is not supported"),
        ("shape", "expected a volume with 3 or 4 axes"),
        ("impossible", "impossible ratio"),
        ("params", "has no parameter"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(save, tmp_path, em, case, message):
    src = save(np.ascontiguousarray(em[:8, :32, :32]))
    args = {
        "missing": [str(tmp_path / "nope.npy")],
        "method": [src, "--method", "jpeg9"],
        "ratio": [src, "--ratio", "0.5"],
        "dtype": [save(np.zeros((4, 8, 8), np.complex64), "c.npy")],
        "shape": [save(np.zeros((64, 64), np.uint8), "flat.npy")],
        "impossible": [src, "--ratio", "5000"],
        "params": [src, "--params", '{"depth": 3}'],
    }[case]
    dst = tmp_path / "never.zarr"
    proc = run_cli("compress", args[0], str(dst), *args[1:], "--quiet")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamcomp: error:") and message in lines[0], proc.stderr
    assert not os.path.exists(dst)


def test_existing_output_is_not_clobbered(save, tmp_path, em):
    src = save(np.ascontiguousarray(em[:8, :32, :32]))
    dst = tmp_path / "exists.zarr"
    dst.mkdir()
    proc = run_cli("compress", src, str(dst), "--quiet")
    assert proc.returncode == 2 and "--overwrite" in proc.stderr


def test_info_on_a_non_streamcomp_path(tmp_path):
    proc = run_cli("info", str(tmp_path / "nothing.zarr"))
    assert proc.returncode == 2 and "no zarr array" in proc.stderr


def test_job_runs_and_reports(tmp_path, em, save):
    src = save(np.ascontiguousarray(em[:, :64, :64]))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "compress_cremi.py"), "--input", src,
         "--output", str(tmp_path / "job.zarr"), "--ratio", "8", "--method", "siren", "--params", FAST_JSON],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    for word in ("ratio", "PSNR", "SSIM", "time", "output"):
        assert word in proc.stdout
