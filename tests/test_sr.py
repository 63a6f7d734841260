"""The ``sr`` method (downsampling + INR + shared super-resolution network) and decoding at a chosen
scale (:mod:`streamcomp.scaled`), on real CT and 4D MRI crops."""

import itertools
import subprocess
import sys

import numpy as np
import pytest
import torch
import zarr
from helpers import assert_fresh_read_matches, local_stored_bytes

from streamcomp.api import compress
from streamcomp.errors import ChunkFormatError, InputError
from streamcomp.methods import FitTargets, Target, build_method
from streamcomp.methods.inr import half_scale_cells, linear_tensors
from streamcomp.methods.siren import SirenMethod
from streamcomp.methods.sr import _CHUNK, LOSSES, _backward_through_grid, downsample, parse_factors
from streamcomp.metrics import psnr
from streamcomp.models import sr as sr_network
from streamcomp.models.coords import coords_at, grid
from streamcomp.models.siren import FunnelSiren, SirenWeights, linear_shapes
from streamcomp.models.sr import SRNet, low_res_coords, low_res_positions
from streamcomp.scaled import ScaledReader, parse_scale, read_scaled, scaled_shape, supersampling_offsets
from streamcomp.values import normalize

FAST = {"steps": 60, "sr_steps": 40, "refine_steps": 5, "batch": 2048, "factors": "1x2x2", "channels": 4}


