"""The wavelet method's post-filter: it changes nothing untrained, survives its bytes, filters in
slabs exactly as in one pass, lowers the error of real CT chunks it never saw, is kept or skipped
by its judgement, and arrays that use it decode through plain zarr in a fresh process."""

import json
import struct

import numpy as np
import pytest
import torch
import zarr
from helpers import SAMPLE, assert_fresh_read_matches

from streamcomp.api import compress
from streamcomp.coding.residual import encode_residual, is_filtered, step_of
from streamcomp.errors import ChunkFormatError, InputError
from streamcomp.format.frame import FORMAT_VERSION
from streamcomp.methods import method_class
from streamcomp.methods.base import FitTargets, Target
from streamcomp.metrics import psnr
from streamcomp.models import postfilter
from streamcomp.values import normalize

CHUNK = (8, 64, 64)
RATIO = 32
FAST = {"entropy": "context", "filter_steps": 300, "filter_tune_steps": 150}


@pytest.fixture(scope="module")
def sample_em() -> np.ndarray:
    return np.load(SAMPLE)


def _pairs(volume: np.ndarray) -> list[postfilter.Pair]:
    """Every 8x64x64 chunk of ``volume``, normalized as the pipeline does and coded at RATIO."""
    out = []
    for z in range(0, volume.shape[0], CHUNK[0]):
        for y in range(0, volume.shape[1], CHUNK[1]):
            for x in range(0, volume.shape[2], CHUNK[2]):
                block = normalize(np.ascontiguousarray(volume[z : z + 8, y : y + 64, x : x + 64]))[0]
                data, decoded = encode_residual(block, budget=block.size * 2 // RATIO)
                out.append(postfilter.Pair(decoded.astype(np.float32), block, 2.0 ** step_of(data)[0]))
    return out


@pytest.fixture(scope="module")
def ct_pairs(ct_large):
    return _pairs(ct_large)


def _sse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum((a - b) ** 2))


def _randomized(depth: int, channels: int, std: float, seed: int = 0) -> postfilter.PostFilter:
    """A filter of random weights, the same whatever ran before (torch's global generator aside)."""
    net = postfilter.PostFilter(depth, channels)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * std)
    return net


def test_an_untrained_filter_changes_nothing_and_survives_its_bytes():
    x = np.random.default_rng(0).normal(size=(5, 20, 24)).astype(np.float32)
    assert np.array_equal(postfilter.apply(postfilter.PostFilter(3, 4), x, 0.1), x)
    net = _randomized(3, 4, 0.1)
    blob = net.to_bytes()
    # int8 weights with a float16 scale per output channel, float16 biases.
    weights = sum(p.numel() for p in net.parameters()) - 9
    assert len(blob) == 7 + weights + 4 * 9
    again = postfilter.PostFilter.from_bytes(blob)
    assert again.to_bytes() == blob  # what a decoder rebuilds is what the encoder judged with
    assert np.array_equal(postfilter.apply(again, x, 0.1), postfilter.apply(net.stored(), x, 0.1))
    exact = postfilter.apply(net, x, 0.1) - x
    assert np.abs(postfilter.apply(again, x, 0.1) - x - exact).max() < 0.02 * np.abs(exact).max()
    with pytest.raises(ChunkFormatError, match="expected"):
        postfilter.PostFilter.from_bytes(blob[:-2])
    with pytest.raises(ChunkFormatError, match="magic"):
        postfilter.PostFilter.from_bytes(b"XXXX" + blob[4:])
    with pytest.raises(ChunkFormatError, match="upgrade streamcomp"):
        postfilter.PostFilter.from_bytes(blob[:4] + bytes([9]) + blob[5:])
    with pytest.raises(ChunkFormatError, match="invalid"):
        postfilter.PostFilter.from_bytes(blob[:5] + bytes([2]) + blob[6:])


