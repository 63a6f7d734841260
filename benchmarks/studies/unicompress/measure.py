"""The measurements: every number comes from the shipped planner, chunk layer and store.

A crop is planned as the pipeline plans an array (:func:`streamcomp.plan.chunk_grid`,
:func:`~streamcomp.plan.chunk_stats`, :func:`~streamcomp.plan.plan_from_stats`), the shared fit
reads the planner's sample (:func:`~streamcomp.plan.sample_items`, normalized by
:func:`streamcomp.values.normalize`), budgets come from :func:`streamcomp.plan.assign_budgets`
(which also says when a ratio is impossible), chunks go through the chunk layer as the pipeline's
workers encode them, and the array-level bytes are the zarr metadata the array would have
(:func:`streamcomp.format.store.metadata_bytes` of :func:`streamcomp.format.codec.make_config`,
the shared state inside, zlib-compressed and base64-encoded).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from benchmarks.studies.common import pooled_quality, quality, roundtrip

CHUNK = (16, 64, 64)
# At CT 512x a 16x64x64 chunk has 256 B, less than its indices at the default 2x8x8 patch: the
# student is also fitted with one token per 4x16x16 voxels (8x fewer indices) on CT.
COARSE_PATCH = "4x16x16"


def plan_for(vol: np.ndarray, method: Any, chunks: tuple[int, ...] = CHUNK):
    """The pipeline's plan of ``vol`` in ``chunks`` (clipped to it): kinds, range, budget weights."""
    from streamcomp.plan import chunk_grid, chunk_stats, parse_chunks, plan_from_stats

    chunks = parse_chunks(chunks, vol.shape, {})
    items = list(chunk_grid(vol.shape, chunks))
    stats = [chunk_stats(vol[it.slices], method.chunk_weight) for it in items]
    return plan_from_stats(vol.shape, chunks, vol.dtype, items, stats)


def array_bytes(vol: np.ndarray, method: Any, with_shared: bool = True) -> int:
    """The zarr metadata an array of ``vol`` coded by ``method`` in :data:`CHUNK` stores, with
    (or without) its shared state."""
    from streamcomp.format.codec import make_config
    from streamcomp.format.store import metadata_bytes
    from streamcomp.plan import parse_chunks

    config = make_config(method, with_shared=with_shared)
    return metadata_bytes(vol.shape, parse_chunks(CHUNK, vol.shape, {}), vol.dtype, config)


def fit_unicompress(vol: np.ndarray, params: dict) -> tuple[Any, dict]:
    """``unicompress`` with ``params``, its shared state fitted once on the planner's sample chunks.

    No rate targets are passed, so the fit never drops the student: it is what is measured.
    """
    from streamcomp.methods import build_method
    from streamcomp.plan import sample_items
    from streamcomp.values import normalize

    method = build_method("unicompress", params, vol.ndim)
    samples = [normalize(vol[it.slices])[0] for it in sample_items(plan_for(vol, method))]
    t0 = time.perf_counter()
    notes = method.fit_shared(samples)
    fit_s = time.perf_counter() - t0
    fit = {"fit_s": fit_s, "samples": len(samples), "shared_bytes": len(method.shared_state()), "notes": notes}
    # what the shared state adds to the array's zarr.json (zlib-compressed, base64, hashed)
    fit["shared_stored_bytes"] = array_bytes(vol, method) - array_bytes(vol, method, with_shared=False)
    return method, fit


def with_modes(method: Any, modes: str) -> Any:
    """A new method with the same parameters and shared state but ``modes`` (params are frozen);
    ``residual`` carries no shared state."""
    from streamcomp.methods import build_method

    other = build_method(method.name, {**method.params.as_dict(), "modes": modes})
    other.load_shared_state(b"" if modes == "residual" else method.shared_state())
    return other


def student_at(
    method: Any, vol: np.ndarray, ratio: float, peak: float, counted: bool, subset: list[int]
) -> dict[str, Any]:
    """Every chunk of ``vol`` coded by ``method`` at ``ratio``, as the pipeline would.

    ``counted``: the array's metadata (shared state included) takes its bytes out of the budget and
    counts in the ratio; otherwise only the framed chunks count, the array-level bytes amortized as
    over a volume of very many chunks. An impossible ratio is recorded with the planner's reason.
    """
    from streamcomp.errors import InputError
    from streamcomp.format.chunk import constant_chunk, decode_chunk
    from streamcomp.format.frame import unpack
    from streamcomp.plan import assign_budgets

    plan = plan_for(vol, method)
    meta = array_bytes(vol, method) if counted else 0
    raw = vol.nbytes
    rec: dict[str, Any] = {
        "target": ratio, "raw_bytes": raw, "budget_total": raw / ratio,
        "shared_bytes": len(method.shared_state()) if counted else 0, "meta_bytes": meta,
    }  # fmt: skip
    try:
        assign_budgets(plan, ratio, meta, method.min_payload_bytes(plan.chunks))
    except InputError as exc:
        rec.update(possible=False, reason=str(exc))
        return rec
    dec = np.zeros_like(vol)
    stored, enc_s, dec_s, inr_chunks = 0, 0.0, 0.0, 0
    for it in plan.items:
        block = vol[it.slices]
        if it.kind == "fill":  # not stored: zarr's fill value
            continue
        if it.kind == "constant":
            data = constant_chunk(method, block, plan.chunks)
            dec[it.slices] = decode_chunk(method, data)[tuple(slice(0, n) for n in block.shape)]
        else:
            r = roundtrip(method, block, it.budget, plan.chunks)
            data, dec[it.slices] = r.data, r.decoded
            enc_s, dec_s = enc_s + r.encode_s, dec_s + r.decode_s
            inr_chunks += bool(unpack(data).sections[0])
        stored += len(data)
    total = stored + meta
    rec.update(
        possible=True, stored_bytes=total, chunk_bytes=stored, ratio=raw / total, bpv=8 * total / vol.size,
        encode_s=enc_s, decode_s=dec_s, encode_vox_s=vol.size / max(enc_s, 1e-9),
        decode_vox_s=vol.size / max(dec_s, 1e-9), inr_chunks=inr_chunks, chunks=len(plan.items),
        **quality(vol, dec, peak),
    )  # fmt: skip
    if subset:
        rec["siren_subset"] = pooled_quality(vol, dec, [plan.items[i].slices for i in subset], peak)
    return rec