def blocks_of(volume: np.ndarray, shape: tuple[int, ...]) -> list[np.ndarray]:
    slices = np.ndindex(*(n // s for n, s in zip(volume.shape, shape, strict=True)))
    return [normalize(volume[tuple(slice(i * s, (i + 1) * s) for i, s in zip(idx, shape, strict=True))])[0]
            for idx in slices]


def test_downsample_is_a_dct_low_pass_that_keeps_the_mean(ct):
    block = normalize(ct)[0]
    low = downsample(block, (1, 2, 4))
    assert low.shape == (16, 32, 16)
    assert abs(float(low.mean()) - float(block.mean())) < 1e-4
    assert downsample(block, (1, 1, 1)) is not block and np.array_equal(downsample(block, (1, 1, 1)), block)
    assert downsample(block[:15, :31], (2, 2, 2)).shape == (8, 16, 32)  # odd sizes round up


def test_factors_are_validated():
    assert parse_factors("1x2x2", 3) == (1, 2, 2)
    for bad in ("2x2", "0x1x1", "1x9x1", "a"):
        with pytest.raises(InputError, match="factors"):
            parse_factors(bad, 3)
    with pytest.raises(InputError, match="factors"):
        build_method("sr", {"factors": "1x0x2"})
    with pytest.raises(InputError, match="fit_chunks"):
        build_method("sr", {"fit_chunks": 1})
    with pytest.raises(InputError, match="loss must be one of"):
        build_method("sr", {"loss": "l2"})
    assert build_method("sr", {"loss": "l1"}).params.loss == "l1"


def _trained_looking(net: SRNet) -> SRNet:
    """Random weights everywhere, the head included, so every path carries gradient."""
    torch.manual_seed(3)
    with torch.no_grad():
        for param in net.parameters():
            param.normal_(0, 0.3)
    return net.requires_grad_(False)


@pytest.mark.parametrize(("shape", "factors"), [((6, 20, 20), (1, 2, 2)), ((3, 4, 10, 10), (1, 1, 2, 2))])
def test_refine_gradient_through_the_grid_in_batches_is_exact(shape, factors, monkeypatch):
    monkeypatch.setattr(sr_network, "SLAB_VOXELS", 64)  # the convolutions in several slabs too
    net = _trained_looking(SRNet(len(shape), 3, 8))
    siren = FunnelSiren(len(shape), [12, 8, 8])
    coords = torch.rand(300, len(shape)) * 2 - 1
    values = torch.randn(300)
    low = tuple(-(-n // f) for n, f in zip(shape, factors, strict=True))
    low_values = siren(grid(low)).reshape(low)
    positions = low_res_positions(coords, shape, low)
    base = siren(low_res_coords(positions, low)).reshape(-1)
    torch.mean((net(low_values, positions, base) - values) ** 2).backward()
    expected = [param.grad.clone() for param in siren.parameters()]
    siren.zero_grad()
    _backward_through_grid(siren, net, factors, shape, coords, values, LOSSES["mse"], batch=37)
    for got, want in zip((param.grad for param in siren.parameters()), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_slabbed_convolution_equals_one_replicate_padded_convolution(monkeypatch):
    net = _trained_looking(SRNet(3, 4))
    low = torch.randn(2, 7, 9, 11)
    whole = net.features(low)
    monkeypatch.setattr(sr_network, "SLAB_VOXELS", 1)  # one section per call
    torch.testing.assert_close(net.features(low), whole)
    layer = net.extract[1]
    x = torch.randn(2, 4, 7, 9, 11)
    padded = torch.nn.functional.pad(x, (1,) * 6, mode="replicate")
    reference = torch.nn.functional.conv3d(padded, layer.weight, layer.bias)
    torch.testing.assert_close(sr_network._conv_in_slabs(layer, x), reference)


def test_an_untrained_network_returns_its_base():
    low = torch.randn(4, 8, 8)
    positions = low_res_positions(grid((4, 16, 16)), (4, 16, 16), (4, 8, 8))
    base = torch.randn(positions.shape[0])
    assert torch.equal(SRNet(3, 4)(low, positions, base), base)  # the head starts at zero


@pytest.fixture(scope="module")
def fitted(ct_large):
    """sr fitted on four CT chunks at 16x; two more chunks to measure on."""
    chunks = blocks_of(ct_large, (16, 64, 64))
    target = Target(budget_bytes=16 * 64 * 64 * 2 // 16)
    method = build_method("sr", FAST)
    notes = method.fit_shared(chunks[:4], FitTargets((target,) * 4, 8))
    return method, chunks, target, notes


def test_shared_state_round_trips_and_refuses_damage(fitted):
    method, chunks, target, notes = fitted
    assert "factors 1x2x2, 4 channels" in notes[0]
    sections = method.encode(chunks[5], target)
    assert sum(map(len, sections)) <= target.budget_bytes
    fresh = build_method("sr", {})
    fresh.load_shared_state(method.shared_state())
    assert np.array_equal(fresh.decode(sections, chunks[5].shape), method.decode(sections, chunks[5].shape))
    with pytest.raises(ChunkFormatError):
        fresh.load_shared_state(method.shared_state()[:3])
    with pytest.raises(ChunkFormatError):
        fresh.load_shared_state(b"\x09" + method.shared_state()[1:])  # 9 axes
    with pytest.raises(InputError, match="shared state"):
        build_method("sr", {}).encode(chunks[5], target)


def test_each_chunk_keeps_the_network_only_where_it_helps(fitted):
    method, chunks, target, _ = fitted
    for block in chunks[4:6]:
        sections = method.encode(block, target)
        hidden, use_net = _CHUNK.unpack(sections[0])
        errors = [float(np.mean((method.decode([_CHUNK.pack(hidden, flag), sections[1]], block.shape) - block) ** 2))
                  for flag in (0, 1)]
        assert errors[use_net] <= errors[1 - use_net]


def test_trade_off_search_reports_every_setting_and_keeps_the_best(ct_large):
    chunks = blocks_of(ct_large, (16, 64, 64))[:4]
    target = Target(budget_bytes=16 * 64 * 64 * 2 // 32)
    method = build_method("sr", {**FAST, "factors": "auto", "channels": 4, "sr_steps": 10, "steps": 30})
    notes = method.fit_shared(chunks, FitTargets((target,) * 4, 8))
    table = notes[1].split(": ", 1)[1].split("; ")
    assert [row.split(" ")[0] for row in table] == ["1x1x1/4ch", "1x2x2/4ch", "2x2x2/4ch"]
    scores = [float(row.split(" ")[1]) for row in table]
    chosen = table[int(np.argmin(scores))].split("/")[0]
    assert f"factors {chosen}," in notes[0]


@pytest.mark.slow
def test_sr_round_trips_through_plain_zarr_in_a_fresh_process_3d_and_4d(save, tmp_path, ct_large, mri4d_crop):
    # The MRI's SIRENs need more than FAST's steps: each as wide as its budget buys, this crop came
    # out 2-4 dB above the mean's PSNR after 150 steps (the bound below is 3), 8.6 dB after 300.
    for name, volume, ratio, params in (("ct", ct_large[:16], 16, FAST),
                                        ("mri", mri4d_crop, 24, {**FAST, "factors": "1x1x2x2", "steps": 300})):
        dst = tmp_path / f"{name}.zarr"
        result = compress(save(volume, f"{name}.npy"), str(dst), method="sr", ratio=ratio, method_params=params,
                          progress=False)
        assert abs(volume.nbytes / local_stored_bytes(dst) - ratio) / ratio < 0.05
        here = zarr.open_array(str(dst), mode="r")[...]
        assert here.shape == volume.shape and here.dtype == volume.dtype and result.method == "sr"
        assert_fresh_read_matches(dst, here, tmp_path)
        assert psnr(volume, here) > psnr(volume, np.full(volume.shape, volume.mean())) + 3


def test_scale_is_parsed_per_axis():
    assert parse_scale("0.5", 3) == (0.5, 0.5, 0.5)
    assert parse_scale("1,0.5,0.25", 3) == (1.0, 0.5, 0.25)
    assert parse_scale(2, 2) == (2.0, 2.0)
    for bad in ("0", "1,2", "x", "-1", "9"):
        with pytest.raises(InputError, match="scale"):
            parse_scale(bad, 3)
    assert scaled_shape((16, 65, 1), (0.5, 0.5, 0.5)) == (8, 32, 1)
    assert supersampling_offsets((1.0, 1.0)) == [(0.0, 0.0)]
    assert len(supersampling_offsets((1.0, 0.5))) == 2


@pytest.fixture(scope="module")
def siren_array(tmp_path_factory, ct):
    """The 16x64x64 CT crop as a siren array of 16x32x32 chunks (a real, fast coordinate method)."""
    root = tmp_path_factory.mktemp("scaled")
    np.save(root / "ct.npy", ct)
    dst = root / "ct.zarr"
    compress(str(root / "ct.npy"), str(dst), method="siren", ratio=8, chunks=(16, 32, 32),
             method_params={"steps": 150, "batch": 4096}, progress=False)
    return dst, zarr.open_array(str(dst), mode="r")[...]


def test_scale_one_is_the_full_decode(siren_array):
    dst, full = siren_array
    same = read_scaled(str(dst), 1)
    assert same.dtype == full.dtype and same.shape == full.shape
    assert np.abs(same.astype(np.int32) - full).max() <= 1  # float32 coordinates, then rounding


def test_half_scale_matches_the_averaged_full_decode_and_regions_agree(siren_array, ct):
    dst, full = siren_array
    half = read_scaled(str(dst), 0.5)
    assert half.shape == (8, 32, 32)
    averaged = full.astype(np.float64).reshape(8, 2, 32, 2, 32, 2).mean(axis=(1, 3, 5))
    original = ct.astype(np.float64).reshape(8, 2, 32, 2, 32, 2).mean(axis=(1, 3, 5))
    # A plain SIREN is fitted at voxel centres: two points per cell miss what it does between them
    # (measured 0.5-4.4 dB on the half_scale study's crops; fitted for it, below, within 0.16 dB).
    assert psnr(original, half) > psnr(original, averaged) - 5.0
    region = read_scaled(str(dst), 0.5, (slice(0, 16), slice(32, 64), slice(0, 64)))
    assert np.array_equal(region, half[:, 16:32, :])  # chunk-aligned region: the same voxels
    anisotropic = read_scaled(str(dst), "1,0.25,0.5")
    assert anisotropic.shape == (16, 16, 32)


def test_pieces_come_in_chunk_order_and_tile_the_output(siren_array):
    dst, _ = siren_array
    reader = ScaledReader(str(dst), 0.5)  # chunks are evaluated on a thread pool
    pieces = list(reader.pieces())
    assert len(pieces) == reader.piece_count() == 4
    assert [tuple(s.start for s in where) for where, _ in pieces] == [(0, 0, 0), (0, 0, 16), (0, 16, 0), (0, 16, 16)]
    out = np.zeros(reader.output_shape(), dtype=np.int64)
    for where, values in pieces:
        assert values.shape == out[where].shape
        out[where] += 1
    assert (out == 1).all()


def test_cli_decompresses_at_a_scale(siren_array, tmp_path):
    dst, _ = siren_array
    out = tmp_path / "half.npy"
    proc = subprocess.run([sys.executable, "-m", "streamcomp.cli", "decompress", str(dst), str(out), "--scale", "0.5",
                           "--quiet"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "8x32x32" in proc.stdout
    cli, api = np.load(out), read_scaled(str(dst), 0.5)
    differ = cli != api
    assert not differ.any(), f"{differ.sum()} voxels differ, by up to {np.abs(cli.astype(float) - api).max()}"


def test_methods_without_a_continuous_representation_refuse_to_scale(save, tmp_path, ct):
    dst = tmp_path / "w.zarr"
    compress(save(ct), str(dst), method="wavelet", ratio=8, method_params={"entropy": "context"}, progress=False)
    with pytest.raises(InputError, match="cannot decode at another scale"):
        read_scaled(str(dst), 0.5)
    lossless = tmp_path / "l.zarr"
    compress(save(ct), str(lossless), method="siren", lossless=True, progress=False)
    with pytest.raises(InputError, match="full resolution only"):
        read_scaled(str(lossless), 0.5)


def test_a_cell_evaluation_averages_the_first_layer_exactly():
    torch.manual_seed(0)
    net = FunnelSiren(3, [12, 8])
    x = torch.rand(5, 3) * 2 - 1
    spread = torch.tensor([0.1, 0.0, 0.05])
    corners = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=3))) * spread
    mean_first = torch.stack([net.body[0](x + c) for c in corners]).mean(0)
    first = net.body[0]
    damped = first(x) * torch.cos(spread * first.w0 * first.linear.weight).prod(-1)
    assert torch.allclose(mean_first, damped, atol=1e-5)
    with torch.no_grad():  # no spread: the point value
        assert torch.allclose(net.forward_cells(x, torch.zeros(3)), net(x), atol=1e-6)


@pytest.mark.parametrize("ndim, widths", [(3, [12, 8]), (4, [22, 10, 10, 10])])
def test_stored_weights_evaluate_as_the_network_does(ndim, widths):
    torch.manual_seed(0)
    net = FunnelSiren(ndim, widths)
    tensors = linear_tensors(net)
    assert [t.shape for t in tensors] == linear_shapes(ndim, widths)
    stored = SirenWeights(tensors, net.body[0].w0)
    x = torch.rand(300, ndim) * 2 - 1
    spread = torch.linspace(0.0, 0.1, ndim)
    with torch.no_grad():
        assert torch.allclose(stored(x), net(x), atol=1e-5)
        assert torch.allclose(stored.forward_cells(x, spread), net.forward_cells(x, spread), atol=1e-5)


def test_half_scale_cells_are_the_pair_means_of_every_axis_subset(mri4d_crop):
    block = normalize(mri4d_crop[:3, :4, :5, :6])[0]  # an odd axis drops its last voxel
    cells = half_scale_cells(block)
    assert len(cells.counts) == 2**4 - 1 and int(cells.counts.sum()) == len(cells.values)
    every = cells.starts[-1], cells.counts[-1]  # the last group pairs every axis
    assert int(every[1]) == 1 * 2 * 2 * 3
    first = int(every[0])
    assert torch.allclose(cells.values[first, 0], torch.tensor(float(block[:2, :2, :2, :2].mean())), atol=1e-5)
    half_spacing = torch.tensor([1 / 2, 1 / 3, 1 / 4, 1 / 5])  # 1 / (n - 1): half of [-1, 1] / (n - 1)
    assert torch.allclose(cells.centres[first], -1 + half_spacing)  # between the first two voxels
    assert torch.allclose(cells.spread[first], half_spacing)
    picks = cells.sample(4000, torch.Generator().manual_seed(0))
    assert int(picks.max()) < len(cells.values)
    groups = torch.bucketize(picks, cells.starts, right=True) - 1
    assert len(torch.unique(groups)) == len(cells.counts)  # every group, however few its cells


def test_a_siren_fitted_for_half_scale_reads_each_voxel_once(save, tmp_path, ct, monkeypatch):
    dst = tmp_path / "half.zarr"
    params = {"steps": 150, "batch": 4096, "half_scale_weight": 4.0}
    compress(save(ct), str(dst), method="siren", ratio=8, chunks=(16, 32, 32), method_params=params, progress=False)
    full = zarr.open_array(str(dst), mode="r")[...].astype(np.float64)
    points = []
    original_decode_at = SirenMethod.decode_at
    monkeypatch.setattr(SirenMethod, "decode_at", lambda self, s, shape, c: points.append(len(c))
                        or original_decode_at(self, s, shape, c))
    half = read_scaled(str(dst), 0.5)
    assert not points  # cells, not supersampled points
    original = ct.astype(np.float64).reshape(8, 2, 32, 2, 32, 2).mean(axis=(1, 3, 5))
    averaged = full.reshape(8, 2, 32, 2, 32, 2).mean(axis=(1, 3, 5))
    assert psnr(original, half) > psnr(original, averaged) - 1.0
    assert read_scaled(str(dst), "1,0.5,0.5").shape == (16, 32, 32) and not points
    read_scaled(str(dst), 0.25)  # not a halving: points, two per output voxel
    assert points == [2 * 4 * 8 * 8] * 4  # four chunks of 4x8x8 output voxels


def test_half_scale_weight_is_validated_and_only_siren_has_it():
    with pytest.raises(InputError, match="half_scale_weight"):
        build_method("siren", {"half_scale_weight": -1.0})
    with pytest.raises(InputError, match="no parameter"):
        build_method("sci", {"half_scale_weight": 1.0})
    assert "half_scale_weight" not in build_method("siren", {}).params.stored()  # as before it existed
    assert build_method("siren", {"half_scale_weight": 4}).params.stored()["half_scale_weight"] == 4.0


@pytest.mark.parametrize("shape", [(5,), (3, 7), (4, 1, 9), (2, 3, 4, 5)])
def test_coords_at_equals_indexing_the_whole_grid(shape):
    # The fits draw their batches' coordinates by index instead of indexing a block-sized grid:
    # the same values, so the same fits, without the grid's memory.
    index = torch.randint(0, int(np.prod(shape)), (500,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(coords_at(index, shape), grid(shape)[index])
