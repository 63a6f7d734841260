"""The `wavelet` method and its learned context model: integer determinism, exact round trips,
budgets, the fit's judgement, and less error than the hand-set models in their bytes on real CT."""

import itertools
import json
import math
import re

import numpy as np
import pytest
import zarr
from helpers import assert_fresh_read_matches

from streamcomp.api import compress
from streamcomp.coding import context_model, fit_context, learned_bands, sign_model
from streamcomp.coding.bands import MAX_LEVELS, buckets, lattices, neighbour_index
from streamcomp.coding.context_model import ContextModel, PairCoder, phase_index, walk_bands
from streamcomp.coding.residual import FILLED, ResidualCoder, decode_residual, encode_residual, step_of
from streamcomp.errors import ChunkFormatError, InputError
from streamcomp.methods import DEFAULT_METHOD, method_class, wavelet
from streamcomp.methods.base import FitTargets, Target
from streamcomp.methods.wavelet import WaveletMethod
from streamcomp.metrics import psnr
from streamcomp.plan import SAMPLE_BLOCKS
from streamcomp.values import normalize

FAST = {"teacher_steps": 150, "student_steps": 300, "filter_channels": 0}  # the post-filter: test_postfilter.py
CHUNK = (8, 64, 64)


def _blocks(volume: np.ndarray, chunk=CHUNK) -> list[np.ndarray]:
    grid = [range(0, n - c + 1, c) for n, c in zip(volume.shape, chunk, strict=True)]
    return [
        normalize(np.ascontiguousarray(volume[z : z + chunk[0], y : y + chunk[1], x : x + chunk[2]]))[0]
        for z in grid[0] for y in grid[1] for x in grid[2]
    ]


@pytest.fixture(scope="module")
def ct_blocks(ct_large):
    return _blocks(ct_large)


@pytest.fixture(scope="module")
def fitted(ct_blocks):
    """A model fitted on the first six CT chunks at ratio 32, judged on the next two."""
    method = method_class("wavelet")(**FAST)
    budget = int(np.prod(CHUNK)) * 2 // 32
    notes = method.fit_shared(ct_blocks[:8], FitTargets(tuple([Target(budget_bytes=budget)] * 8), 64))
    return method, notes, budget


def test_default_method_is_the_learned_wavelet_coder():
    assert DEFAULT_METHOD == "wavelet"


def test_buckets_are_half_octaves():
    x = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 16, 191, 192, 10**9])
    assert buckets(x).tolist() == [0, 1, 2, 3, 4, 4, 5, 5, 6, 6, 7, 8, 14, 15, 15]


@pytest.mark.parametrize("shape, axes", [((5, 7, 9), (0, 1, 2)), ((4, 6, 10), (1, 2)), ((3, 4, 5, 6), (0, 1, 2, 3))])
def test_context_neighbours_wrap_at_the_faces_and_boxes_stop_there(shape, axes):
    """The decoded neighbours a phase's contexts read (odd shapes: every face wraps), and the
    parents' 3x3(x3) sums (zero outside), against np.roll and explicit padding."""
    lattice = lattices([shape], axes)[0]
    grid = np.arange(math.prod(shape)).reshape(shape)

    def rolled(offsets):
        return np.roll(grid, [-o for o in offsets.values()], axis=list(offsets)).reshape(-1)

    for phase in range(3):
        positions = phase_index(lattice, phase)
        if phase == 0:
            offsets = []
        elif phase == 1:
            a, b = axes[-2:]
            offsets = [({a: 1, b: 1}, {a: -1, b: -1}), ({a: 1, b: -1}, {a: -1, b: 1})]
        else:
            offsets = [({ax: 1}, {ax: -1}) for ax in axes]
        expected = np.array([[rolled(o)[positions] for o in pair] for pair in offsets], np.int64)
        assert np.array_equal(neighbour_index(shape, axes, phase, positions), expected.reshape(-1, 2, len(positions)))
    values = np.random.default_rng(0).integers(0, 50, shape)
    padded = np.pad(values, [(1, 1) if a in axes else (0, 0) for a in range(len(shape))])
    windows = itertools.product(*[range(3) if a in axes else [0] for a in range(len(shape))])
    expected = sum(padded[tuple(slice(o, o + n) for o, n in zip(at, shape, strict=True))] for at in windows)
    assert np.array_equal(context_model._box(values, axes), expected)


