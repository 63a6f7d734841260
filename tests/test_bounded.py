"""Lossless and maximum-error modes: the exact coder, every dtype, the bound on every voxel, the
encode-time guarantee check, and the CLI / API / job / archive paths through plain zarr."""

import json

import numpy as np
import pytest
import zarr
from helpers import DATA, ROOT, SAMPLE, assert_fresh_read_matches, run_fresh_python

from streamcomp.api import compress
from streamcomp.archive import archive
from streamcomp.archive.discover import MANIFEST
from streamcomp.cli import main, mode_of
from streamcomp.coding import exact
from streamcomp.coding.bands import NEIGHBOUR_CAP, Lattice, clear_winner, levels_for, log_magnitudes, subbands
from streamcomp.coding.exact import MAX_RANGE, ExactPlan, decode_exact, encode_exact
from streamcomp.errors import ChunkFormatError, InputError
from streamcomp.format import bounded, bounded_fit
from streamcomp.format import chunk as chunk_module
from streamcomp.format.bounded import BoundViolation, step_for
from streamcomp.format.bounded_fit import fit_bounded_model
from streamcomp.format.chunk import decode_chunk, encode_chunk
from streamcomp.format.codec import codec_config_of
from streamcomp.format.frame import FORMAT_VERSION, SUPPORTED_DTYPES
from streamcomp.methods import build_method
from streamcomp.verify import evaluate

METHOD = build_method("unicompress")


def _bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype.kind != "f":
        return a.dtype == b.dtype and np.array_equal(a, b)
    u = f"u{a.dtype.itemsize}"
    return a.dtype == b.dtype and bool(np.all((a.view(u) == b.view(u)) | (np.isnan(a) & np.isnan(b))))


def _max_error(a: np.ndarray, b: np.ndarray) -> float:
    finite = np.isfinite(a.astype(np.float64))
    return float(np.abs(a[finite].astype(np.float64) - b[finite].astype(np.float64)).max(initial=0.0))


@pytest.mark.parametrize("shape", [(16, 64, 64), (5, 17, 3), (1, 9, 1), (1, 1, 1), (3, 6, 10, 12)])
def test_exact_coder_round_trips_any_shape(ct, shape):
    rng = np.random.default_rng(0)
    real = ct.astype(np.int64)[tuple(slice(0, n) for n in shape[-3:])]
    x = np.broadcast_to(real, shape) + rng.integers(-3, 4, shape) if len(shape) == 4 else real
    assert np.array_equal(decode_exact(encode_exact(x), shape), x)
    wide = rng.integers(0, MAX_RANGE, shape)
    assert np.array_equal(decode_exact(encode_exact(wide), shape), wide)


def test_exact_coder_takes_9_7_m_on_smooth_data_and_5_3_on_labels(ct, em):
    labels = np.arange(16 * 64 * 64).reshape(16, 64, 64) // 700 % 5
    for x, longer in ((ct.astype(np.int64), True), (em.astype(np.int64), True), (labels, False)):
        data = encode_exact(x)
        assert bool(data[0] & 0x20) == longer
        assert np.array_equal(decode_exact(data, x.shape), x)


