"""OME-Zarr output (``--ome-zarr``): the NGFF 0.5 group, its pyramid, readers of it and ``streamcomp view``."""

from __future__ import annotations

import io
import json
import urllib.request
import zlib

import h5py
import numpy as np
import pytest
import zarr
from helpers import SAMPLE, run_fresh_python

from streamcomp.api import compress
from streamcomp.cli import main
from streamcomp.errors import InputError
from streamcomp.methods import DEFAULT_METHOD
from streamcomp.pipeline import RunConfig
from streamcomp.source import open_source
from streamcomp.verify import evaluate

BOUND = 2


def mean_reference(src: np.ndarray, factors: tuple[int, ...]) -> np.ndarray:
    """The rounded box mean, written independently of streamcomp (shapes divisible by the factors)."""
    shape = [v for n, f in zip(src.shape, factors, strict=True) for v in (n // f, f)]
    return np.rint(src.astype(np.float64).reshape(shape).mean(axis=tuple(range(1, 2 * src.ndim, 2)))).astype(src.dtype)


@pytest.fixture(scope="module")
def em_crop() -> np.ndarray:
    """Real EM, 16x256x256 uint8, from the bundled sample."""
    return np.ascontiguousarray(np.load(SAMPLE, mmap_mode="r")[:16, :256, :256])


@pytest.fixture(scope="module")
def cremi_group(em_crop, tmp_path_factory) -> tuple[str, str]:
    """The crop as a CREMI-style HDF5 file (``volumes/raw`` with ``resolution`` 40x4x4 nm), compressed
    in-process into an OME-Zarr group under a maximum error; returns (source, group)."""
    tmp = tmp_path_factory.mktemp("ome")
    src = str(tmp / "cremi.h5")
    with h5py.File(src, "w") as f:
        f.create_dataset("volumes/raw", data=em_crop).attrs["resolution"] = [40.0, 4.0, 4.0]
    dst = str(tmp / "out.ome.zarr")
    result = compress(src, dst, ome_zarr=True, max_error=BOUND, chunks=(8, 64, 64), executor="local", progress=False)
    assert result.pyramid_bytes > 0
    assert result.stored_bytes == sum(f.stat().st_size for f in (tmp / "out.ome.zarr" / "0").rglob("*") if f.is_file())
    manifest = json.loads((tmp / "out.ome.zarr.manifest.json").read_text())
    assert manifest["pyramid_bytes"] == result.pyramid_bytes
    return src, dst


def test_group_validates_and_levels_are_the_downsampled_source(cremi_group, em_crop):
    from ome_zarr_models.v05 import Image

    src, dst = cremi_group
    assert open_source(src).voxel_size == (40.0, 4.0, 4.0)
    image = Image.from_zarr(zarr.open_group(dst, mode="r"))  # raises unless the group is valid NGFF 0.5
    multiscale = image.ome_attributes.multiscales[0]
    assert [(a.name, a.type, a.unit) for a in multiscale.axes] == [(n, "space", "nanometer") for n in "zyx"]
    scales = [d.coordinateTransformations[0].scale for d in multiscale.datasets]
    assert [list(s) for s in scales] == [[40, 4, 4], [40, 8, 8], [40, 16, 16]]  # EM: 2x in-plane only
    for k, factors in enumerate([(1, 1, 1), (1, 2, 2), (1, 4, 4)]):
        level = zarr.open_array(f"{dst}/{k}", mode="r")[...]
        assert level.dtype == em_crop.dtype
        error = np.abs(level.astype(int) - mean_reference(em_crop, factors).astype(int)).max()
        assert error <= BOUND, (k, error)
    q = evaluate(src, dst)  # readers take the group and use level 0
    assert q.max_abs_error <= BOUND and q.bound_met
    # an OME-Zarr source: a level of the group takes its voxel size from the multiscales
    assert open_source(f"{dst}/1").voxel_size == (40.0, 8.0, 8.0)
    assert open_source(dst).shape == em_crop.shape


def test_ome_zarr_reader_opens_the_group(cremi_group):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    _, dst = cremi_group
    node = next(iter(Reader(parse_url(dst))()))
    assert len(node.data) == 3
    for k, level in enumerate(node.data):
        assert np.array_equal(np.asarray(level), zarr.open_array(f"{dst}/{k}", mode="r")[...])


def test_cli_info_lists_levels_and_decompress_reads_level_0(cremi_group, tmp_path, capsys):
    _, dst = cremi_group
    assert main(["info", dst, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [lv["shape"] for lv in info["levels"]] == [[16, 256, 256], [16, 128, 128], [16, 64, 64]]
    assert all(lv["codec"] == f"streamcomp {DEFAULT_METHOD}" for lv in info["levels"])
    out = str(tmp_path / "back.npy")
    assert main(["decompress", dst, out, "--quiet"]) == 0
    assert np.array_equal(np.load(out), zarr.open_array(f"{dst}/0", mode="r")[...])


def fetch_served(served, shape: tuple[int, ...]) -> np.ndarray:
    """The whole volume as neuroglancer's server hands it to the browser (npz encoding), over HTTP."""
    import neuroglancer

    key = f"{served.viewer.token}.{served.volume.token}"
    base = neuroglancer.server.global_server.server_url
    assert base.startswith("http://127.0.0.1:")
    url = f"{base}/neuroglancer/npz/{key}/{','.join(['1'] * len(shape))}/{','.join(['0'] * len(shape))}/" + ",".join(
        map(str, shape)
    )
    with urllib.request.urlopen(url, timeout=30) as resp:
        return np.load(io.BytesIO(zlib.decompress(resp.read())))


def test_zstd_pyramid_reads_without_streamcomp_and_view_serves_it(tmp_path, em_crop):
    from streamcomp.view import serve, stop

    src = str(tmp_path / "em.npy")
    np.save(src, em_crop)
    dst = str(tmp_path / "preview.zarr")
    result = compress(src, dst, ome_zarr=True, pyramid_codec="zstd", max_error=BOUND, chunks=(8, 64, 64),
                      executor="local", progress=False)
    assert open_source(src).voxel_size is None  # no voxel size: isotropic, 2x on every axis
    assert zarr.open_array(f"{dst}/1", mode="r").shape == (8, 128, 128)
    level1 = zarr.open_array(f"{dst}/1", mode="r")[...]
    assert np.array_equal(level1, mean_reference(em_crop, (2, 2, 2)))  # zstd is lossless
    code = (
        "import sys; sys.modules['streamcomp'] = None\n"  # any import of streamcomp fails here
        f"import zarr, hashlib; a = zarr.open_array({dst + '/1'!r}, mode='r')[...]\n"
        "print(hashlib.sha256(a.tobytes()).hexdigest())"
    )
    proc = run_fresh_python(code, timeout=120)
    assert proc.returncode == 0, proc.stderr
    import hashlib

    assert proc.stdout.strip() == hashlib.sha256(level1.tobytes()).hexdigest()

    try:
        for level in (0, 1):
            served = serve(dst, level=level)
            expected = zarr.open_array(f"{dst}/{level}", mode="r")[...]
            assert np.array_equal(fetch_served(served, expected.shape), expected)
            stop()
    finally:
        stop()

    # resume: a lost level chunk is recomputed, the rest kept, the level identical
    (tmp_path / "preview.zarr" / "1" / "c" / "0" / "0" / "0").unlink()
    again = compress(src, dst, ome_zarr=True, pyramid_codec="zstd", max_error=BOUND, chunks=(8, 64, 64),
                     executor="local", progress=False, resume=True)
    assert again.pyramid_bytes == result.pyramid_bytes
    assert np.array_equal(zarr.open_array(f"{dst}/1", mode="r")[...], level1)


def test_bad_input_is_refused_with_a_clear_message(cremi_group, capsys, tmp_path):
    with pytest.raises(InputError, match="zarr format 3"):
        RunConfig("a.npy", "b.zarr", ratio=8, ome_zarr=True, zarr_format=2)
    with pytest.raises(InputError, match="needs --ome-zarr"):
        RunConfig("a.npy", "b.zarr", ratio=8, pyramid_codec="zstd")
    _, dst = cremi_group
    assert main(["view", dst, "--level", "5"]) == 2
    assert "has levels 0 to 2, not 5" in capsys.readouterr().err
    assert main(["view", dst, "--port", "70000"]) == 2
    assert "port must be between" in capsys.readouterr().err


def test_precomputed_source_reports_its_resolution_in_zyx(tmp_path):
    import tensorstore as ts

    spec = {
        "driver": "neuroglancer_precomputed", "kvstore": {"driver": "file", "path": str(tmp_path / "vol") + "/"},
        "create": True,
        "multiscale_metadata": {"type": "image", "data_type": "uint8", "num_channels": 1},
        "scale_metadata": {"size": [32, 24, 8], "resolution": [4, 5, 40], "encoding": "raw", "chunk_size": [16, 16, 8]},
    }
    ts.open(spec).result()
    source = open_source(str(tmp_path / "vol"))
    assert source.shape == (8, 24, 32)
    assert source.voxel_size == (40.0, 5.0, 4.0) and source.units == ("nanometer",) * 3
