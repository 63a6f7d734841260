"""Batch archiving of a bucket on the real moto S3 server: discovery of every format, compression
through the Ray pipeline, verification, the JSON-lines manifest, resumption and fail-fast errors."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest
import zarr
from helpers import FAST, ROOT

from streamcomp.archive import MANIFEST, ArchiveError, archive, discover, read_manifest

sys.path.insert(0, str(ROOT / "jobs"))
import archive_bucket

CHUNKS = (8, 32, 32)


@pytest.fixture
def buckets(s3_server, request):
    fs = s3_server.fs()
    base = request.node.name[-16:].lower().replace("_", "-")
    names = (f"src-{base}", f"dst-{base}")
    for n in names:
        fs.mkdir(n)
    yield names
    for n in names:
        fs.rm(n, recursive=True)


def fill_source(s3_server, bucket: str, em: np.ndarray) -> dict[str, np.ndarray]:
    """zarr v3, zarr v2, an OME-Zarr (v2) group, a .npy, a corrupt .npy and a text file."""
    so = s3_server.options
    fs = s3_server.fs()

    def store(path: str):
        return zarr.storage.FsspecStore.from_url(f"s3://{bucket}/{path}", storage_options=so)

    vols = {
        "em/v3.zarr": np.ascontiguousarray(em[:8, :64, :64]),
        "em/v2.zarr": np.ascontiguousarray(em[8:16, :64, :64]),
        "ome/img.zarr/0": np.ascontiguousarray(em[:8, 64:, 64:]),
        "npy/crop.npy": np.ascontiguousarray(em[8:16, 64:, :64]),
    }
    zarr.create_array(store("em/v3.zarr"), data=vols["em/v3.zarr"], chunks=CHUNKS, zarr_format=3)
    zarr.create_array(store("em/v2.zarr"), data=vols["em/v2.zarr"], chunks=CHUNKS, zarr_format=2)
    group = zarr.open_group(store("ome/img.zarr"), mode="w", zarr_format=2)
    group.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": a} for a in "zyx"],
                                   "datasets": [{"path": "0"}, {"path": "1"}]}]
    group.create_array("0", data=vols["ome/img.zarr/0"], chunks=CHUNKS)
    group.create_array("1", data=vols["ome/img.zarr/0"][:, ::2, ::2], chunks=(8, 16, 16))
    buf = io.BytesIO()
    np.save(buf, vols["npy/crop.npy"])
    fs.pipe(f"{bucket}/npy/crop.npy", buf.getvalue())
    fs.pipe(f"{bucket}/npy/broken.npy", b"\x93NUMPY garbage, not an array")
    fs.pipe(f"{bucket}/notes.txt", b"acquisition notes")
    return vols


def listing(fs, bucket: str) -> dict[str, str]:
    return {p: fs.info(p).get("ETag", "") for p in fs.find(bucket)}


def test_discover_every_format_and_skip_the_unreadable(s3_server, buckets, em):
    src, _ = buckets
    fill_source(s3_server, src, em)
    volumes, skipped = discover(f"s3://{src}", s3_server.options)
    assert {v.rel: v.kind for v in volumes} == {"em/v3.zarr": "zarr3", "em/v2.zarr": "zarr2",
                                                "ome/img.zarr/0": "ome-zarr", "npy/crop.npy": "npy"}
    assert {v.rel: v.dst_rel for v in volumes}["npy/crop.npy"] == "npy/crop.zarr"
    reasons = {s.rel: s.reason for s in skipped}
    assert set(reasons) == {"npy/broken.npy", "notes.txt"}
    assert "cannot read" in reasons["npy/broken.npy"] and "not a volume" in reasons["notes.txt"]
    npy = next(v for v in volumes if v.kind == "npy")
    assert len(npy.checksum) == 64 and "bytes" in npy.checksum_kind


@pytest.mark.slow
def test_archive_bucket_resumes_and_reruns_as_a_no_op(s3_server, buckets, em):
    src, dst = buckets
    so = s3_server.options
    fs = s3_server.fs()
    vols = fill_source(s3_server, src, em)
    before = listing(fs, src)
    kw = dict(method="siren", ratio=8, method_params=FAST, chunks=CHUNKS, storage_options=so, workers=2,
              verify_chunks=2)
    # interrupted: only two volumes this run
    first = archive(f"s3://{src}/", f"s3://{dst}/", max_volumes=2, **kw)
    assert len(first.verified) == 2 and len(first.remaining) == 2 and not first.failed
    assert {s["rel"] for s in first.skipped} == {"npy/broken.npy", "notes.txt"}
    # the rest on rerun, through the job entry point
    assert archive_bucket.main([f"s3://{src}/", f"s3://{dst}/", "--ratio", "8", "--method", "siren",
                                "--params", json.dumps(FAST), "--chunks", "8,32,32", "--workers", "2",
                                "--verify-chunks", "2",
                                "--endpoint-url", s3_server.endpoint]) == 0
    records = read_manifest(f"s3://{dst}/", so)
    assert len(records) == 4 and all(r["status"] == "verified" for r in records)
    by_rel = {r["source_rel"]: r for r in records}
    assert set(by_rel) == set(vols)
    for rel, data in vols.items():
        r = by_rel[rel]
        assert r["shape"] == list(data.shape) and r["dtype"] == "uint8" and r["bytes_before"] > 0
        assert r["raw_bytes"] == data.nbytes and r["bytes_after"] < data.nbytes
        assert 7 < r["ratio"] < 9 and r["psnr"] > 15 and 0 < r["ssim"] <= 1
        assert len(r["source_checksum"]) == 64 and r["started"] <= r["finished"]
        # plain zarr over s3fs reads the output at the same relative path
        out = zarr.open_array(r["destination"], mode="r", storage_options=so)[...]
        assert out.shape == data.shape and np.abs(out.astype(float) - data).mean() < 40
    assert by_rel["npy/crop.npy"]["destination"] == f"s3://{dst}/npy/crop.zarr"
    assert by_rel["ome/img.zarr/0"]["destination"] == f"s3://{dst}/ome/img.zarr/0"
    assert not fs.exists(f"{dst}/.archive_staging")
    # a third run does nothing, and the source was never touched
    third = archive(f"s3://{src}/", f"s3://{dst}/", **kw)
    assert third.verified == [] and len(third.already_done) == 4 and third.failed == []
    assert len(read_manifest(f"s3://{dst}/", so)) == 4
    assert listing(fs, src) == before
    assert fs.exists(f"{dst}/{MANIFEST}")


def test_missing_bucket_and_refused_credentials_fail_before_any_work(s3_server, buckets, capsys):
    src, dst = buckets
    so = s3_server.options
    with pytest.raises(ArchiveError, match="does not exist"):
        archive("s3://no-such-bucket-xyz/", f"s3://{dst}/", ratio=8, storage_options=so)
    with pytest.raises(ArchiveError, match="destination"):
        archive(f"s3://{src}/", "s3://no-such-bucket-xyz/out/", ratio=8, storage_options=so)
    s3_server.fs().pipe(f"{src}/notes.txt", b"x")  # moto lists for anonymous callers, but refuses reads
    code = archive_bucket.main([f"s3://{src}/", f"s3://{dst}/", "--anon", "--endpoint-url", s3_server.endpoint])
    err = capsys.readouterr().err
    assert code == 2 and "archive_bucket: error: cannot list source" in err and "access denied" in err
    assert not s3_server.fs().find(dst)  # nothing written


def test_half_written_volume_resumes_at_chunk_level(tmp_path, em):
    """A crash mid-volume leaves chunks but no verified record: the rerun keeps the valid chunks."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "a").mkdir(parents=True)
    np.save(src / "a" / "vol.npy", np.ascontiguousarray(em[:8, :64, :64]))
    kw = dict(method="siren", ratio=8, method_params=FAST, chunks=CHUNKS, executor="local", verify_chunks=0)
    first = archive(str(src), f"file://{dst}", **kw)
    assert first.verified == ["a/vol.npy"]
    out = dst / "a" / "vol.zarr"
    chunk_files = sorted(p for p in out.rglob("*") if p.is_file() and p.parent.name != "vol.zarr"
                         and p.name not in ("zarr.json",))
    assert len(chunk_files) == 4
    chunk_files[-1].unlink()  # the crash: one chunk missing, and no manifest record
    (dst / MANIFEST).unlink()
    second = archive(str(src), f"file://{dst}", **kw)
    assert second.verified == ["a/vol.npy"]
    (record,) = read_manifest(str(dst))
    assert record["chunks_resumed"] == 3 and record["chunks_encoded"] == 1 and record["status"] == "verified"
    assert record["source"] == str(src / "a" / "vol.npy") and record["chunks_verified"] == 4
