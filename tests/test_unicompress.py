"""UniCompress: wavelet prior, codebook, shared fit, distilled student, streaming per-chunk codes."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from helpers import local_stored_bytes, run_fresh_python

from streamcomp.api import compress
from streamcomp.errors import InputError
from streamcomp.format.chunk import decode_chunk, encode_chunk
from streamcomp.format.frame import unpack
from streamcomp.methods import method_class
from streamcomp.methods.unicompress.model import Codebook
from streamcomp.methods.unicompress.prior import wavelet_components
from streamcomp.metrics import psnr
from streamcomp.models.coords import grid
from streamcomp.values import normalize

TINY = {
    "pretrain_steps": 4, "teacher_steps": 60, "student_steps": 40, "finetune_steps": 4,
    "max_tiles": 32, "batch": 8, "train_points": 1024,
}
# The student is fitted only when asked for (the default, modes=residual, fits nothing).
AUTO = {**TINY, "modes": "auto"}
DRIVER_LOG = "streamcomp.pipeline.driver"


@pytest.fixture(scope="module")
def fitted(em):
    method = method_class("unicompress")(**AUTO)
    assert method.needs_fit()
    # no targets: nothing to judge the student against, so it is kept and there is nothing to say
    assert method.fit_shared([normalize(em[:, y : y + 64, x : x + 64])[0] for y in (0, 64) for x in (0, 64)]) == []
    assert method.net is not None
    return method


def test_wavelet_prior_splits_raw_into_low_and_high(em):
    low, high, raw = wavelet_components(em[None, :8, :32, :32].astype(np.float32))
    assert np.allclose(low + high, raw, atol=1e-4)
    assert np.abs(np.diff(low, axis=-1)).mean() < np.abs(np.diff(raw, axis=-1)).mean()


def test_codebook_quantizes_to_nearest_codeword_with_straight_through_gradient():
    cb = Codebook(8, 4)
    z = torch.randn(3, 5, 4, requires_grad=True)
    zq, idx, loss = cb(z)
    dists = ((z[..., None, :] - cb.embedding) ** 2).sum(-1)
    assert torch.equal(idx, dists.argmin(-1))
    assert torch.allclose(zq, cb.embedding[idx], atol=1e-6)
    (zq.sum() + loss).backward()
    assert z.grad is not None and cb.embedding.grad is not None


def test_shared_state_round_trips_and_encode_does_not_retrain(fitted, em):
    blob = fitted.shared_state()
    before = {k: v.clone() for k, v in fitted.net.state_dict().items()}
    block = np.ascontiguousarray(em[:, 64:, 64:])
    data = encode_chunk(fitted, block, budget_bytes=block.size // 8)
    assert len(data) <= block.size // 8
    assert all(torch.equal(before[k], v) for k, v in fitted.net.state_dict().items())
    assert fitted.shared_state() == blob
    fresh = method_class("unicompress")(**fitted.stored_params())
    fresh.load_shared_state(blob)
    assert np.array_equal(decode_chunk(fresh, data), decode_chunk(fitted, data))
    assert psnr(block, decode_chunk(fresh, data)) > psnr(block, np.full_like(block, int(block.mean()))) + 1


def test_decode_at_other_scale_agrees_with_the_voxel_grid(fitted, em):
    block = np.ascontiguousarray(em[:8, :32, :32])
    data = encode_chunk(fitted, block, budget_bytes=block.size // 4)
    frame = unpack(data)
    full = fitted.decode(frame.sections, frame.valid)
    at = fitted.decode_at(frame.sections, frame.valid, grid(frame.valid)).reshape(frame.valid)
    assert np.allclose(full, at, atol=1e-5)
    upsampled = fitted.decode_at(frame.sections, frame.valid, grid((16, 64, 64)))
    assert upsampled.shape == (16 * 64 * 64,) and np.isfinite(upsampled).all()


def test_end_to_end_default_modes_plain_zarr(save, tmp_path, em, caplog):
    src = save(em)
    dst = tmp_path / "uc.zarr"
    result = compress(src, str(dst), method="unicompress", ratio=16, chunks=(16, 64, 64), method_params=TINY,
                      progress=False)
    assert result.method == "unicompress"
    meta = json.loads((dst / "zarr.json").read_text())["codecs"][0]["configuration"]
    # the default codes every chunk by its wavelet residual: nothing fitted, no shared state
    assert meta["method"] == "unicompress" and meta["shared"] == "" and meta["params"]["modes"] == "residual"
    assert abs(em.nbytes / local_stored_bytes(dst) - 16) / 16 < 0.05
    # 16x leaves 16 kB for everything, less than the student's ~21 kB of shared state: with
    # modes=auto it is not even fitted, so a ratio the student would make impossible is met.
    auto = tmp_path / "auto.zarr"
    with caplog.at_level(logging.INFO, logger=DRIVER_LOG):
        compress(src, str(auto), method="unicompress", ratio=16, chunks=(16, 64, 64), method_params=AUTO,
                 progress=False)
    meta = json.loads((auto / "zarr.json").read_text())["codecs"][0]["configuration"]
    assert meta["shared"] == "" and meta["params"]["modes"] == "auto"
    notes = [r.getMessage() for r in caplog.records if r.name == DRIVER_LOG and r.levelno == logging.INFO]
    assert any(n.startswith("unicompress: the rate leaves no room next to the student's shared state, so it "
                            "was not fitted") for n in notes), notes
    assert abs(em.nbytes / local_stored_bytes(auto) - 16) / 16 < 0.05
    with pytest.raises(InputError, match="impossible ratio"):
        compress(src, str(tmp_path / "inr.zarr"), method="unicompress", ratio=16, chunks=(16, 64, 64),
                 progress=False, method_params={**TINY, "modes": "inr"})
    code = f"import zarr; a = zarr.open_array({str(dst)!r})[...]; print(a.dtype, a.shape)"
    proc = run_fresh_python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["uint8", "(16,", "128,", "128)"]


def test_cross_domain_teacher_is_reused(save, tmp_path, em, ct):
    teacher = tmp_path / "em_teacher.pt"
    compress(save(em), str(tmp_path / "a.zarr"), method="unicompress", ratio=8, chunks=(16, 64, 64),
             method_params={**AUTO, "save_teacher": str(teacher)}, progress=False)
    assert teacher.exists()
    dst = str(tmp_path / "b.zarr")
    compress(save(ct, "ct.npy"), dst, method="unicompress", ratio=4, chunks=(16, 64, 64),
             method_params={**TINY, "teacher": str(teacher), "modes": "inr"}, progress=False)
    meta = json.loads(Path(dst, "zarr.json").read_text())["codecs"][0]["configuration"]
    assert len(meta["shared"]) > 1000 and len(meta["shared_sha256"]) == 64
    assert all(unpack(Path(f).read_bytes()).sections[0] for f in Path(dst, "c").rglob("*") if f.is_file())
    out = zarr.open_array(dst, mode="r")[...]
    assert psnr(ct, out) > psnr(ct, np.full(ct.shape, ct.mean()))
    with pytest.raises(InputError, match="another architecture"):
        compress(save(ct, "ct2.npy"), str(tmp_path / "c.zarr"), method="unicompress", ratio=4,
                 method_params={**TINY, "teacher": str(teacher), "modes": "inr", "dim": 8}, progress=False)


@pytest.mark.parametrize("ablation", [{"prior": "raw"}, {"prior": "low,raw"}, {"kd_code": 0, "kd_logits": 0},
                                      {"kd_out": 0}])
def test_ablations_run(em, ablation):
    method = method_class("unicompress")(**{**AUTO, **ablation})
    method.fit_shared([normalize(em[:, :64, :64])[0]])
    assert method.net is not None
    data = encode_chunk(method, np.ascontiguousarray(em[:8, :32, :32]), budget_bytes=1024)
    assert decode_chunk(method, data).shape == (8, 32, 32)


def test_framed_chunks_never_exceed_their_budget(em):
    """The residual fills its budget to the byte; the frame's length word for each of the three
    sections must already be taken out of it."""
    method = method_class("unicompress")(modes="residual")
    method.load_shared_state(b"")
    block = np.ascontiguousarray(em[:, :64, :64])
    sizes = {b: len(encode_chunk(method, block, budget_bytes=b)) for b in range(3000, 3200, 7)}
    assert all(size <= b for b, size in sizes.items())
    assert max(size - b for b, size in sizes.items()) >= -8  # and it does fill them


def test_bad_prior_is_refused():
    with pytest.raises(InputError, match="prior"):
        method_class("unicompress")(prior="ultraviolet")


def test_encoder_keeps_the_payload_with_the_lowest_error(fitted, em):
    block = np.ascontiguousarray(em[:, 64:, 64:])
    errors, sections = {}, {}
    for modes in ("auto", "inr", "residual"):
        method = method_class("unicompress")(**TINY, modes=modes)
        method.load_shared_state(fitted.shared_state())
        data = encode_chunk(method, block, budget_bytes=block.size // 8)
        assert len(data) <= block.size // 8
        sections[modes] = [len(s) for s in unpack(data).sections]
        errors[modes] = float(np.mean((decode_chunk(fitted, data).astype(float) - block) ** 2))
    assert sections["residual"][:2] == [0, 0] and all(sections["inr"])
    assert errors["auto"] <= min(errors["inr"], errors["residual"]) + 1e-9


def test_latent_share_codes_a_refined_latent_grid_within_the_budget(fitted, em):
    """Off by default (an all-zero grid); with a share, the refined grid takes about that share."""
    block = np.ascontiguousarray(em[:, 64:, 64:])
    budget = block.size // 8
    sizes = {}
    for share in (0.0, 0.2):
        method = method_class("unicompress")(**TINY, modes="inr", latent_share=share, refine_steps=5)
        method.load_shared_state(fitted.shared_state())
        data = encode_chunk(method, block, budget_bytes=budget)
        assert len(data) <= budget
        sizes[share] = len(unpack(data).sections[1])
        assert psnr(block, decode_chunk(fitted, data)) > 20
    assert sizes[0.0] < 32 and 0.1 * budget < sizes[0.2] <= 0.2 * budget
    with pytest.raises(InputError, match="latent_share"):
        method_class("unicompress")(latent_share=1.5)


def test_bad_modes_are_refused():
    with pytest.raises(InputError, match="modes"):
        method_class("unicompress")(modes="everything")


def test_residual_mode_fits_nothing_and_stores_no_shared_state_in_its_larger_default_chunks(save, tmp_path, em):
    dst = tmp_path / "residual.zarr"
    compress(save(em), str(dst), method="unicompress", ratio=8, progress=False)  # the default modes and chunks
    meta = json.loads((dst / "zarr.json").read_text())["codecs"][0]["configuration"]
    assert meta["method"] == "unicompress" and meta["params"]["modes"] == "residual" and meta["shared"] == ""
    assert zarr.open_array(str(dst), mode="r").chunks == (16, 128, 128)  # 32x128x128 clipped to the crop
    assert abs(em.nbytes / local_stored_bytes(dst) - 8) / 8 < 0.05
    assert psnr(em, zarr.open_array(str(dst), mode="r")[...]) > 25


def test_auto_modes_under_a_psnr_target_judge_the_student_by_bytes(save, tmp_path, em, caplog):
    dst = tmp_path / "q.zarr"
    with caplog.at_level(logging.INFO, logger=DRIVER_LOG):
        compress(save(em), str(dst), method="unicompress", psnr=30, chunks=(16, 64, 64), method_params=AUTO,
                 progress=False)
    meta = json.loads((dst / "zarr.json").read_text())["codecs"][0]["configuration"]
    notes = [r.getMessage() for r in caplog.records if r.name == DRIVER_LOG]
    dropped = [n for n in notes if n.startswith("unicompress: ") and "did not pay for its shared state (bytes" in n]
    assert (meta["shared"] == "") == bool(dropped), notes
    assert psnr(em, zarr.open_array(str(dst), mode="r")[...]) >= 30


def test_teacher_network_codes_chunks_in_the_students_place(save, tmp_path, em):
    """The paper's teacher, measured at equal bytes: stored with the architecture decoders need."""
    dst = tmp_path / "teacher.zarr"
    params = {**TINY, "modes": "inr", "network": "teacher", "prior": "high,raw"}
    compress(save(em), str(dst), method="unicompress", ratio=4, chunks=(16, 64, 64), method_params=params,
             progress=False)
    meta = json.loads((dst / "zarr.json").read_text())["codecs"][0]["configuration"]
    assert {k: meta["params"][k] for k in ("network", "teacher_hidden", "prior")} == {
        "network": "teacher", "teacher_hidden": 48, "prior": "high,raw"
    }
    assert all(unpack(Path(f).read_bytes()).sections[0] for f in Path(dst, "c").rglob("*") if f.is_file())
    code = f"import zarr, numpy; numpy.save({str(tmp_path / 'out.npy')!r}, zarr.open_array({str(dst)!r})[...])"
    proc = run_fresh_python(code)
    assert proc.returncode == 0, proc.stderr
    assert psnr(em, np.load(tmp_path / "out.npy")) > 25

    teacher = method_class("unicompress")(**{**params, "latent_share": 0.2, "refine_steps": 2})
    teacher.fit_shared([normalize(em[:, :64, :64])[0]])
    block = np.ascontiguousarray(em[:, 64:, 64:])
    data = encode_chunk(teacher, block, budget_bytes=block.size // 4)
    assert len(unpack(data).sections[1]) > 32  # a latent grid from the teacher's prior-fed encoder
    fresh = method_class("unicompress")(**teacher.stored_params())
    fresh.load_shared_state(teacher.shared_state())
    assert np.array_equal(decode_chunk(fresh, data), decode_chunk(teacher, data))
    with pytest.raises(InputError, match="network"):
        method_class("unicompress")(network="both")


def test_coarser_token_patch_codes_fewer_indices(em):
    """At rates where a chunk's indices at the default 2x8x8 patch would exceed its budget."""
    block = np.ascontiguousarray(em[:, 64:, 64:])
    index_bytes = {}
    for patch in ("2x8x8", "4x16x16"):
        method = method_class("unicompress")(**TINY, modes="inr", patch=patch)
        method.fit_shared([normalize(em[:, :64, :64])[0]])
        data = encode_chunk(method, block, budget_bytes=block.size // 8)
        index_bytes[patch] = len(unpack(data).sections[0])
        fresh = method_class("unicompress")(**method.stored_params())
        fresh.load_shared_state(method.shared_state())
        assert np.array_equal(decode_chunk(fresh, data), decode_chunk(method, data))
        assert psnr(block, decode_chunk(fresh, data)) > 20
    assert index_bytes["4x16x16"] * 3 < index_bytes["2x8x8"]  # 8x fewer tokens, each under a flatter prior
    for bad in ("2x8", "3x8x8", "2x2x8", "big"):
        with pytest.raises(InputError, match="patch"):
            method_class("unicompress")(patch=bad)