def test_a_version_1_filter_still_decodes():
    """Arrays written before the int8 format stored every parameter in float16."""
    net = _randomized(1, 8, 0.2)
    params = torch.cat([p.detach().reshape(-1) for p in net.parameters()]).numpy()
    old = struct.pack("<4sBBB", b"SCPF", 1, 1, 8) + params.astype("<f2").tobytes()
    again = postfilter.PostFilter.from_bytes(old)
    x = np.random.default_rng(2).normal(size=(4, 16, 16)).astype(np.float32)
    reloaded = [p.detach().numpy().reshape(-1) for p in again.parameters()]
    assert np.array_equal(np.concatenate(reloaded), params.astype(np.float16).astype(np.float32))
    assert np.allclose(postfilter.apply(again, x, 0.5), postfilter.apply(net, x, 0.5), atol=2e-2)


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("shape", [(40, 12, 16), (3, 37, 9, 11)])
@pytest.mark.parametrize("slab_voxels", [1000, 1])  # slabs of 5 and 3 sections, or of one
def test_slabs_give_what_one_pass_gives(depth, shape, slab_voxels, monkeypatch):
    """Each slab reads its neighbours' sections beyond its inner faces (fewer near the chunk's
    faces) and filters only its own."""
    monkeypatch.setattr(postfilter, "SLAB_VOXELS", slab_voxels)
    monkeypatch.setattr(postfilter, "BFLOAT16", False)  # the same precision as the reference pass
    torch.manual_seed(0)
    net = _randomized(depth, 4, 0.3)
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    mean, spread = float(x.mean()), float(x.std()) + 0.05
    with torch.no_grad():
        whole = net.correct(torch.from_numpy(x).reshape(-1, 1, *shape[-3:]), mean, spread, 0.05).reshape(shape)
    assert np.allclose(postfilter.apply(net, x, 0.05), whole.numpy(), atol=1e-5)


def test_a_trained_filter_lowers_the_error_of_unseen_ct_chunks(ct_pairs):
    """Every fourth chunk held out, as the method's judgement does (a split by halves of the head
    trains on one side and tests on the other, which a filter fitted on 12 tiny chunks does not bridge)."""
    test = ct_pairs[3::4]
    train = [p for i, p in enumerate(ct_pairs) if i % 4 != 3]
    net = postfilter.fit(train, 3, 8, 300, 3e-3, 0)
    before = sum(_sse(p.decoded, p.original) for p in test)
    after = sum(_sse(postfilter.apply(net, p.decoded, p.step), p.original) for p in test)
    assert after < 0.95 * before  # more than 0.2 dB on chunks it never saw


def test_bfloat16_filtering_corrects_as_float32_does(ct_pairs, monkeypatch):
    """Where the CPU has bfloat16 the filter runs in it (emulated here where it has not): the
    correction stays within a few hundredths of a quantizer step of float32's (0.014 at most, 0.0002
    on average, measured), the error within 0.1 %."""
    net = postfilter.fit(ct_pairs[:4], 3, 8, 100, 3e-3, 0)
    for p in ct_pairs[4:8]:
        runs = {}
        for low in (False, True):
            monkeypatch.setattr(postfilter, "BFLOAT16", low)
            runs[low] = postfilter.apply(net, p.decoded, p.step)
        diff = np.abs(runs[True] - runs[False])
        assert diff.max() < 0.05 * p.step and diff.mean() < 0.002 * p.step
        assert abs(_sse(runs[True], p.original) / _sse(runs[False], p.original) - 1) < 1e-3


@pytest.fixture(scope="module")
def filtered_method(ct_pairs):
    """The wavelet method fitted on eight CT chunks at RATIO, as part of a 64-chunk array."""
    method = method_class("wavelet")(**FAST)
    samples = [p.original for p in ct_pairs[:8]]
    budget = samples[0].size * 2 // RATIO
    notes = method.fit_shared(samples, FitTargets(tuple([Target(budget_bytes=budget)] * 8), 64))
    return method, notes, budget


