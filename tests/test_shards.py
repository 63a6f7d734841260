"""Sharded output (zarr v3 ``sharding_indexed``): one object per shard, read by plain zarr in a fresh
process, every byte counted, shards checked and resumed whole after a kill."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr
from helpers import FAST, ROOT, SAMPLE, local_stored_bytes, run_fresh_python

from streamcomp.api import compress
from streamcomp.errors import InputError
from streamcomp.format.shards import AUTO_SHARD_BYTES, auto_shards, pack_shard, parse_shards, unpack_shard
from streamcomp.pipeline.manifest import read_manifest


def stored_objects(dst) -> list:
    return sorted(p for p in dst.rglob("*") if p.is_file())


def shard_files(dst) -> list:
    return [p for p in stored_objects(dst) if p.name != "zarr.json" and not p.name.endswith(".partial")]


def test_pack_unpack_round_trip_and_damage_is_caught():
    parts = {(0, 0): b"abc", (1, 1): b"defgh"}  # (0, 1) and (1, 0) absent: fill value
    data = pack_shard((2, 2), parts)
    assert len(data) == 8 + 16 * 4 + 4
    assert unpack_shard(data, (2, 2)) == parts
    assert unpack_shard(data[:-1], (2, 2)) is None  # truncated
    flipped = bytearray(data)
    flipped[-10] ^= 1  # index corrupted: checksum fails
    assert unpack_shard(bytes(flipped), (2, 2)) is None
    assert unpack_shard(b"", (2, 2)) is None


def test_shard_shapes_are_validated_and_auto_is_sized():
    shape, chunks = (125, 1250, 1250), (32, 128, 128)
    assert parse_shards(None, shape, chunks, 1) is None
    assert parse_shards("64,512,512", shape, chunks, 1) == (64, 512, 512)
    for bad, why in (("48,512,512", "whole number"), ("64,512", "one entry per axis"), ("a,b,c", "comma-separated")):
        with pytest.raises(InputError, match=why):
            parse_shards(bad, shape, chunks, 1)
    auto = auto_shards(shape, chunks, 1, workers=1)
    assert all(s % c == 0 for s, c in zip(auto, chunks, strict=True))
    assert np.prod(auto) <= AUTO_SHARD_BYTES
    big = auto_shards((4096, 65536, 65536), (32, 128, 128), 1, workers=1)
    assert AUTO_SHARD_BYTES / 2 < np.prod(big) <= AUTO_SHARD_BYTES  # about 1 GiB on a huge volume
    # a small volume is not one shard when there are workers to share it
    split = auto_shards(shape, chunks, 1, workers=4)
    counts = [-(-n // s) for n, s in zip(shape, split, strict=True)]
    assert np.prod(counts) >= 4
    with pytest.raises(InputError, match="zarr format 3"):
        compress(str(SAMPLE), "/nonexistent/out.zarr", lossless=True, shards="auto", zarr_format=2)


def test_sharded_output_reads_with_plain_zarr_and_counts_every_byte(tmp_path):
    em = np.load(SAMPLE)[:16]
    src = tmp_path / "em.npy"
    em2 = em.copy()
    em2[:8, :64, :64] = 0  # one all-fill chunk: absent from its shard's index
    em2[:8, :64, 64:128] = 7  # one constant chunk
    np.save(src, em2)
    dst = tmp_path / "out.zarr"
    result = compress(str(src), str(dst), method="siren", method_params=FAST, ratio=10, chunks="8,64,64",
                      shards="8,128,256", executor="local", progress=False)
    objects = stored_objects(dst)
    assert len(shard_files(dst)) == 4 and len(objects) == 5  # 2x2 shards + zarr.json
    assert result.stored_bytes == local_stored_bytes(dst) == sum(p.stat().st_size for p in objects)
    assert abs(result.ratio - 10) / 10 < 0.05  # the shards' indexes are counted in the budget
    assert result.run["unit"] == "shard" and result.chunks_written == 4
    manifest = read_manifest(str(dst))
    assert manifest["shards"] == [8, 128, 256] and manifest["chunks"] == [8, 64, 64]
    code = (
        f"import zarr, numpy as np, json; a = zarr.open_array({str(dst)!r}); full = a[...];"
        " part = a[3:12, 40:100, 70:90]; print(json.dumps([list(a.shards), list(a.chunks),"
        " float(np.abs(full[3:12, 40:100, 70:90].astype(float) - part).max()),"
        " int(full[:8, :64, :64].max()), int(full[:8, :64, 64:128].min()),"
        f" float(((full.astype(float) - np.load({str(src)!r})) ** 2).mean())]))"
    )
    proc = run_fresh_python(code)
    assert proc.returncode == 0, proc.stderr
    shards, chunks, diff, fill_max, const_min, mse = json.loads(proc.stdout)
    assert shards == [8, 128, 256] and chunks == [8, 64, 64]
    assert diff == 0 and fill_max == 0 and const_min == 7  # a region read equals the full read
    assert mse < np.var(em2.astype(float))


def lossless_job(src, dst) -> list[str]:
    return [sys.executable, "-m", "streamcomp.cli", "compress", str(src), str(dst), "--lossless",
            "--chunks", "8,64,64", "--shards", "8,128,128", "--executor", "local", "--quiet"]


@pytest.mark.slow
def test_killed_sharded_run_resumes_whole_shards_and_matches_an_uninterrupted_run(tmp_path):
    vol = np.concatenate([np.load(SAMPLE), np.load(SAMPLE)[::-1, ::-1]] * 2)  # 120x256x256 real EM
    src = tmp_path / "em.npy"
    np.save(src, vol)
    dst, ref = tmp_path / "out.zarr", tmp_path / "ref.zarr"
    driver = subprocess.Popen(lossless_job(src, dst), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(shard_files(dst) if dst.exists() else []) < 3:
            time.sleep(0.02)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    done = shard_files(dst)
    assert 3 <= len(done) < 60, "the run finished before it could be killed; make the volume larger"
    done[0].write_bytes(done[0].read_bytes()[:-5])  # a damaged shard is re-encoded whole, not kept
    resumed = subprocess.run([*lossless_job(src, dst), "--resume"], cwd=ROOT, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run = read_manifest(str(dst))["run"]
    assert run["unit"] == "shard" and run["resumed"]
    assert run["chunks_skipped"] == len(done) - 1 and run["chunks_repaired"] == 1
    assert run["chunks_encoded"] + run["chunks_skipped"] == 60  # 15 x 2 x 2 shards, none lost
    uninterrupted = subprocess.run(lossless_job(src, ref), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    for a, b in zip(shard_files(dst), shard_files(ref), strict=True):
        assert a.relative_to(dst) == b.relative_to(ref) and a.read_bytes() == b.read_bytes()
    assert np.array_equal(zarr.open_array(str(dst))[...], vol)