def test_sign_statistics_split_by_class_as_masks_would():
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 40, 5000)
    stats = sign_model.SignStats.count(classes, rng.integers(-15, 16, (5000, sign_model.SIGN_FEATURES)),
                                       rng.random(5000) < 0.4)
    groups = stats.by_class()
    assert [c for c, _ in groups] == sorted(set(classes.tolist()))
    for cls, rows in groups:
        mask = stats.classes == cls
        assert np.array_equal(rows.keys, stats.keys[mask]) and np.array_equal(rows.positive, stats.positive[mask])


def test_model_survives_its_bytes_and_refuses_damaged_ones(fitted):
    model = fitted[0].model
    blob = model.to_bytes()
    again = ContextModel.from_bytes(blob)
    inputs = np.random.default_rng(0).integers(0, 16, (1000, model.w1.shape[0]))
    assert np.array_equal(again.codes(inputs), model.codes(inputs))
    with pytest.raises(ChunkFormatError, match="truncated|size"):
        ContextModel.from_bytes(blob[:-3])
    with pytest.raises(ChunkFormatError, match="header"):
        ContextModel.from_bytes(b"XXXX" + blob[4:])


def test_sign_model_survives_its_bytes_and_refuses_damaged_ones(fitted):
    model = fitted[0].model
    assert model.signs.weights, "head CT signs follow their neighbours: some class must pay"
    assert MAX_LEVELS <= sign_model.LEVELS  # a deeper transform would need more class slots (a format change)
    blob = model.to_bytes()
    again = ContextModel.from_bytes(blob)
    assert again.signs.weights.keys() == model.signs.weights.keys()
    assert all(np.array_equal(again.signs.weights[c], w) for c, w in model.signs.weights.items())
    features = np.random.default_rng(0).integers(-15, 16, (1000, sign_model.SIGN_FEATURES))
    cls = next(iter(model.signs.weights))
    assert np.array_equal(again.signs.codes(cls, features), model.signs.codes(cls, features))
    with pytest.raises(ChunkFormatError, match="sign model has the wrong size"):
        ContextModel.from_bytes(blob[:-1])
    bad = sign_model.SignModel({sign_model.SIGN_CLASSES: np.zeros(sign_model.SIGN_FEATURES + 1)}).to_bytes()
    with pytest.raises(ChunkFormatError, match="unknown class"):
        ContextModel.from_bytes(blob[: len(blob) - len(model.signs.to_bytes())] + bad)


def test_signs_coded_from_their_neighbours_cost_less_than_a_bit(fitted, ct_blocks):
    """On chunks the fit never saw, the fitted sign model codes the same symbols shorter than signs
    at one bit each: 0.11-0.22 bits per sign on this head CT (0.21-0.26 before the in-plane passes
    were steered along edges, which leaves their neighbours' signs less to say)."""
    model = fitted[0].model
    coin = ContextModel(model.w1, model.b1, model.w2, model.b2, sign_model.SignModel())
    for block in ct_blocks[8:12]:
        coder = ResidualCoder(block, False, model)
        _, symbols, _ = coder.choose(-5.0)
        bits = int(max(np.abs(s).max() for s in symbols)).bit_length()
        args = (coder.lattices, coder.parents, coder.levels, symbols, bits)
        saved = 8 * (learned_bands.size(coin, *args) - learned_bands.size(model, *args))
        assert saved > 0.08 * sum(int((s != 0).sum()) for s in symbols)
        data, decoded = coder.code(-5.0)
        assert np.array_equal(decode_residual(data, block.shape, model), decoded)
    stats = WaveletMethod._sample_stats(ct_blocks, [(-5.0, False)] * 4, range(4))
    assert stats.signs.signs > 0
    without = fit_context.fit_context_model(stats, teacher_steps=5, student_steps=5, signs=False)
    assert not without.student.signs.weights and without.sign_bits == 1.0


