"""The Ray pipeline end to end on a real local head: job submission, a killed encoder actor, a
killed driver and its rerun. Outputs are read back with plain zarr in a fresh process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr
from helpers import FAST, ROOT, SAMPLE, run_fresh_python
from servers import wait_for

from streamcomp.format.chunk import chunk_is_valid
from streamcomp.format.codec import codec_config_of, method_from_config
from streamcomp.format.store import read_chunk
from streamcomp.pipeline import read_manifest
from streamcomp.plan import chunk_grid

JOB = "jobs/compress_cremi.py"
pytestmark = pytest.mark.slow


def chunk_files(dst: Path) -> list[Path]:
    return [p for p in (dst / "c").rglob("*") if p.is_file() and not p.name.endswith(".partial")]


def assert_every_chunk_valid(dst: Path) -> int:
    array = zarr.open_array(str(dst), mode="r")
    method = method_from_config(codec_config_of(array))
    n = 0
    for item in chunk_grid(tuple(array.shape), tuple(array.chunks)):
        data = read_chunk(array, item.coords)
        assert chunk_is_valid(data, method.method_id, tuple(array.chunks), item.valid_shape), item.coords
        n += 1
    return n


def read_in_fresh_process(dst: Path) -> np.ndarray:
    out = dst.parent / "readback.npy"
    proc = run_fresh_python(f"import zarr, numpy as np; np.save({str(out)!r}, zarr.open_array({str(dst)!r})[...])")
    assert proc.returncode == 0, proc.stderr
    return np.load(out)


BIG_SHAPE = (30, 256, 256)


@pytest.fixture(scope="module")
def em_big(tmp_path_factory) -> str:
    """A real EM volume big enough to kill things mid-run: the bundled 30x256x256 uint8 sample,
    64 chunks of 8x64x64 (the last row of chunks 6 sections deep). A copy: the job starts the demo
    sample itself over (``--overwrite``) instead of resuming."""
    vol = np.load(SAMPLE)
    assert vol.shape == BIG_SHAPE
    path = tmp_path_factory.mktemp("src") / "em_big.npy"
    np.save(path, vol)
    return str(path)


def test_ray_job_submit_cremi_hdf5(ray_head, tmp_path, em):
    src = tmp_path / "cremi_crop.h5"
    with h5py.File(src, "w") as f:  # CREMI's layout
        f.create_dataset("volumes/raw", data=em, chunks=(8, 64, 64))
    dst = tmp_path / "out.zarr"
    job = ray_head.submit(
        [
            JOB,
            "--input",
            str(src),
            "--output",
            str(dst),
            "--ratio",
            "12",
            "--chunks",
            "8,64,64",
            "--method",
            "siren",
            "--params",
            json.dumps(FAST),
        ]
    )
    status = ray_head.wait_job(job)
    logs = ray_head.logs(job)
    assert status == "SUCCEEDED", logs[-3000:]
    for line in ("ratio ", "PSNR ", "SSIM ", "time ", str(dst)):
        assert line in logs
    out = read_in_fresh_process(dst)
    assert out.shape == em.shape and out.dtype == em.dtype
    assert np.mean((out.astype(float) - em) ** 2) < np.var(em.astype(float))  # better than the mean
    manifest = read_manifest(str(dst))
    assert manifest["status"] == "complete" and manifest["run"]["executor"] == "ray"
    assert manifest["run"]["chunks_encoded"] == 8 and abs(manifest["ratio"] - 12) / 12 < 0.05
    assert manifest["run"]["ray_address"] == ray_head.gcs_address


def fault_job_args(src: str, dst, verify_chunks: int) -> list[str]:
    """The job the fault tests interrupt: 64 chunks of the large EM crop, fast siren settings."""
    params = json.dumps({"steps": 40, "batch": 4096})
    return ["--input", src, "--output", str(dst), "--ratio", "12", "--chunks", "8,64,64",
            "--method", "siren", "--params", params, "--verify-chunks", str(verify_chunks)]


def test_killed_encoder_actor_is_restarted_and_job_completes(ray_head, tmp_path, em_big):
    dst = tmp_path / "out.zarr"
    job = ray_head.submit([JOB, *fault_job_args(em_big, dst, verify_chunks=4)])
    wait_for(lambda: (dst / "c").exists() and len(chunk_files(dst)) >= 3, 300, "first chunks written")
    pids = ray_head.alive_actor_pids()
    assert pids, "no encoder actor alive"
    victim = pids[0]
    os.kill(victim, signal.SIGKILL)
    status = ray_head.wait_job(job)
    assert status == "SUCCEEDED", ray_head.logs(job)[-3000:]
    assert assert_every_chunk_valid(dst) == 64
    run = read_manifest(str(dst))["run"]
    assert run["chunks_encoded"] == 64
    assert victim not in ray_head.alive_actor_pids()
    # two live workers besides the victim finished work: Ray restarted the killed actor
    assert len(set(run["worker_pids"]) - {victim}) >= 2, (victim, run["worker_pids"])


def test_killed_driver_rerun_encodes_only_missing_chunks(ray_head, tmp_path, em_big):
    dst = tmp_path / "out.zarr"
    cmd = [sys.executable, JOB, *fault_job_args(em_big, dst, verify_chunks=2), "--ray-address", ray_head.gcs_address]
    driver = subprocess.Popen(cmd, cwd=ROOT, env=ray_head.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (dst / "c").exists() and len(chunk_files(dst)) >= 6, 300, "first chunks written")
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    # the dead driver's actors die with it; wait for them so the count below is final
    wait_for(lambda: not ray_head.alive_actor_pids(), 120, "orphaned actors to exit")
    done = chunk_files(dst)
    assert 6 <= len(done) < 64
    done[0].write_bytes(done[0].read_bytes()[:-7])  # a damaged chunk must be re-encoded, not kept
    assert json.loads((dst.parent / "out.zarr.manifest.json").read_text())["status"] == "running"

    t = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=ray_head.env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = read_manifest(str(dst))["run"]
    assert run["resumed"] and run["chunks_skipped"] == len(done) - 1
    assert run["chunks_repaired"] == 1
    assert run["chunks_encoded"] == 64 - len(done) + 1, run
    assert f"{run['chunks_encoded']} chunks encoded, {run['chunks_skipped']} already done" in proc.stdout
    assert assert_every_chunk_valid(dst) == 64
    out = read_in_fresh_process(dst)
    assert out.shape == BIG_SHAPE
    print(f"rerun {time.monotonic() - t:.1f} s for {run['chunks_encoded']} chunks")


def test_ray_job_writes_auto_shards_one_writer_each(ray_head, tmp_path, em_big):
    dst = tmp_path / "out.zarr"
    job = ray_head.submit([JOB, "--input", em_big, "--output", str(dst), "--lossless", "--chunks", "8,64,64",
                           "--shards", "auto", "--workers", "2"])
    status = ray_head.wait_job(job)
    assert status == "SUCCEEDED", ray_head.logs(job)[-3000:]
    run = read_manifest(str(dst))["run"]
    shards = chunk_files(dst)
    assert run["unit"] == "shard" and run["chunks_encoded"] == len(shards) >= 2  # one shard per worker at least
    assert len(set(run["worker_pids"])) == 2
    out = read_in_fresh_process(dst)
    assert np.array_equal(out, np.load(em_big))