def test_a_filter_that_pays_is_kept_and_travels_in_the_shared_state(filtered_method, ct_pairs):
    method, notes, budget = filtered_method
    assert "post-filter" in notes[-1] and notes[-1].endswith("kept"), notes
    state = method.shared_state()
    fresh = method_class("wavelet")()
    fresh.load_shared_state(state)
    assert fresh.filter is not None and fresh.model is None
    filtered = 0
    for pair in ct_pairs[8:]:
        sections = method.encode(pair.original, Target(budget_bytes=budget))
        plain, _ = encode_residual(pair.original, budget=budget)
        assert len(sections[0]) == len(plain)  # the flag costs no byte
        decoded = fresh.decode(sections, pair.original.shape)
        if is_filtered(sections[0]):
            filtered += 1
            # The encoder sets the flag only where filtering lowers this chunk's error.
            assert _sse(decoded, pair.original) < _sse(pair.decoded, pair.original)
        else:
            assert np.array_equal(decoded, pair.decoded)
    assert filtered >= len(ct_pairs[8:]) // 2
    bare = method_class("wavelet")()
    bare.load_shared_state(b"")
    coded = (method.encode(p.original, Target(budget_bytes=budget)) for p in ct_pairs[8:])
    flagged = next(sections for sections in coded if is_filtered(sections[0]))
    with pytest.raises(ChunkFormatError, match="post-filter"):
        bare.decode(flagged, CHUNK)
    with pytest.raises(ChunkFormatError):
        fresh.load_shared_state(state[:-3])


def test_a_small_array_skips_the_filter_without_training():
    method = method_class("wavelet")(entropy="context")
    blocks = [np.random.default_rng(i).random((4, 16, 16), np.float32) for i in range(4)]
    notes = method.fit_shared(blocks, FitTargets(tuple([Target(budget_bytes=256)] * 4), 4))
    assert [n[: n.index(" channels")] for n in notes] == ["post-filter (8", "post-filter (4"], notes
    assert all("skipped: too many bytes" in n for n in notes)
    assert method.filter is None and method.shared_state() == b""