def test_a_version_1_model_still_decodes_its_sections(fitted, ct_blocks):
    """Arrays written before the sign model (format 5 and earlier) code signed values under a
    version 1 model: read back exactly as then."""
    model = fitted[0].model
    old = ContextModel(model.w1, model.b1, model.w2, model.b2)
    blob = old.to_bytes()
    assert blob[4] == 1 and ContextModel.from_bytes(blob).signs is None
    block = ct_blocks[9]
    data, decoded = ResidualCoder(block, False, old).code(-5.0)
    assert data != ResidualCoder(block, False, model).code(-5.0)[0]
    assert np.array_equal(decode_residual(data, block.shape, ContextModel.from_bytes(blob)), decoded)
    with pytest.raises(ChunkFormatError, match="wrong size"):
        ContextModel.from_bytes(blob + b"\0\0")


def test_a_version_2_model_still_decodes_its_sections(fitted, ct_blocks):
    """Arrays written before the compiled coder (format 9 and earlier) code runs of equal codes
    through constriction under a version 2 model: read back exactly as then, while today's
    model codes its sections with the compiled coder."""
    model = fitted[0].model
    assert model.compiled and model.to_bytes()[4] == 3
    old = ContextModel.from_bytes(model.to_bytes()[:4] + b"\x02" + model.to_bytes()[5:])
    assert old.version == 2 and not old.compiled and old.to_bytes()[4] == 2
    block = ct_blocks[9]
    data, decoded = ResidualCoder(block, False, old).code(-5.0)
    new_data, new_decoded = ResidualCoder(block, False, model).code(-5.0)
    assert data != new_data
    assert np.array_equal(decode_residual(data, block.shape, old), decoded)
    assert np.array_equal(decode_residual(new_data, block.shape, model), new_decoded)


def test_fit_keeps_a_model_that_pays_and_says_why(fitted):
    method, notes, _ = fitted
    assert method.model is not None and method.shared_state() == method.model.to_bytes()
    assert "context model (student tuned from the shipped start)" in notes[0], notes
    assert "teacher as it is, 64x2 hidden" in notes[0] and "stored student, 16 hidden" in notes[0]
    assert re.search(r"signs from their neighbours in \d+ classes: 0\.\d+ bits/sign", notes[0]), notes
    assert "dB closer in the hand-set models' bytes" in notes[1]


@pytest.mark.parametrize("planar", [False, True])
@pytest.mark.parametrize("shape", [(8, 64, 64), (16, 64, 64), (1, 64, 64), (5, 17, 3), (1, 1, 1)])
def test_decoder_reproduces_the_encoders_reconstruction(fitted, ct_large, shape, planar):
    model = fitted[0].model
    x = normalize(np.ascontiguousarray(ct_large[: shape[0], : shape[1], : shape[2]]))[0]
    data, decoded = ResidualCoder(x, planar, model).code(-6.0)
    assert np.array_equal(decode_residual(data, shape, model), decoded)
    assert np.mean((x - decoded) ** 2) < 1e-4


def test_all_zero_block_is_a_header(fitted):
    model = fitted[0].model
    data, decoded = ResidualCoder(np.zeros(CHUNK, np.float32), False, model).code(-6.0)
    assert len(data) == 6 and not decoded.any()
    assert not decode_residual(data, CHUNK, model).any()