def test_planar_choice_without_plans_matches_the_planned_estimates(ct_large, em):
    """Where the two transforms' log-magnitudes differ clearly the coder skips planning both; the
    pick must be the one the plans' estimated bits make (EM: per section, CT: volumetric)."""
    for x, planar in ((em.astype(np.int32) // 9, True), (ct_large.astype(np.int32) // 3, False)):  # E = 4, E = 1
        sizes = {p: log_magnitudes(subbands(x, levels_for(x.shape, p), p, "9/7-M")) for p in (False, True)}
        assert clear_winner(sizes) is planar
        estimates = {p: exact._plan(x.shape, p, subbands(x, levels_for(x.shape, p), p, "9/7-M"))[1] for p in sizes}
        assert min(estimates, key=estimates.__getitem__) is planar
        assert exact._chosen(x)[0] is planar and exact._chosen(x)[3] is None  # decided without plans
    assert clear_winner({False: 100.0, True: 103.0}) is None  # close: both get planned


def test_log_magnitudes_looked_up_are_the_formulas_sums(ct_large):
    """The table serves integer magnitudes below 2**16, the formula the rest: both sum exactly what
    the formula alone sums, over views and contiguous bands, at the table's edge and at a signed
    type's minimum (whose absolute value wraps to itself)."""
    x = ct_large.astype(np.int32)
    bands = [
        *subbands(x, levels_for(x.shape, False), False, "9/7-M"),
        np.array([[-70000, 3], [65535, -65536]]),
        np.array([65535, -65535, 0], np.int32),
        np.array([-128, 127, -1], np.int8),
        np.array([-(2**31), 5], np.int32),
        np.zeros((0, 3), np.int64),
        np.array([1.5, -2.25], np.float32),
    ]
    for band in bands:
        formula = float(np.log2(1.0 + np.abs(band, dtype=np.float32)).sum(dtype=np.float64))
        assert log_magnitudes([band]) == formula, band.dtype


def test_integer_levels_are_the_float_levels_and_within_the_bound_by_arithmetic(ct, em):
    """Integer data's levels are taken in integer arithmetic (no float64 pass) and their check is
    skipped as unable to fail: the same levels as the float formula, and every voxel within E."""
    rng = np.random.default_rng(3)
    extremes = [
        rng.integers(2**31 - 3000, 2**32, (4, 8, 8), dtype=np.uint32),
        np.array([-(2**31), 2**31 - 1, 0, -5], np.int32),
        np.array([-128, 127, 3], np.int8),
        np.array([0, 255, 17], np.uint8),
    ]
    for block in (ct, em, ct.astype(np.int32) * 9 - 7, *extremes):
        vmin, vmax = float(block.min()), float(block.max())
        for E in (0, 1, 2, 7, 8, 16, 37, 2**20):
            step = step_for(block.dtype, E)
            assert bounded._within_by_arithmetic(block.dtype, vmin, vmax, step, E)
            levels = bounded._levels(block, vmin, step)
            assert np.array_equal(levels, np.floor((block.astype(np.float64) - vmin) / step + 0.5))
            assert bounded.within(bounded.reconstruct(levels, vmin, vmax, step, block.dtype), block, E)
    assert not bounded._within_by_arithmetic(np.dtype(np.float32), 0.0, 10.0, 3.0, 1)
    assert not bounded._within_by_arithmetic(np.dtype(np.int16), 0.0, 10.0, 5.0, 1)  # a step too wide: checked


def test_under_a_learned_model_a_close_planar_choice_goes_by_first_order_estimates(ct_large):
    """Where the log-magnitudes are close and the array's model will code the levels, both
    orientations' first-order estimates decide, without planning the hand-set classes: on these
    real head CT crops (close on every one, volumetric and planar winning) they pick what the plans
    pick."""
    crops = ((ct_large[8:24, 32:96, 32:96], 9), (ct_large[8:24, 32:96, 32:96], 17), (ct_large[:16], 33))
    for crop, step in crops:
        x = (crop.astype(np.int32) - int(ct_large.min())) // step
        bands = {p: subbands(x, levels_for(x.shape, p), p, "9/7-M") for p in (False, True)}
        assert clear_winner({p: log_magnitudes(b) for p, b in bands.items()}) is None
        estimates = {p: exact._plan(x.shape, p, b)[1] for p, b in bands.items()}
        planar, _, _, plans = exact._chosen(x, learned=True)
        assert planar is min(estimates, key=estimates.__getitem__) and plans is None
        assert exact._chosen(x)[0] is planar


def test_section_kinds_are_told_apart_on_estimates_as_coding_both_would(ct_large):
    """Head CT at E = 16: the layered section's estimate is clearly the shorter, so only it is coded
    (and the section is what coding both and keeping the shorter gives); a lossy layer alone
    longer than a limit is dropped before its residual is quantized."""
    block, E = ct_large, 16
    vmin, vmax, step = float(block.min()), float(block.max()), step_for(block.dtype, E)
    sections = bounded.planned_sections(block, block, vmin, vmax, step, E)
    assert [s.kind for s in sections] == [bounded.LAYERED]
    both = [bounded.Section(bounded.LEVELS, ExactPlan(bounded._levels(block, vmin, step))), sections[0]]
    section, layer = bounded.encode_bounded(block, vmin, vmax, E)
    assert section == min((s.code(step, None) for s in both), key=len) and layer.lossy == sections[0].layer.lossy
    for section in both:  # the estimates (hand-set bits, no descriptors) are within 3 % of the code
        assert abs(len(section.code(step, None)) - 9 - section.estimate) < 0.03 * section.estimate
    assert bounded._layer(block, vmin, vmax, step, shorter_than=16) is None


def test_layered_shortcuts_pick_what_trying_every_transform_picks(ct_large, em):
    """A layered section takes the orientation the values' levels chose and codes the residual's
    levels by planar 5/3 without trying the others: on CT and EM crops both are what trying
    every transform picks."""
    for block, E in ((ct_large, 8), (ct_large, 16), (em, 8)):
        vmin, vmax, step = float(block.min()), float(block.max()), step_for(block.dtype, E)
        levels = ExactPlan(bounded._levels(block, vmin, step))
        layer = bounded._layer(block, vmin, vmax, step, planar=levels.planar)
        assert layer is not None
        tried = bounded._layer(block, vmin, vmax, step)
        assert tried[0].lossy == layer[0].lossy and np.array_equal(tried[1], layer[1])
        assert exact._chosen(layer[1].astype(np.int32))[:2] == bounded.RESIDUAL_TRANSFORM


def test_exact_coder_refuses_what_it_cannot_code_and_rejects_damage(ct):
    with pytest.raises(ValueError, match="too wide"):
        encode_exact(np.array([0, MAX_RANGE]))
    with pytest.raises(TypeError):
        encode_exact(np.zeros(4, np.float32))
    data = encode_exact(ct.astype(np.int64))
    assert data[0] & 0x10, "today's sections are the compiled coder's"
    for damaged in (data[:1], data[:40], data[:-3], data[:-4], data + bytes(4), bytes([0x7F]) + data[1:]):
        with pytest.raises(ChunkFormatError):
            decode_exact(damaged, ct.shape)


@pytest.mark.parametrize("version", [9, 10])
@pytest.mark.parametrize("bound", [0, 2])
def test_chunks_written_by_formats_9_and_10_still_decode(ct, bound, version):
    """Chunks the format-9 and format-10 encoders wrote (the crop ``ct[:8, :32, :32]``, shipped in
    tests/data; constriction's runs and the compiled coder) decode with today's decoder: its
    tables and transforms may be rewritten for speed, never changed, or every array already
    stored stops decoding."""
    method = build_method("wavelet")
    blob = (DATA / f"format{version}_ct_head_8x32x32_e{bound}.chunk").read_bytes()
    assert blob[4] == version
    decoded = decode_chunk(method, blob)
    original = ct[:8, :32, :32]
    assert decoded.dtype == original.dtype and decoded.shape == original.shape
    assert _max_error(decoded, original) <= bound
    if bound == 0:
        assert _bits_equal(decoded, original)


def test_near_lossless_em_levels_code_shorter_under_a_fitted_context_model():
    """On real EM at E = 4 the model fitted on two crops of the sample and judged on a third pays
    (for an array as large as the whole EM volume: the sample alone is too small to pay for a
    fit); a chunk coded under it decodes only with it, exactly."""
    em = np.load(SAMPLE)
    blocks = [em[:, y : y + 128, x : x + 128] for y in (0, 128) for x in (0, 128)]
    model, note = fit_bounded_model(blocks, 4, em.size)
    assert model is None and "too few to pay for its fit" in note
    model, note = fit_bounded_model(blocks, 4, 30 * 512 * 512)
    assert model is not None and note.endswith("kept"), note
    levels = np.floor(em[:, 64:192, 64:192] / 9 + 0.5).astype(np.int64)
    plain, learned = encode_exact(levels), encode_exact(levels, model)
    assert len(learned) < 0.99 * len(plain) and learned[0] & 0x40
    assert np.array_equal(decode_exact(learned, levels.shape, model), levels)
    with pytest.raises(ChunkFormatError, match="context model"):
        decode_exact(learned, levels.shape)
    with pytest.raises(ChunkFormatError, match="32-bit words"):  # the frame's CRC catches the rest
        decode_exact(learned[:-3], levels.shape, model)


def test_a_plan_under_a_model_ranks_by_first_order_bits_and_codes_as_the_planned_one():
    """Under the array's model a section is ranked by its first-order entropy, without planning
    the hand-set classes; those are planned only when it is coded and its learned code is not
    clearly the shorter, which then gives the bytes a hand-set plan coded under the model gives
    (the learned code, or the hand-set one where the learned code is longer than the classes'
    estimate)."""
    em = np.load(SAMPLE)
    model, _ = fit_bounded_model([em[:, :128, :128], em[:, :128, 128:], em[:, 128:, :128]], 4, 30 * 512 * 512)
    assert model is not None
    levels = np.floor(em[:, 128:, 128:] / 9 + 0.5).astype(np.int64)
    ranked, planned = ExactPlan(levels, model), ExactPlan(levels)
    assert ranked._planned is None  # not planned while only ranked
    assert 0.9 * planned.bits < ranked.bits < 1.1 * planned.bits  # first-order bits: within 10 % of the classes'
    assert ranked.code() == planned.code(model)
    # The classes are planned for the coded section only where the learned code may lose to them.
    assert (ranked._planned is None) == (8 * len(ranked.code()) <= exact.CLASSES_FLOOR * ranked.bits)
    assert np.array_equal(decode_exact(ranked.code(), levels.shape, model), levels)


def test_a_bounded_array_carries_the_model_its_levels_decode_with(tmp_path, save, monkeypatch):
    """The sample is too small to pay for a fit of its own; fitted as a larger array is, the
    model travels in the array's configuration."""
    em = np.load(SAMPLE)
    src = save(em)
    compress(src, str(tmp_path / "small.zarr"), max_error=4, chunks="16,128,128", executor="local", progress=False)
    assert not codec_config_of(zarr.open_array(str(tmp_path / "small.zarr"), mode="r"))["shared"]
    monkeypatch.setattr(bounded_fit, "FIT_MIN_VOXELS", 1)
    for bound in (0, 4):
        dst = str(tmp_path / f"e{bound}.zarr")
        compress(src, dst, max_error=bound, chunks="16,128,128", executor="local", progress=False)
        config = codec_config_of(zarr.open_array(dst, mode="r"))
        assert config["format_version"] == FORMAT_VERSION and config["max_error"] == bound
        # Lossless levels are not worth a model's fit (about 1 % on the shared volumes).
        assert bool(config["shared"]) == (bound > 0)
        assert ("context model" in mode_of(config)) == (bound > 0)
        decoded = zarr.open_array(dst, mode="r")[...]
        assert int(np.abs(decoded.astype(np.int64) - em).max()) <= bound
    assert_fresh_read_matches(str(tmp_path / "e4.zarr"), decoded, tmp_path)


def _blocks(ct):
    """Real CT values cast to each dtype, with NaN, inf and -0.0 in the float blocks."""
    out = {}
    for name in SUPPORTED_DTYPES:
        dtype = np.dtype(name)
        if dtype.kind == "f":
            block = (ct.astype(np.float64) / 7.3).astype(dtype)
            block[0, 0, :3] = [np.nan, np.inf, -np.inf]
            block[1, 1, 1] = -0.0
        else:
            info = np.iinfo(dtype)
            span = min(int(info.max) - int(info.min), int(ct.max()) - int(ct.min()))
            scaled = (ct.astype(np.int64) - int(ct.min())) * span // (int(ct.max()) - int(ct.min()))
            block = (scaled + int(info.min)).astype(dtype)
        out[name] = block
    return out


@pytest.mark.parametrize("name", SUPPORTED_DTYPES)
def test_lossless_is_bit_exact_for_every_dtype_and_edge_chunks(ct, name):
    block = _blocks(ct)[name]
    for valid, chunk_shape in ((block.shape, None), ((11, 50, 37), (16, 64, 64))):
        part = np.ascontiguousarray(block[tuple(slice(0, n) for n in valid)])
        decoded = decode_chunk(METHOD, encode_chunk(METHOD, part, chunk_shape, max_error=0))
        assert _bits_equal(decoded[tuple(slice(0, n) for n in valid)], part)


def test_integral_floats_are_coded_as_integers_and_others_fall_back_exactly(ct):
    integral = ct.astype(np.float32)
    fractional = integral / 3.0
    as_int = encode_chunk(METHOD, ct, max_error=0)
    assert len(encode_chunk(METHOD, integral, max_error=0)) <= len(as_int) + 8
    assert _bits_equal(decode_chunk(METHOD, encode_chunk(METHOD, fractional, max_error=0)), fractional)


def test_every_voxel_within_random_bounds(ct, em):
    """Property-style: random bounds (whole and fractional), real data in every dtype, constant and
    edge chunks; no voxel may ever be off by more than the bound."""
    rng = np.random.default_rng(7)
    blocks = [*_blocks(ct).values(), em, np.full((4, 5, 6), 17, np.int16)]
    for _ in range(40):
        block = blocks[rng.integers(len(blocks))]
        bound = float(rng.choice([rng.integers(1, 40), rng.uniform(0.01, 30.0)]))
        valid = tuple(int(rng.integers(1, n + 1)) for n in block.shape)
        part = np.ascontiguousarray(block[tuple(slice(0, n) for n in valid)])
        decoded = decode_chunk(METHOD, encode_chunk(METHOD, part, block.shape, max_error=bound))
        decoded = decoded[tuple(slice(0, n) for n in valid)]
        assert _max_error(part, decoded) <= bound, (part.dtype, bound, valid)
        assert np.array_equal(np.isnan(part.astype(np.float64)), np.isnan(decoded.astype(np.float64)))


@pytest.mark.parametrize("layered", [False, True])
def test_a_chunk_that_misses_its_bound_is_never_returned(ct, ct_large, monkeypatch, layered):
    block, bound = (ct_large, 16) if layered else (ct, 2)
    real = chunk_module.decode_bounded
    monkeypatch.setattr(chunk_module, "decode_bounded", lambda *a: real(*a) + np.int16(5))
    with pytest.raises(BoundViolation, match="streamcomp bug"):
        encode_chunk(METHOD, block, max_error=bound)


def test_the_check_takes_the_encoders_layer_only_for_its_own_bytes(ct_large):
    """The encoder's check reuses the lossy layer it decoded to form the residual's levels, and
    only where the section holds that layer's very bytes: another layer is decoded from the
    section, so a wrong base can never pass for the written one."""
    block, E = ct_large, 16
    vmin, vmax = float(block.min()), float(block.max())
    section, layer = bounded.encode_bounded(block, vmin, vmax, E)
    assert layer is not None and section[0] == bounded.LAYERED
    args = (section, block.shape, block.dtype, vmin, vmax)
    decoded = bounded.decode_bounded(*args)
    assert _max_error(block, decoded) <= E
    assert np.array_equal(bounded.decode_bounded(*args, None, layer), decoded)
    wrong = layer.base + 100
    others = [
        bounded.Layer(layer.lossy + b"\0\0\0\0", block.shape, vmin, vmax, wrong),  # other bytes
        bounded.Layer(layer.lossy, block.shape, vmin, vmax + 1, wrong),  # another range
        bounded.Layer(layer.lossy, (1, *block.shape), vmin, vmax, wrong),  # another shape
    ]
    for other in others:
        assert np.array_equal(bounded.decode_bounded(*args, None, other), decoded)
    shifted = bounded.Layer(layer.lossy, block.shape, vmin, vmax, wrong)  # used: the check trusts its own
    assert not np.array_equal(bounded.decode_bounded(*args, None, shifted), decoded)


def test_cli_lossless_and_bound_through_plain_zarr_in_a_fresh_process(tmp_path, ct, save, capsys):
    src = save(ct)
    for flag, name in ((["--lossless"], "lossless.zarr"), (["--max-error", "3"], "bound.zarr")):
        dst = str(tmp_path / name)
        assert main(["compress", src, dst, *flag, "--quiet"]) == 0
        assert flag[0][2:] in capsys.readouterr().out.replace("max error", "max-error")
        assert main(["evaluate", src, dst, "--json", "--quiet"]) == 0
        quality = json.loads(capsys.readouterr().out)
        assert quality["bound_met"] is True and quality["max_abs_error"] <= 3
        assert main(["info", dst, "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["mode"].startswith("lossless" if name == "lossless.zarr" else "max error 3")
    code = (
        "import sys, numpy as np, zarr; "
        f"a = zarr.open_array({str(tmp_path / 'lossless.zarr')!r}, mode='r')[...]; "
        f"b = zarr.open_array({str(tmp_path / 'bound.zarr')!r}, mode='r')[...]; "
        f"o = np.load({src!r}); "
        "print(np.array_equal(a, o), a.dtype, int(np.abs(b.astype(int) - o).max()), "
        "any(m in sys.modules for m in ('torch', 'scipy.ndimage')))"
    )
    out = run_fresh_python(code)
    assert out.returncode == 0, out.stderr
    # Decoding never imports torch or scipy.ndimage (over a second of a fresh reader's first read).
    assert out.stdout.split() == ["True", "int16", "3", "False"]


def test_conflicting_or_invalid_targets_fail_before_anything_is_written(tmp_path, ct, save):
    src, dst = save(ct), str(tmp_path / "o.zarr")
    for bad in ({"lossless": True, "max_error": 2}, {"max_error": -1}, {"max_error": float("nan")},
                {"max_error": 1, "ratio": 8}):
        with pytest.raises(InputError):
            compress(src, dst, **bad)
    with pytest.raises(SystemExit):
        main(["compress", src, dst, "--lossless", "--ratio", "8"])
    assert not (tmp_path / "o.zarr").exists()


def test_resume_keeps_the_bound_and_refuses_another(tmp_path, ct, save):
    src, dst = save(ct), str(tmp_path / "o.zarr")
    compress(src, dst, max_error=2, chunks="8,32,32", executor="local", progress=False)
    again = compress(src, dst, max_error=2, chunks="8,32,32", executor="local", progress=False, resume=True)
    assert again.chunks_skipped == 8 and again.chunks_written == 0
    with pytest.raises(InputError, match="error bound"):
        compress(src, dst, max_error=3, chunks="8,32,32", executor="local", progress=False, resume=True)


def test_4d_series_lossless_whatever_the_method(tmp_path, mri4d, save):
    """The exact coder takes any number of axes, even where the named method is 3D only."""
    src, dst = save(mri4d), str(tmp_path / "o.zarr")
    result = compress(src, dst, lossless=True, executor="local", progress=False)
    assert result.coder == "lossless" and result.ratio > 1.5
    array = zarr.open_array(dst, mode="r")
    assert np.array_equal(array[...], mri4d)
    assert array.chunks == tuple(min(c, n) for c, n in zip(bounded.BOUNDED_CHUNKS[4], mri4d.shape, strict=True))


def test_archive_verifies_lossless_volumes_bit_for_bit(tmp_path, ct):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    np.save(src / "ct.npy", ct)
    report = archive(str(src), f"file://{dst}", lossless=True, executor="local", chunks="8,32,32")
    assert report.verified == ["ct.npy"]
    (record,) = [json.loads(line) for line in (dst / MANIFEST).read_text().splitlines()]
    assert record["bit_exact"] is True and record["chunks_verified"] == 8 and record["target"] == {"max_error": 0.0}


def test_compress_job_reports_the_bound(tmp_path, ct, save):
    src, dst = save(ct), str(tmp_path / "o.zarr")
    out = run_fresh_python(
        f"import sys; sys.argv = ['compress_cremi.py', '--input', {src!r}, '--output', {dst!r}, '--max-error', '1', "
        f"'-q']; sys.path.insert(0, {str(ROOT / 'jobs')!r}); import compress_cremi; sys.exit(compress_cremi.main())",
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    assert "max |error| 1 (bound 1: met)" in out.stdout
    assert evaluate(src, dst).bound_met


def test_the_class_table_is_the_exact_classification():
    estimates = np.concatenate([np.arange(300_000), np.random.default_rng(0).integers(0, 1 << 40, 10_000)])
    table = exact._CLASS_OF
    assert np.array_equal(table[np.minimum(estimates, table.size - 1)], exact._classify(estimates))


@pytest.mark.parametrize(("shape", "axes"), [((5, 6, 7), (0, 1, 2)), ((1, 4, 3), (0, 1, 2)), ((3, 1, 5), (1, 2))])
def test_neighbour_sums_wrap_at_the_faces(shape, axes):
    lattice = Lattice(shape, axes)
    first = np.random.default_rng(1).integers(-50, 50, shape)
    known = np.where(lattice.second, 0, np.abs(first))
    expected = sum(np.roll(known, 1, ax) + np.roll(known, -1, ax) for ax in axes)
    assert np.array_equal(lattice.neighbours(first), expected)


def test_capped_neighbour_sums_classify_as_the_full_sums_do():
    """Magnitudes up to the exact coder's widest (2**29) in a 4D band with all 14 siblings: the
    int32 sums of capped neighbours put every position in its exact class."""
    rng = np.random.default_rng(3)
    shape, axes = (4, 6, 6, 6), (0, 1, 2, 3)

    def wide(size):  # mostly small, one in twenty up to 2**29
        return np.where(rng.random(size) < 0.05, rng.integers(-(1 << 29), 1 << 29, size), rng.integers(-50, 50, size))

    lattice = Lattice(shape, axes)
    first = wide(shape)
    siblings = [np.abs(wide(shape)) for _ in range(14)]
    band = exact._Band(lattice, wide((2, 3, 3, 3)), sum(siblings), len(siblings))
    index = lattice.half_index(True)
    known = np.where(lattice.second, 0, np.abs(first))
    near = sum(np.roll(known, 1, ax) + np.roll(known, -1, ax) for ax in axes).reshape(-1)[index]
    count = 2 * len(axes)
    estimate = (64 * (count * band.base.reshape(-1)[index] + 2 * near)) // (count * (band.sources + 2))
    assert (near > NEIGHBOUR_CAP).any() and (estimate < 185_000).any()
    assert np.array_equal(band.classes(first, index), exact._classify(estimate))


def test_an_incompressible_chunk_is_stored_raw_and_decodes_to_a_writable_array():
    noise = np.random.default_rng(2).integers(0, 256, (8, 16, 16), dtype=np.uint8)
    data = encode_chunk(METHOD, noise, max_error=0)
    assert len(data) < noise.nbytes + 100  # raw bytes and their headers, not a 20 % longer code
    decoded = decode_chunk(METHOD, data)
    assert np.array_equal(decoded, noise) and decoded.flags.writeable
