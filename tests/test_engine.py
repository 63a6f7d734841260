"""The encode phase on Ray Data (``--engine data``): the same tasks as the pool's, the same stored
bytes, the same resume; and a clear error for an engine that does not exist. Lossless runs, so
"the same" means equal bytes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr
from helpers import ROOT, SAMPLE, command_line, plan_in_process

from streamcomp.api import compress
from streamcomp.errors import InputError
from streamcomp.pipeline import read_manifest, start_ray
from streamcomp.pipeline.tasks import EncodeTasks


def stored(dst) -> dict[str, bytes]:
    """Every chunk or shard object of a local output, by its key (metadata documents left out)."""
    return {str(p.relative_to(dst)): p.read_bytes() for p in sorted(dst.rglob("*"))
            if p.is_file() and p.name != "zarr.json"}


@pytest.fixture(scope="module")
def em_with_fill(tmp_path_factory) -> tuple[str, np.ndarray]:
    """The bundled real EM sample with its first 8 sections zeroed: 16 of its 64 chunks of 8x64x64
    are all fill value, so they have a task number but no task."""
    vol = np.load(SAMPLE)
    vol[:8] = 0
    path = tmp_path_factory.mktemp("src") / "em_fill.npy"
    np.save(path, vol)
    return str(path), vol


@pytest.fixture(scope="module")
def ray_two_cpus():
    """One embedded Ray with 2 CPUs for the module (compress() leaves a Ray it did not start running)."""
    import ray

    assert start_ray(None, 2)
    yield
    ray.shutdown()


def test_task_numbers_name_the_same_tasks_the_pool_walks(em_with_fill):
    _, vol = em_with_fill
    plan = plan_in_process(vol, (8, 64, 64))
    for shards in (None, (8, 128, 128)):
        array = zarr.create_array(zarr.storage.MemoryStore(), shape=vol.shape, chunks=(8, 64, 64), shards=shards,
                                  dtype=vol.dtype)
        present = {"c/1/0/0"}
        tasks = EncodeTasks(plan, shards, present)
        walked = list(tasks.in_order(array))
        numbered = [t for n in range(tasks.rows) if (t := tasks.task(n, array)) is not None]
        assert walked == numbered
        assert len(walked) == (48 if shards is None else 12)  # the 16 fill chunks (4 shards) have no task
        assert [t.index for t in walked if t.present] == ([16] if shards is None else [4])
        assert sum(tasks.voxels(t.index) for t in walked) == vol[8:].size


@pytest.mark.slow
def test_data_engine_writes_what_the_pool_writes_and_resumes(tmp_path, em_with_fill, ray_two_cpus):
    src, vol = em_with_fill
    for shards in (None, "8,128,128"):
        outs = {}
        for engine in ("pool", "data"):
            dst = tmp_path / f"{engine}_{shards}.zarr"
            result = compress(src, str(dst), lossless=True, chunks="8,64,64", shards=shards, engine=engine, workers=2,
                              progress=False)
            assert result.run["engine"] == engine and result.chunks_written == result.run["chunks_todo"]
            outs[engine] = dst
        assert stored(outs["data"]) == stored(outs["pool"])
        assert np.array_equal(zarr.open_array(str(outs["data"]))[...], vol)

    dst = outs["data"]  # sharded: 12 shards of 2x2 chunks hold data, 4 are all fill and absent
    done = sorted(p for p in dst.rglob("*") if p.is_file() and p.name != "zarr.json")
    assert len(done) == 12
    done[0].unlink()
    done[1].write_bytes(done[1].read_bytes()[:-5])  # damaged: encoded again, not kept
    result = compress(src, str(dst), lossless=True, chunks="8,64,64", shards="8,128,128", engine="data", workers=2,
                      resume=True, progress=False)
    assert (result.chunks_skipped, result.chunks_written, result.run["chunks_repaired"]) == (10, 2, 1)
    assert stored(dst) == stored(outs["pool"])


@pytest.mark.slow
def test_data_engine_finishes_after_an_encoder_actor_is_killed(tmp_path, em_with_fill):
    """Ray Data restarts a SIGKILLed actor and retries its batches: nothing is lost."""
    import psutil

    src, vol = em_with_fill
    dst = tmp_path / "out.zarr"
    cmd = [sys.executable, "-m", "streamcomp.cli", "compress", src, str(dst), "--lossless", "--chunks", "8,32,32",
           "--engine", "data", "--workers", "2", "--quiet"]
    driver = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 180
    while killed is None and time.monotonic() < deadline and driver.poll() is None:
        written = len(list((dst / "c").rglob("*"))) if (dst / "c").exists() else 0
        actors = [p for p in psutil.Process(driver.pid).children(recursive=True)
                  if "MapWorker" in command_line(p)] if written >= 4 else []
        if actors:
            actors[0].send_signal(signal.SIGKILL)
            killed = actors[0].pid
        time.sleep(0.02)
    _, err = driver.communicate(timeout=600)
    assert killed is not None, "the run finished before an actor could be killed; make the volume larger"
    assert driver.returncode == 0, err[-3000:]
    run = read_manifest(str(dst))["run"]
    assert run["chunks_encoded"] == run["chunks_todo"] == 192  # 256 chunks, 64 of them all fill value
    assert np.array_equal(zarr.open_array(str(dst))[...], vol)


def test_unknown_engine_is_a_clear_error(tmp_path):
    for options, why in (({"engine": "spark"}, "engine must be one of pool, data, not 'spark'"),
                         ({"engine": "data", "executor": "local"}, "drop --executor local")):
        with pytest.raises(InputError, match=why):
            compress(str(SAMPLE), str(tmp_path / "out.zarr"), lossless=True, **options)
    proc = subprocess.run([sys.executable, "-m", "streamcomp.cli", "compress", str(SAMPLE), str(tmp_path / "o.zarr"),
                           "--engine", "spark"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "invalid choice: 'spark' (choose from 'pool', 'data')" in proc.stderr
    assert not (tmp_path / "out.zarr").exists() and not (tmp_path / "o.zarr").exists()