def test_budget_is_filled_not_exceeded(fitted, ct_blocks):
    model, budget = fitted[0].model, fitted[2]
    for block in ct_blocks[8:12]:
        data, decoded = encode_residual(block, budget=budget, model=model)
        assert 0.95 * budget <= len(data) <= budget
        assert np.array_equal(decode_residual(data, block.shape, model), decoded)


def test_the_learned_rate_control_fills_the_budget_in_few_passes(fitted, ct_blocks, monkeypatch):
    passes = []
    choose = ResidualCoder.choose
    monkeypatch.setattr(ResidualCoder, "choose", lambda self, x: passes.append(x) or choose(self, x))
    model, budget = fitted[0].model, fitted[2]
    filled = []
    for ratio in (1, 4):  # the sample's rate, and four times fewer bytes
        for block in ct_blocks[8:12]:
            data, _ = ResidualCoder(block, False, model).fit_budget(budget // ratio)
            filled.append(len(data) / (budget // ratio))
    # At a quarter of the bytes sizes move in stairs: a chunk may have no step in the window (on
    # these chunks the approximation band's largest magnitude crossing 63, the tables' edge, adds
    # ~20 % at one step). The window is on the size estimate, a few bytes from the real one.
    assert min(filled) >= 0.94 and max(filled) <= 1 and sum(f >= FILLED - 0.005 for f in filled) >= 5
    assert len(passes) <= 6 * 8  # from -6 with a fixed first slope: 47; a regula falsi: 8-11 a chunk
    # Both transforms, as chunks are coded: one search, from a trial of each at the first guess.
    passes.clear()
    for block in ct_blocks[8:12]:
        encode_residual(block, budget=budget, model=model)
    assert len(passes) <= 5 * 4  # running both searches took 9-11 a chunk on EM


def test_learned_model_codes_unseen_chunks_shorter_than_the_hand_set_models(fitted, ct_blocks):
    """Same quantized coefficients (the hand-set coder's own step), so only the modelling differs."""
    model, budget = fitted[0].model, fitted[2]
    learned = hand = 0
    for block in ct_blocks[8:]:
        log2_step, planar = step_of(encode_residual(block, budget=budget)[0])
        hand += len(ResidualCoder(block, planar).code_bytes(log2_step))
        learned += len(ResidualCoder(block, planar, model).code_bytes(log2_step))
    assert hand > 0 and learned < 0.95 * hand


@pytest.mark.parametrize("ratio", [16, 64, 256])
def test_the_fits_sample_steps_are_the_hand_set_rate_controls(ct_large, ratio):
    """The fit reads each sample's step off its rate estimate, scaled by one hand-set coding,
    instead of running the hand-set rate control: the same transform and the same step within a
    tenth of an octave, on real CT chunks 32 sections deep."""
    chunk = (32, 64, 64)
    budget = int(np.prod(chunk)) * 2 // ratio
    for block in _blocks(ct_large, chunk):
        log2_step, planar = step_of(encode_residual(block, budget=budget)[0])
        read, read_planar = WaveletMethod._sample_step(block, Target(budget_bytes=budget))
        assert abs(read - log2_step) < 0.1 and read_planar == planar


def test_a_fit_on_rows_drawn_by_their_symbols_codes_as_well_as_the_full_batch(ct_blocks):
    """Past four times ``batch_rows`` context rows each step trains on rows drawn in proportion to
    their symbols: the unseen chunks' bits stay within 1 % of the full-batch fit's (batches small
    enough that a few real CT chunks take that path)."""

    steps = [(-4.0, False)] * len(ct_blocks)
    train = WaveletMethod._sample_stats(ct_blocks, steps, range(6))
    unseen = WaveletMethod._sample_stats(ct_blocks, steps, range(8, len(ct_blocks)))
    assert len(train.inputs) > 2000

    def unseen_bits(batch_rows: int) -> float:
        fitted = fit_context.fit_context_model(train, teacher_steps=150, student_steps=300, batch_rows=batch_rows)
        return fit_context.integer_bits(fitted.student, unseen) / unseen.symbols

    full = unseen_bits(len(train.inputs))
    sampled = unseen_bits(500)
    assert sampled < 1.01 * full


def test_rdoq_trades_error_for_bytes_where_its_model_says_it_pays(fitted, ct_blocks):
    """Without a price on bits it rounds; with one, every coefficient holds the cheapest of its
    candidates under the context the decoder will see, the whole costs less error + lambda * bits
    than the dead zone's or plain rounding's symbols, and the size it reports is the coder's."""
    model = fitted[0].model
    coder = ResidualCoder(ct_blocks[9], False, model)
    step, dead = coder.quantize(-5.0)
    scaled = [b / np.float32(step) for b in coder.bands]
    args = (model, coder.lattices, coder.parents, coder.levels)
    rounded, _, _ = learned_bands.rdoq(*args, scaled, lam=0.0)
    assert all(np.array_equal(r, np.rint(b)) for r, b in zip(rounded, scaled, strict=True))

    chosen, bits, size = learned_bands.rdoq(*args, scaled)
    pairs = PairCoder(bits, compiled=model.compiled)
    lengths = pairs.lengths()
    lam = learned_bands.RDOQ_LAMBDA

    def check(band, base, phase, idx, keys, site):
        values = chosen[band].reshape(-1)[idx]
        c = np.abs(scaled[band].reshape(-1)[idx]).astype(np.float64)
        top = np.floor(c + 0.5)
        m = np.abs(values)
        assert np.all((m <= top) & (m >= top - learned_bands.RDOQ_DEPTH))
        assert np.all((values == 0) | (np.sign(values) == np.sign(scaled[band].reshape(-1)[idx])))
        live = (top > 0) & (top <= pairs.edge)
        at = model.pairs(base, phase, keys)[live]
        c, m, top = c[live], m[live], top[live]
        # A nonzero pays its sign's bits under the sign code its decoded neighbours give it.
        positive = (scaled[band].reshape(-1)[idx][live] >= 0).astype(np.int64)
        codes = model.signs.codes(site.cls, site.features(np.flatnonzero(live)), merge=not model.compiled)
        sign = sign_model.LENGTHS[codes, positive]
        own = (c - m) ** 2 + lam * (lengths[at, m] + (m > 0) * sign)
        for down in range(learned_bands.RDOQ_DEPTH + 1):
            cand = np.maximum(top - down, 0).astype(np.int64)
            other = (c - cand) ** 2 + lam * (lengths[at, cand] + (cand > 0) * sign)
            assert np.all(own <= other + 1e-9)
        return values

    walk_bands(*args[1:], check)

    def cost(symbols):
        b = int(max(np.abs(q).max() for q in symbols)).bit_length()
        error = sum(float(((q - v) ** 2).sum()) for q, v in zip(symbols, scaled, strict=True))
        return error + lam * 8 * learned_bands.size(*args, symbols, b)

    assert size == learned_bands.size(*args, chosen, bits)
    assert abs(len(learned_bands.encode(*args, chosen, bits)) - size) <= 16
    assert cost(chosen) < min(cost(dead), cost(rounded))
    assert sum(int((q != 0).sum()) for q in chosen) < sum(int((q != 0).sum()) for q in rounded)
    # At a step where no coefficient rounds past 2 and bits priced high, every one drops to zero:
    # the symbols' bit length falls with them, and nothing is left to code.
    coarse = [b / np.float32(max(float(np.abs(x).max()) for x in coder.bands) / 2.2) for b in coder.bands]
    assert learned_bands.rdoq(*args, coarse, lam=0.0)[1] == 2
    zeros, bits, size = learned_bands.rdoq(*args, coarse, lam=1e4)
    assert bits == 0 and size == 0 and not any(q.any() for q in zeros)


def test_the_context_start_survives_its_bytes_and_seeds_the_students_fit(ct_blocks, tmp_path):
    import torch

    from streamcomp.models.start_points import read_start

    start = fit_context.ContextStart.from_bytes(read_start("shipped", fit_context.start_name(16)))
    assert (start.hidden, start.teacher_hidden) == (16, 64)
    again = fit_context.ContextStart.from_bytes(start.to_bytes())
    for a, b in zip([*again.teacher.parameters(), *again.student.parameters()],
                    [*start.teacher.parameters(), *start.student.parameters()], strict=True):
        assert torch.equal(a, b)
    stats = WaveletMethod._sample_stats(ct_blocks, [(-5.0, False)] * 4, range(4))
    untouched = fit_context.fit_context_model(stats, student_steps=0, start=start).student
    as_shipped = fit_context.to_integer(start.student)
    as_shipped.signs = untouched.signs  # the sign model is the array's own either way
    assert untouched.to_bytes() == as_shipped.to_bytes()
    tuned = fit_context.fit_context_model(stats, student_steps=50, start=start)
    assert tuned.student_bits < fit_context.integer_bits(untouched, stats) / stats.symbols
    with pytest.raises(ValueError, match="cannot seed"):
        fit_context.fit_context_model(stats, hidden=32, start=start)
    assert read_start("shipped", fit_context.start_name(32)) is None  # no such start: fitted from scratch
    np.savez(tmp_path / "old.npz", **{"teacher.0.weight": np.zeros((4, 3)), "student.0.weight": np.zeros((4, 3))})
    with pytest.raises(ValueError, match="retrain the starts"):
        fit_context.ContextStart.from_bytes((tmp_path / "old.npz").read_bytes())
    (tmp_path / fit_context.start_name(16)).write_bytes(b"not an npz")
    method = method_class("wavelet")(**FAST, start=str(tmp_path))
    budget = int(np.prod(CHUNK)) * 2 // 32
    with pytest.raises(InputError, match="context_16hidden.npz: not a context model start"):
        method.fit_shared(ct_blocks[:8], FitTargets(tuple([Target(budget_bytes=budget)] * 8), 64))


def test_without_a_start_the_fit_distills_its_own_teacher(ct_blocks):
    method = method_class("wavelet")(**FAST, start="none")
    budget = int(np.prod(CHUNK)) * 2 // 32
    notes = method.fit_shared(ct_blocks[:8], FitTargets(tuple([Target(budget_bytes=budget)] * 8), 64))
    assert "context model (teacher and student fitted)" in notes[0] and "teacher fitted, 32x2 hidden" in notes[0]
    assert method.model is not None


def test_decoding_needs_the_model_the_section_was_coded_under(fitted, ct_blocks):
    data, _ = ResidualCoder(ct_blocks[0], False, fitted[0].model).code(-6.0)
    with pytest.raises(ChunkFormatError, match="learned context model"):
        decode_residual(data, CHUNK, None)


def test_a_model_that_does_not_pay_is_dropped(ct_blocks):
    """One data chunk carries the whole model's bytes: at this rate it cannot pay for them."""
    method = method_class("wavelet")(teacher_steps=5, student_steps=5, filter_channels=0)
    small = [b[:4, :16, :16] for b in ct_blocks[:8]]
    notes = method.fit_shared(small, FitTargets(tuple([Target(budget_bytes=64)] * 8), 1))
    assert "dropped" in notes[-1]
    assert method.model is None and method.shared_state() == b""
    data = method.encode(small[0], Target(budget_bytes=64))
    assert np.isfinite(method.decode(data, small[0].shape)).all()


def test_the_fit_sample_is_bounded_by_voxels_and_the_pipeline_reads_that_many(ct_large, save, tmp_path, monkeypatch):
    """About fit_voxels of samples (chunks, or their FIT_CROP tiles where larger), never fewer than
    MIN_FIT_CHUNKS nor more than the pipeline's SAMPLE_BLOCKS; the pipeline hands the fit exactly
    that many of the array's chunks."""
    method = method_class("wavelet")(fit_voxels=10 * 4096)
    assert method.fit_sample_chunks((1, 64, 64)) == 10
    assert method.fit_sample_chunks((64, 128, 128)) == wavelet.MIN_FIT_CHUNKS
    assert method_class("wavelet")(fit_voxels=1 << 40).fit_sample_chunks((1, 64, 64)) == SAMPLE_BLOCKS
    crop = math.prod(wavelet.FIT_CROP[3])
    assert method_class("wavelet")(fit_voxels=10 * crop).fit_sample_chunks((64, 512, 512)) == 10
    seen, fit = [], WaveletMethod.fit_shared

    def counted(self, samples, targets=None):
        seen.append(len(samples))
        return fit(self, samples, targets)

    monkeypatch.setattr(WaveletMethod, "fit_shared", counted)
    compress(save(ct_large, "ct.npy"), str(tmp_path / "a.zarr"), ratio=16, chunks="8,32,32",
             method_params={**FAST, "fit_voxels": 10 * 8 * 32 * 32}, progress=False)
    assert seen == [10]  # of the array's 64 chunks


def test_the_fit_learns_from_tiles_of_large_chunks_at_their_chunks_bytes_per_voxel():
    """Chunks larger than FIT_CROP are cut on its grid (edge tiles smaller); ``count`` tiles are
    drawn, the same ones every time, each with its chunk's bytes per voxel; error targets stay."""
    big, edge = np.zeros((64, 256, 256), np.float32), np.ones((20, 256, 100), np.float32)
    targets = FitTargets((Target(budget_bytes=40000), Target(max_mse=1e-4)), 5)
    tiles, scaled = wavelet.fit_crops([big, edge], targets, count=100)
    assert [t.shape for t in tiles] == [(64, 128, 128)] * 4 + [(20, 128, 100)] * 2
    assert [t.budget_bytes for t in scaled.targets[:4]] == [10000] * 4
    assert scaled.targets[4:] == (Target(max_mse=1e-4),) * 2 and scaled.data_chunks == 5
    drawn, again = (wavelet.fit_crops([big, edge], targets, count=3)[0] for _ in range(2))
    assert len(drawn) == 3 and all(a.shape == b.shape and (a == b).all() for a, b in zip(drawn, again, strict=True))
    assert wavelet.fit_crops([big], None, count=2)[1] is None


def test_a_run_in_chunks_larger_than_the_fit_crop_fits_on_their_tiles(ct_large, save, tmp_path, monkeypatch):
    """The pipeline hands the fit whole chunks; the fit learns from their tiles (here 8x16x16 of
    8x32x32 chunks), and the array still lands on its ratio and reads back through zarr."""
    monkeypatch.setattr(wavelet, "FIT_CROP", {3: (8, 16, 16), 4: wavelet.FIT_CROP[4]})
    shapes, crops = [], wavelet.fit_crops

    def spied(samples, targets, count, seed=0):
        tiles, scaled = crops(samples, targets, count, seed)
        shapes.append(({s.shape for s in samples}, {t.shape for t in tiles}, len(tiles)))
        return tiles, scaled

    monkeypatch.setattr(wavelet, "fit_crops", spied)
    dst = str(tmp_path / "a.zarr")
    result = compress(save(ct_large, "ct.npy"), dst, ratio=16, chunks="8,32,32",
                      method_params={**FAST, "fit_voxels": 10 * 8 * 16 * 16}, progress=False)
    assert shapes == [({(8, 32, 32)}, {(8, 16, 16)}, 10)]  # 10 of the 10 sample chunks' 40 tiles
    assert abs(result.ratio / 16 - 1) < 0.05
    assert psnr(ct_large, zarr.open_array(dst, mode="r")[...]) > 30


def test_parameters_are_checked():
    with pytest.raises(InputError, match="fit_voxels"):
        method_class("wavelet")(fit_voxels=0)
    with pytest.raises(InputError, match="entropy"):
        method_class("wavelet")(entropy="magic")
    with pytest.raises(InputError, match="distill"):
        method_class("wavelet")(distill=2.0)
    with pytest.raises(InputError, match="'signs' must be bool"):
        method_class("wavelet")(signs="yes")


@pytest.mark.slow
def test_compress_beats_the_hand_set_models_and_reads_back_with_plain_zarr(ct_large, save, tmp_path):
    src = save(ct_large, "ct.npy")
    scores = {}
    for entropy in ("learned", "context"):
        dst = str(tmp_path / f"{entropy}.zarr")
        result = compress(src, dst, ratio=32, chunks=CHUNK, method_params={**FAST, "entropy": entropy}, progress=False)
        assert result.method == "wavelet"
        assert abs(result.raw_bytes / result.stored_bytes / 32 - 1) < 0.05
        decoded = zarr.open_array(dst, mode="r")[...]
        scores[entropy] = psnr(ct_large, decoded, peak=float(ct_large.max()) - float(ct_large.min()))
    assert scores["learned"] > scores["context"] + 0.3
    meta = json.loads((tmp_path / "learned.zarr" / "zarr.json").read_text())
    assert meta["codecs"][0]["configuration"]["shared"]  # the model travels with the array
    store = tmp_path / "learned.zarr"
    assert_fresh_read_matches(store, zarr.open_array(str(store), mode="r")[...], tmp_path)


def test_4d_series_round_trip(mri4d, save, tmp_path):
    dst = str(tmp_path / "mri.zarr")
    result = compress(save(mri4d, "mri.npy"), dst, method="wavelet", ratio=8, chunks=(2, 8, 32, 32),
                      method_params=FAST, progress=False)
    decoded = zarr.open_array(dst, mode="r")[...]
    assert decoded.shape == mri4d.shape and abs(result.raw_bytes / result.stored_bytes / 8 - 1) < 0.05
    assert psnr(mri4d, decoded, peak=float(mri4d.max()) - float(mri4d.min())) > 30


@pytest.mark.parametrize(
    ("shape", "axes"), [((9, 17, 12), (0, 1, 2)), ((5, 16, 16), (1, 2)), ((4, 6, 8, 10), (0, 1, 2, 3))]
)
def test_context_keys_are_the_buckets_of_their_sources(shape, axes):
    """A position's key: the buckets of its parent's magnitude, of the parent's 3x3(x3)
    neighbourhood, of its decoded neighbours' summed magnitudes (capped past the last bucket) and of
    its decoded siblings, in bits 0-3, 4-7, 8-11 and 12-15 (numpy's formula, element by element)."""
    rng = np.random.default_rng(5)
    lattice = lattices([shape], axes)[0]
    parent_shape = tuple((n + 1) // 2 if ax in axes else n for ax, n in enumerate(shape))
    parent = rng.integers(-400, 400, parent_shape) * (rng.random(parent_shape) < 0.5)
    siblings = context_model.LevelSums([shape])
    siblings.add(rng.integers(-300, 300, shape))
    ctx = context_model.BandContexts(lattice, parent, siblings)
    mag = np.abs(parent).astype(np.int64)
    expected = (
        buckets(lattice.parent(mag))
        | buckets(lattice.parent(context_model._box(mag, axes))) << 4
        | buckets(lattice.fit(siblings.total)) << 12
    )
    decoded = rng.integers(-200, 200, shape).astype(np.int32)
    for phase in range(context_model.PHASES):
        idx = ctx.positions(phase)
        around = decoded.reshape(-1)[neighbour_index(shape, axes, phase, idx)]
        near = buckets(np.abs(around).sum(axis=(0, 1), dtype=np.int64)) << 8 if len(around) else 0
        assert np.array_equal(ctx.keys(phase, around), expected.reshape(-1)[idx] | near)