def siren_at(vol: np.ndarray, ratio: float, peak: float, subset: list[int], steps: int) -> dict[str, Any]:
    """Per-chunk ``siren`` on the chunks ``subset`` of the plan, each with its planned budget
    (framed chunk bytes only: the pipeline's budgets with no array-level bytes)."""
    from streamcomp.errors import InputError
    from streamcomp.methods import build_method
    from streamcomp.plan import assign_budgets

    method = build_method("siren", {"steps": steps}, vol.ndim)
    plan = plan_for(vol, method)
    try:
        assign_budgets(plan, ratio, 0, method.min_payload_bytes(plan.chunks))
    except InputError as exc:
        return {"target": ratio, "chunks": list(subset), "possible": False, "reason": str(exc)}
    dec = np.array(vol)
    stored, raw, enc_s, dec_s, vox = 0, 0, 0.0, 0.0, 0
    for i in subset:
        it = plan.items[i]
        block = vol[it.slices]
        r = roundtrip(method, block, it.budget or 0, plan.chunks)
        dec[it.slices] = r.decoded
        enc_s, dec_s = enc_s + r.encode_s, dec_s + r.decode_s
        stored, raw, vox = stored + len(r.data), raw + block.nbytes, vox + block.size
    return {
        "target": ratio,
        "chunks": list(subset),
        "raw_bytes": raw,
        "stored_bytes": stored,
        "ratio": raw / stored,
        "bpv": 8 * stored / vox,
        "encode_s": enc_s,
        "decode_s": dec_s,
        "encode_vox_s": vox / max(enc_s, 1e-9),
        "decode_vox_s": vox / max(dec_s, 1e-9),
        **pooled_quality(vol, dec, [plan.items[i].slices for i in subset], peak),
    }


def baseline_at(name: str, vol: np.ndarray, ratio: float, peak: float) -> dict[str, Any]:
    """A baseline codec on the whole crop at the knob closest to ``ratio`` (benchmarks.baselines)."""
    from benchmarks.baselines import at_ratio

    try:
        out = at_ratio(name, vol, float(ratio), max_evals=8)
    except Exception as exc:  # recorded, never dropped
        return {"target": ratio, "error": f"{type(exc).__name__}: {exc}"}
    r = out.best.result
    return {
        "target": ratio,
        "knob": out.best.knob,
        "hit": out.hit,
        "stored_bytes": r.stored_bytes,
        "ratio": out.best.ratio,
        "bpv": 8 * r.stored_bytes / vol.size,
        "encode_s": r.encode_s,
        "decode_s": r.decode_s,
        "encode_vox_s": vol.size / r.encode_s if r.encode_s else None,
        **quality(vol, r.decoded, peak),
    }


def decode_big_chunk(method: Any, em_stack: np.ndarray, ratio: float) -> dict[str, Any]:
    """Encode/decode one 64x256x256 chunk built from the EM stack (its slices mirrored to 64)."""
    from streamcomp.format.chunk import decode_chunk

    base = np.ascontiguousarray(em_stack[:, :256, :256])
    block = np.ascontiguousarray(np.concatenate([base, base[::-1]] * 32, axis=0)[:64])
    r = roundtrip(method, block, int(block.nbytes / ratio))
    times = [r.decode_s]
    t0 = time.perf_counter()
    decode_chunk(method, r.data)
    times.append(time.perf_counter() - t0)
    return {
        "shape": list(block.shape),
        "built_from": f"EM slices 0-{em_stack.shape[0] - 1} mirrored along z to 64",
        "ratio_chunk_only": block.nbytes / len(r.data),
        "encode_s": r.encode_s,
        "decode_s": min(times),
        "decode_s_all": times,
        "target_s": 1.0,
        **quality(block, r.decoded, float(block.max()) - float(block.min())),
    }
