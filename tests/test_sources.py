"""Sources: tensorstore reads of zarr v2/v3, N5, neuroglancer precomputed and CREMI HDF5, and a real
S3-protocol server (moto) as source and destination of the pipeline, with clear errors."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import tensorstore as ts
import zarr
from helpers import FAST, run_fresh_python

from streamcomp.api import compress
from streamcomp.errors import InputError
from streamcomp.pipeline import read_manifest
from streamcomp.source import open_source

ALL = (slice(None),) * 3


def test_local_chunked_formats_read_through_tensorstore(tmp_path, em):
    zarr.create_array(str(tmp_path / "v2.zarr"), data=em, chunks=(8, 64, 64), zarr_format=2)
    zarr.create_array(str(tmp_path / "v3.zarr"), data=em, chunks=(8, 64, 64), zarr_format=3)
    n5 = ts.open({"driver": "n5", "kvstore": {"driver": "file", "path": str(tmp_path / "v.n5")},
                  "metadata": {"dimensions": list(em.shape), "blockSize": [8, 64, 64], "dataType": "uint8",
                               "compression": {"type": "gzip"}}}, create=True).result()
    n5.write(em).result()
    pc = ts.open({"driver": "neuroglancer_precomputed", "kvstore": {"driver": "file", "path": str(tmp_path / "pc")},
                  "multiscale_metadata": {"type": "image", "data_type": "uint8", "num_channels": 1},
                  "scale_metadata": {"size": [128, 128, 16], "encoding": "raw", "chunk_size": [64, 64, 8],
                                     "resolution": [4, 4, 40], "voxel_offset": [10, 0, 0]}}, create=True).result()
    pc[ts.d["channel"][0]].translate_to[0].write(em.transpose(2, 1, 0)).result()
    cases = {"v2.zarr": "tensorstore zarr", "v3.zarr": "tensorstore zarr3", "v.n5": "tensorstore n5",
             "pc": "tensorstore neuroglancer_precomputed"}
    for name, reader in cases.items():
        src = open_source(f"file://{tmp_path / name}")
        assert src.reader == reader and src.shape == em.shape
        assert (src.read((slice(3, 11), slice(60, 70), slice(0, 128))) == em[3:11, 60:70]).all(), name
    assert open_source(f"precomputed://{tmp_path / 'pc'}").reader == cases["pc"]
    assert open_source(str(tmp_path / "v3.zarr"), engine="zarr").reader == "zarr-python"
    with pytest.raises(InputError, match="no zarr, N5 or neuroglancer precomputed array"):
        open_source(str(tmp_path))


def test_cremi_hdf5_layout(tmp_path, em):
    path = tmp_path / "sample_A.hdf"
    with h5py.File(path, "w") as f:
        f.create_dataset("volumes/raw", data=em, chunks=(8, 64, 64))
        f.create_dataset("volumes/labels/neuron_ids", data=em.astype(np.uint32))
    src = open_source(str(path))
    assert src.reader == "h5py" and (src.read(ALL) == em).all()
    assert open_source(f"{path}#volumes/labels/neuron_ids").dtype == np.uint32
    with pytest.raises(InputError, match="no dataset"):
        open_source(f"{path}#volumes/nope")


@pytest.fixture
def bucket(s3_server, request):
    fs = s3_server.fs()
    name = f"b-{request.node.name[-20:].lower().replace('_', '-')}"
    fs.mkdir(name)
    yield name
    fs.rm(name, recursive=True)


def test_s3_source_errors_are_clear(s3_server, bucket):
    so = s3_server.options
    with pytest.raises(InputError, match="bucket does not exist"):
        open_source("s3://no-such-bucket/vol.zarr", so)
    with pytest.raises(InputError, match="no zarr, N5"):
        open_source(f"s3://{bucket}/missing.zarr", so)
    zarr.create_array(zarr.storage.FsspecStore.from_url(f"s3://{bucket}/v.zarr", storage_options=so),
                      shape=(4, 8, 8), chunks=(4, 8, 8), dtype="u1")
    with pytest.raises(InputError, match="access denied"):  # moto refuses unsigned requests
        open_source(f"s3://{bucket}/v.zarr", {**so, "anon": True})
    with pytest.raises(InputError, match="cannot be reached"):
        open_source(f"s3://{bucket}/v.zarr", {"endpoint_url": "http://127.0.0.1:9"})


@pytest.mark.slow
def test_s3_zarr_to_s3_output_through_ray_head(s3_server, bucket, ray_head, em):
    """A zarr v2 array on the S3 server, read by the Ray workers through tensorstore's s3 driver
    (credentials from the head node's own environment, never forwarded by this driver),
    compressed straight to S3, then read back with plain zarr + s3fs in a fresh process."""
    so = s3_server.options
    zarr.create_array(zarr.storage.FsspecStore.from_url(f"s3://{bucket}/raw.zarr", storage_options=so),
                      data=em, chunks=(8, 64, 64), zarr_format=2)
    assert open_source(f"s3://{bucket}/raw.zarr", so).reader == "tensorstore zarr"
    dst = f"s3://{bucket}/out.zarr"
    result = compress(f"s3://{bucket}/raw.zarr", dst, ratio=8, chunks=(8, 64, 64), method="siren", method_params=FAST,
                      storage_options=so, ray_address=ray_head.gcs_address, progress=False)
    assert result.run["executor"] == "ray" and result.chunks_written == 8
    assert abs(result.ratio - 8) / 8 < 0.05
    manifest = read_manifest(dst, so)
    assert manifest["status"] == "complete" and manifest["run"]["chunks_encoded"] == 8
    code = (f"import zarr, json; a = zarr.open_array({dst!r}, storage_options={so!r})[...]; "
            "print(json.dumps([list(a.shape), str(a.dtype), float(a.mean())]))")
    proc = run_fresh_python(code)
    assert proc.returncode == 0, proc.stderr
    shape, dtype, mean = json.loads(proc.stdout.strip().splitlines()[-1])
    assert shape == list(em.shape) and dtype == "uint8" and abs(mean - em.mean()) < 8
    # rerunning the same call resumes: every chunk is already there and valid
    again = compress(f"s3://{bucket}/raw.zarr", dst, ratio=8, chunks=(8, 64, 64), method="siren", method_params=FAST,
                     storage_options=so, resume=True, progress=False)
    assert again.chunks_written == 0 and again.chunks_skipped == 8