def test_a_filter_too_big_for_the_array_is_tried_at_half_its_channels_and_judged_on_edge_chunks(ct_pairs):
    """A one-chunk array (32768 voxels): the 8-channel filter's 3 KB would cost it more than any
    filter gains, the 4-channel one's 0.9 KB would not. The thin chunk is judged, not trained on."""
    method = method_class("wavelet")(**FAST)
    samples = [p.original for p in ct_pairs[:4]] + [ct_pairs[4].original[:2]]
    budgets = [s.size * 2 // 8 for s in samples]
    notes = method.fit_shared(samples, FitTargets(tuple(Target(budget_bytes=b) for b in budgets), 1))
    big, half = notes[-2:]
    assert big.startswith("post-filter (8 channels") and "skipped: too many bytes" in big, notes
    assert half.startswith("post-filter (4 channels") and "trained" in half, notes
    # Chunk 3 is held out, chunk 4 (two sections) is the edge: trained on three, judged on two.
    assert "on 3 sample chunks" in half and "on 2 held-out and edge chunks" in half, half
    assert (method.filter is not None) == half.endswith("kept")


def test_a_run_that_targets_an_error_skips_the_filter(ct_pairs):
    """Its rate control meets the error without the filter, which would then only add bytes."""
    method = method_class("wavelet")(**FAST)
    samples = [p.original for p in ct_pairs[:4]]
    notes = method.fit_shared(samples, FitTargets(tuple([Target(max_mse=1e-3)] * 4), 64))
    assert "targets an error" in notes[-1] and method.filter is None and method.shared_state() == b""


def test_filter_parameters_are_checked():
    with pytest.raises(InputError, match="filter_channels"):
        method_class("wavelet")(filter_channels=65)
    with pytest.raises(InputError, match="filter_steps"):
        method_class("wavelet")(filter_steps=-1)


@pytest.mark.slow
def test_compress_with_the_filter_gains_and_reads_back_with_plain_zarr(sample_em, save, tmp_path):
    """The bundled EM sample (2 megavoxels) at 8x: large enough for the filter's 2 KB to pay."""
    src = save(sample_em, "em.npy")
    scores = {}
    for channels in (8, 0):
        dst = str(tmp_path / f"f{channels}.zarr")
        result = compress(src, dst, ratio=8, chunks=(15, 64, 64), method_params={**FAST, "filter_channels": channels},
                          progress=False)
        assert abs(result.raw_bytes / result.stored_bytes / 8 - 1) < 0.05
        decoded = zarr.open_array(dst, mode="r")[...]
        scores[channels] = psnr(sample_em, decoded, peak=float(sample_em.max()) - float(sample_em.min()))
    assert scores[8] > scores[0] + 0.15, scores
    meta = json.loads((tmp_path / "f8.zarr" / "zarr.json").read_text())
    assert meta["codecs"][0]["configuration"]["format_version"] == FORMAT_VERSION
    store = tmp_path / "f8.zarr"
    assert_fresh_read_matches(store, zarr.open_array(str(store), mode="r")[...], tmp_path)


@pytest.mark.parametrize(("depth", "channels"), [(1, 4), (1, 8), (3, 4), (3, 8)])
@pytest.mark.parametrize("grad", [False, True])
def test_every_path_computes_replicate_padded_3d_convolutions(depth, channels, grad):
    """3x3x3 filters run as 3D convolutions (through oneDNN, at inference their one-channel first and
    last layers as 2D convolutions of the sections and their activations fused in, in float32 and
    in bfloat16 under autocast), in-plane ones as 2D convolutions of each section; inference pads
    by copying faces, training through F.pad: all equal the plain definition (in bfloat16 within
    its rounding)."""
    torch.manual_seed(0)
    net = _randomized(depth, channels, 0.3)
    x = torch.randn(2, 1, 5, 20, 24)
    h = x
    for i, conv in enumerate(net.convs):
        padded = torch.nn.functional.pad(h, (1, 1, 1, 1, depth // 2, depth // 2), mode="replicate")
        h = torch.nn.functional.conv3d(padded, conv.weight, conv.bias)
        h = torch.nn.functional.leaky_relu(h, 0.1) if i < len(net.convs) - 1 else h
    with torch.set_grad_enabled(grad):  # float32 rounding of sums taken in another order
        assert torch.allclose(net(x), h, atol=5e-6 * float(h.detach().abs().max()))
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):  # the same paths in bfloat16
        assert torch.allclose(net(x).float(), h, atol=0.05 * float(h.abs().max()))
    for axes in (2, 3):
        reference = torch.nn.functional.pad(x[:, 0], (1, 1) * axes, mode="replicate")
        assert torch.equal(postfilter.replicate_pad(x[:, 0], axes), reference)


def test_a_fit_begins_at_its_start_and_only_from_one_of_its_shape(ct_pairs):
    start = _randomized(3, 8, 0.1)
    net = postfilter.fit(ct_pairs[:2], 3, 8, 0, 3e-3, 0, start)
    for a, b in zip(net.parameters(), start.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="cannot seed"):
        postfilter.fit(ct_pairs[:2], 3, 4, 0, 3e-3, 0, start)


def test_starts_load_from_the_package_or_a_folder_and_a_bad_name_is_refused(tmp_path, monkeypatch):
    for depth in (1, 3):
        shipped = postfilter.load_start("shipped", depth, 8)
        assert (shipped.depth, shipped.channels) == (depth, 8)
        assert any(p.abs().sum() > 0 for p in shipped.convs[-1].parameters())  # trained, not the zero start
    assert postfilter.load_start("shipped", 3, 4) is None  # no start of that shape: from zeros
    assert postfilter.load_start("none", 3, 8) is None
    assert postfilter.load_start(str(tmp_path), 3, 8) is None
    with pytest.raises(ValueError, match="start must be"):
        postfilter.load_start(str(tmp_path / "missing"), 3, 8)
    with pytest.raises(InputError, match="no such folder"):
        method_class("wavelet")(start=str(tmp_path / "missing"))
    monkeypatch.chdir(tmp_path)  # a relative folder is kept absolute: workers may run elsewhere
    assert method_class("wavelet")(start=".").params.start == str(tmp_path.resolve())


def test_a_fit_fine_tunes_the_shipped_start_for_its_own_steps(filtered_method):
    """The array is 64 chunks of 32768 voxels: 512 steps from zeros, fewer (filter_tune_steps) from a start."""
    _, notes, _ = filtered_method
    assert "fine-tuned from the shipped start 150 steps" in notes[-1], notes


def test_starts_trained_on_other_volumes_get_further_than_scratch_on_unseen_ct(ct_pairs, tmp_path):
    """Starts trained (by the module that made the shipped ones) on the bundled EM sample and an
    MRI crop, then tuned on CT chunks: the post-filter from its start removes 8 % of the held-out
    error and ends within 5 % of the same training from zeros (10 %; it was ahead before the
    transform was steered along edges, whose CT artefacts EM and MRI teach less; whole volumes: at
    parity, the README), and the context model codes held-out chunks shorter than a teacher and
    student fitted from scratch (the README measures both on whole volumes)."""
    from helpers import DATA

    from streamcomp.coding import fit_context
    from streamcomp.methods import starts
    from streamcomp.methods.wavelet import WaveletMethod

    record = starts.train([str(SAMPLE), str(DATA / "mri4d_dwi_toshiba_4x20x32x32_u16.npy")], tmp_path, 400)
    assert set(record["starts"]) == {"postfilter_1x3x3_8ch.bin", "postfilter_3x3x3_8ch.bin", "context_16hidden.npz"}
    assert json.loads((tmp_path / "starts.json").read_text()) == record
    start = postfilter.load_start(str(tmp_path), 3, 8)
    test = ct_pairs[3::4]
    train = [p for i, p in enumerate(ct_pairs) if i % 4 != 3]
    errors = {}
    unfiltered = sum(_sse(p.decoded, p.original) for p in test)
    for name, begun in (("zeros", None), ("start", start)):
        net = postfilter.fit(train, 3, 8, 200, 3e-3, 0, begun)
        errors[name] = sum(_sse(postfilter.apply(net, p.decoded, p.step), p.original) for p in test)
    assert errors["start"] < 0.95 * unfiltered, (errors, unfiltered)
    assert errors["start"] < 1.05 * errors["zeros"], errors

    context = fit_context.ContextStart.from_bytes((tmp_path / "context_16hidden.npz").read_bytes())
    blocks = [p.original for p in ct_pairs]
    steps = [(-5.0, False)] * len(blocks)
    seen = WaveletMethod._sample_stats(blocks, steps, [i for i in range(len(blocks)) if i % 4 != 3])
    unseen = WaveletMethod._sample_stats(blocks, steps, range(3, len(blocks), 4))
    bits = {}
    for name, begun in (("scratch", None), ("start", context)):
        fitted = fit_context.fit_context_model(seen, teacher_steps=40, student_steps=40, start=begun)
        bits[name] = fit_context.integer_bits(fitted.student, unseen) / unseen.symbols
    assert bits["start"] < bits["scratch"], bits


def test_the_starts_command_says_what_is_wrong(tmp_path, capsys):
    from streamcomp.methods import starts

    with pytest.raises(SystemExit, match="does not exist"):
        starts.main(["--out", str(tmp_path), str(tmp_path / "missing.npy")])
    with pytest.raises(SystemExit):
        starts.main(["--out", str(tmp_path), "--steps", "0", str(SAMPLE)])
    assert "--steps must be at least 1" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written
