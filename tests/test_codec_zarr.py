"""The codec contract: plain zarr/dask read streamcomp arrays in a process that never imports it."""

import json
import threading
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers import DATA, FAST, run_fresh_python

from streamcomp.api import compress
from streamcomp.errors import ChunkFormatError
from streamcomp.format import codec
from streamcomp.format.codec import StreamcompCodec, StreamcompNumcodec, make_config
from streamcomp.methods import Params, method_class
from streamcomp.metrics import psnr


@pytest.fixture(scope="module")
def compressed(tmp_path_factory, em):
    """The EM sample compressed at 8x in both zarr formats (chunks 16x64x64, 4 chunks each)."""
    base = tmp_path_factory.mktemp("codec")
    src = str(base / "em.npy")
    np.save(src, em)
    out = {}
    for fmt in (2, 3):
        dst = str(base / f"em_v{fmt}.zarr")
        compress(
            src, dst, ratio=8, chunks=(16, 64, 64), zarr_format=fmt, method="siren", method_params=FAST, progress=False
        )
        out[fmt] = dst
    return src, out


@pytest.mark.parametrize("fmt", [2, 3])
def test_fresh_process_reads_with_plain_zarr(compressed, em, fmt):
    _src, dsts = compressed
    code = (
        "import sys, zarr, numpy as np\n"
        f"a = zarr.open_array({dsts[fmt]!r}, mode='r')\n"
        f"np.save({dsts[fmt] + '.npy'!r}, a[...])\n"
        "print('streamcomp.format.codec' in sys.modules)\n"
    )
    proc = run_fresh_python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"  # loaded by zarr through the entry point, not by the caller
    decoded = np.load(dsts[fmt] + ".npy")
    assert decoded.shape == em.shape and decoded.dtype == em.dtype
    assert psnr(em, decoded) > psnr(em, np.full_like(em, int(em.mean()))) + 2


def test_v2_and_v3_registrations_share_one_configuration(compressed):
    _, dsts = compressed
    v3 = json.loads((Path(dsts[3]) / "zarr.json").read_text())["codecs"][0]
    v2 = json.loads((Path(dsts[2]) / ".zarray").read_text())["compressor"]
    assert v3["name"] == "streamcomp" and v2["id"] == "streamcomp"
    assert v3["configuration"]["method"] == v2["method"] == "siren"
    assert (
        StreamcompCodec.from_dict(v3).config["params"]
        == StreamcompNumcodec(**{k: v for k, v in v2.items() if k != "id"}).config["params"]
    )


@pytest.mark.parametrize("name", ["siren", "nerf", "sci", "planes", "unicompress", "wavelet"])
def test_configuration_keeps_only_what_decoding_needs(name):
    cls = method_class(name)
    assert issubclass(cls.Params, Params)
    method = cls()
    assert isinstance(method.params, cls.Params)
    names = {f.name for f in fields(cls.Params)}
    encode_only = {f.name for f in fields(cls.Params) if f.metadata.get("encode_only")}
    assert encode_only <= names  # wavelet's decoder reads no parameter: its model is shared state
    # Stored only where set: parameters added after arrays were written without them (at their defaults here).
    unset = {f.name for f in fields(cls.Params) if f.metadata.get("stored_if_set")}
    stored = make_config(method, with_shared=False)["params"]
    assert set(stored) == names - encode_only - unset
    assert stored == {k: v for k, v in method.params.as_dict().items() if k not in encode_only | unset}


def test_encode_only_parameters_reach_the_writers(compressed, em, tmp_path):
    """The configuration lacks ``steps``, yet the workers must train with the run's value, not the default."""
    src, dsts = compressed
    dst = str(tmp_path / "more_steps.zarr")
    more = {**FAST, "steps": FAST["steps"] * 4}
    compress(src, dst, ratio=8, chunks=(16, 64, 64), method="siren", method_params=more, progress=False)
    meta = json.loads((Path(dst) / "zarr.json").read_text())["codecs"][0]["configuration"]
    assert "steps" not in meta["params"]
    assert (Path(dst) / "c/0/0/0").read_bytes() != (Path(dsts[3]) / "c/0/0/0").read_bytes()
    assert psnr(em, zarr.open_array(dst, mode="r")[...]) > psnr(em, zarr.open_array(dsts[3], mode="r")[...])


def test_dask_decodes_only_the_chunks_a_slice_touches(compressed, tmp_path):
    import shutil

    _, dsts = compressed
    copy = tmp_path / "copy.zarr"
    shutil.copytree(dsts[3], copy)
    # Corrupt every chunk but c/0/0/0: a slice inside that chunk must still compute.
    for chunk in (copy / "c").rglob("*"):
        if chunk.is_file() and chunk.relative_to(copy / "c").parts != ("0", "0", "0"):
            data = bytearray(chunk.read_bytes())
            data[len(data) // 2] ^= 0xFF
            chunk.write_bytes(bytes(data))
    code = (
        "import dask.array as da\n"
        f"x = da.from_zarr({str(copy)!r})\n"
        "print(float(x[:8, :32, :32].mean().compute()))\n"
        "try:\n    x[:, 64:, :].compute()\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
    )
    proc = run_fresh_python(code)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.strip().splitlines()
    assert 0 < float(first) < 255
    assert second.startswith("ChunkFormatError") and "checksum" in second


def test_zarr_write_path_uses_the_codec(tmp_path, em):
    """Writing through zarr itself (arr[...] = x) encodes with the configuration's rate."""
    config = make_config(method_class("siren")(**FAST), bytes_per_voxel=1 / 6)
    arr = zarr.create_array(
        tmp_path / "w.zarr",
        shape=(16, 64, 64),
        chunks=(16, 64, 64),
        dtype="uint8",
        serializer=StreamcompCodec(**config),
        compressors=None,
    )
    arr[...] = em[:, :64, :64]
    size = (tmp_path / "w.zarr" / "c" / "0" / "0" / "0").stat().st_size
    assert size <= 16 * 64 * 64 / 6
    assert psnr(em[:, :64, :64], arr[...]) > 12


def test_future_codec_version_is_refused(compressed, tmp_path):
    import shutil

    _, dsts = compressed
    copy = tmp_path / "future.zarr"
    shutil.copytree(dsts[3], copy)
    meta = json.loads((copy / "zarr.json").read_text())
    meta["codecs"][0]["configuration"]["format_version"] = 99
    (copy / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(ChunkFormatError, match="newer than this build reads"):
        zarr.open_array(copy, mode="r")[...]


@pytest.mark.parametrize(
    "name, source, expected_psnr",
    [
        # the learned context and sign models and an 8-channel in-plane post-filter in its configuration
        ("format9_em_16x128x128_8x.zarr", "em", 31.3209),
        # no shared state: the hand-set models
        ("format9_ct_head_16x64x64_16x.zarr", "ct", 52.3003),
        # the same two as format 10 wrote them: every section coded by the compiled coder
        ("format10_em_16x128x128_8x.zarr", "em", 31.3238),
        ("format10_ct_head_16x64x64_16x.zarr", "ct", 52.3492),
    ],
)
def test_arrays_written_by_formats_9_and_10_still_read(request, name, source, expected_psnr):
    """Lossy arrays the format-9 and format-10 code wrote by default from the ``source`` fixture's
    crop (shipped in tests/data) read through plain zarr as they did: a change to the decoder's
    models, transforms, filter or entropy coders shows here, while float rounding on another CPU
    moves their PSNR by far less than the tolerance."""
    decoded = zarr.open_array(str(DATA / name), mode="r")[...]
    assert psnr(request.getfixturevalue(source), decoded) == pytest.approx(expected_psnr, abs=0.01)


@pytest.mark.parametrize("fmt", [2, 3])
def test_zarr_decodes_at_most_one_chunk_per_core_at_once(compressed, monkeypatch, fmt):
    """zarr's codec threads outnumber the cores; past one chunk per core they only contend."""
    running, most, lock = [0], [0], threading.Lock()
    decode = codec.decode_chunk

    def counted(method, data):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        try:
            return decode(method, data)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(codec, "decode_chunk", counted)
    monkeypatch.setattr(codec, "_CORES", threading.BoundedSemaphore(1))
    zarr.open_array(compressed[1][fmt], mode="r")[...]
    assert most[0] == 1
