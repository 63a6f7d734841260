"""Archive a whole prefix (bucket, folder) of volumes: discover, compress, verify, record.

``archive(src_prefix, dst_prefix, ...)`` finds every volume under ``src_prefix``
(:mod:`.discover`), compresses each with :func:`streamcomp.api.compress` (one Ray session for all)
to the same relative path under ``dst_prefix`` (files ``a/b.npy`` -> ``a/b.zarr``), checks a
sample of decoded chunks against the source (:func:`streamcomp.verify.evaluate`) and appends one
JSON line per volume to ``<dst_prefix>/archive_manifest.jsonl``. Rerunning skips volumes already
verified with the same source checksum; a half-written output resumes at chunk level. Sources are
only read.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from streamcomp.api import compress
from streamcomp.archive.discover import (
    MANIFEST,
    STAGING,
    Volume,
    discover,
    join_prefix,
    local_copy,
    preflight,
)
from streamcomp.errors import StreamcompError
from streamcomp.methods import DEFAULT_METHOD
from streamcomp.pipeline import error_bound, start_ray, validate_engine, validate_target
from streamcomp.source import filesystem, is_url, open_source, s3_options
from streamcomp.verify import evaluate


@dataclass
class ArchiveReport:
    manifest: str
    verified: list[str] = field(default_factory=list)
    already_done: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    remaining: list[str] = field(default_factory=list)  # not reached (max_volumes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_manifest(dst_prefix: str, storage_options: dict | None = None) -> list[dict[str, Any]]:
    fs, root = filesystem(dst_prefix, storage_options)
    path = f"{root}/{MANIFEST}"
    if not fs.exists(path):
        return []
    return [json.loads(line) for line in fs.cat_file(path).decode().splitlines() if line.strip()]


def _append_manifest(dst_prefix: str, record: dict[str, Any], storage_options: dict | None) -> None:
    """Append one line (object stores cannot append: rewrite the small file whole)."""
    fs, root = filesystem(dst_prefix, storage_options)
    path = f"{root}/{MANIFEST}"
    old = fs.cat_file(path) if fs.exists(path) else b""
    fs.pipe(path, old + (json.dumps(record, sort_keys=True) + "\n").encode())


def _stage(fs: Any, path: str, prefix: str, staging_url: str, storage_options: dict | None) -> str:
    """Copy a remote .npy/.tif into a plain zarr array the (possibly remote) workers can read."""
    import zarr


    with local_copy(fs, path, prefix) as local:
        src = open_source(local)
        data = src.read(tuple(slice(None) for _ in src.shape))
    store = (zarr.storage.FsspecStore.from_url(staging_url, storage_options=s3_options(staging_url, storage_options))
             if is_url(staging_url) else staging_url)
    zarr.create_array(store, data=data, chunks=src.native_chunks or data.shape, overwrite=True)
    return staging_url


def archive(
    src_prefix: str,
    dst_prefix: str,
    *,
    method: str = DEFAULT_METHOD,
    ratio: float | None = None,
    psnr: float | None = None,
    max_error: float | None = None,
    lossless: bool = False,
    method_params: dict[str, Any] | None = None,
    chunks: str | tuple[int, ...] | None = None,
    shards: str | tuple[int, ...] | None = None,
    zarr_format: int = 3,
    storage_options: dict | None = None,
    ray_address: str | None = None,
    workers: int | None = None,
    gpu: bool | None = None,
    executor: str = "ray",
    engine: str = "pool",
    verify_chunks: int = 8,
    min_psnr: float | None = None,
    max_volumes: int | None = None,
    progress: bool = False,
    log: Any = None,
) -> ArchiveReport:
    """Archive every volume under ``src_prefix`` into ``dst_prefix`` (see the module docstring).

    A volume counts as verified when its output opens as a streamcomp array of the source's shape,
    the sampled PSNR is finite-or-lossless and at least ``min_psnr`` (default: ``psnr - 0.5`` for a
    PSNR target, none for a ratio target) and, for a ratio target, the achieved ratio is within 10 %.
    Under ``max_error`` (``lossless``: 0) every chunk is decoded and checked against the bound,
    bit for bit when lossless, whatever ``verify_chunks`` says. ``max_volumes`` stops after that
    many volumes were processed in this run (the rest on rerun). ``shards`` stores each volume's
    chunks in zarr v3 shards (one object per shard; ``"auto"``: about 1 GiB of raw data each).
    ``engine``: what feeds the encode phase to Ray (``pool`` or ``data``, see
    :class:`~streamcomp.pipeline.RunConfig`).
    """
    max_error = error_bound(max_error, lossless)
    validate_target(ratio, psnr, max_error)
    validate_engine(engine, executor)
    say = log or (lambda msg: None)
    preflight(src_prefix, dst_prefix, storage_options)
    dst_root = filesystem(dst_prefix, storage_options)[1]
    volumes, skipped = discover(src_prefix, storage_options, exclude=dst_prefix)
    report = ArchiveReport(manifest=join_prefix(dst_prefix, MANIFEST))
    done = {r["source_rel"]: r for r in read_manifest(dst_prefix, storage_options)
            if r.get("status") == "verified"}
    for s in skipped:
        report.skipped.append(asdict(s))
        say(f"skip      {s.rel}: {s.reason}")
    started = False
    floor = min_psnr if min_psnr is not None else (psnr - 0.5 if psnr is not None else None)
    try:
        for i, vol in enumerate(volumes):
            prev = done.get(vol.rel)
            if prev and prev.get("source_checksum") == vol.checksum:
                report.already_done.append(vol.rel)
                say(f"done      {vol.rel} (verified earlier)")
                continue
            processed = len(report.verified) + len(report.failed)
            if max_volumes is not None and processed >= max_volumes:
                report.remaining = [v.rel for v in volumes[i:]
                                    if (done.get(v.rel) or {}).get("source_checksum") != v.checksum]
                break
            if executor == "ray" and not started:
                started = start_ray(ray_address, workers)
            record = _archive_one(vol, src_prefix, dst_prefix, dst_root, storage_options, compress, evaluate,
                                  dict(method=method, ratio=ratio, psnr=psnr, max_error=max_error,
                                       method_params=method_params,
                                       chunks=chunks, shards=shards, zarr_format=zarr_format, workers=workers, gpu=gpu,
                                       executor=executor, engine=engine,
                                       ray_address=ray_address, progress=progress),
                                  verify_chunks, floor, ratio)
            _append_manifest(dst_prefix, record, storage_options)
            if record["status"] == "verified":
                report.verified.append(vol.rel)
                quality = "bit-exact" if record["psnr"] is None else f"PSNR {record['psnr']:.2f} dB"
                say(f"verified  {vol.rel} -> {record['destination']}  ratio {record['ratio']:.2f}  "
                    f"{quality}  SSIM {record['ssim']:.4f}  max |error| {record['max_abs_error']:g}")
            else:
                report.failed.append({"rel": vol.rel, "reason": record["error"]})
                say(f"FAILED    {vol.rel}: {record['error']}")
    finally:
        if started:
            import ray

            ray.shutdown()
    return report


def _target(ratio: float | None, psnr: float | None, max_error: float | None) -> dict[str, float]:
    if max_error is not None:
        return {"max_error": max_error}
    return {"ratio": ratio} if ratio is not None else {"psnr": psnr}


def _archive_one(vol: Volume, src_prefix: str, dst_prefix: str, dst_root: str, storage_options: dict | None,
                 compress: Any, evaluate: Any, kwargs: dict[str, Any], verify_chunks: int,
                 floor: float | None, ratio: float | None) -> dict[str, Any]:

    src_url = join_prefix(src_prefix, vol.rel)
    dst_url = join_prefix(dst_prefix, vol.dst_rel)
    record: dict[str, Any] = {
        "source": src_url, "source_rel": vol.rel, "destination": dst_url, "kind": vol.kind,
        "source_checksum": vol.checksum, "source_checksum_kind": vol.checksum_kind,
        "bytes_before": vol.source_bytes, "started": _now(), "method": kwargs["method"],
        "target": _target(ratio, kwargs["psnr"], kwargs["max_error"]),
    }
    staging = None
    try:
        read_url = src_url
        if vol.kind in ("npy", "tif") and is_url(src_prefix):
            fs, root = filesystem(src_prefix, storage_options)
            staging = join_prefix(dst_prefix, f"{STAGING}/{vol.dst_rel}")
            read_url = _stage(fs, f"{root}/{vol.rel}", src_prefix, staging, storage_options)
        result = compress(read_url, dst_url, resume=True, storage_options=storage_options, **kwargs)
        bounded = kwargs["max_error"] is not None
        sample = None if bounded else verify_chunks or None
        quality = evaluate(read_url, dst_url, sample=sample, storage_options=storage_options)
        record.update(
            shape=list(result.shape), dtype=result.dtype, chunks=list(result.chunks),
            raw_bytes=quality.raw_bytes, bytes_after=quality.stored_bytes, ratio=quality.ratio,
            psnr=quality.psnr if quality.psnr != float("inf") else None, lossless=quality.psnr == float("inf"),
            ssim=quality.ssim, max_abs_error=quality.max_abs_error, chunks_verified=quality.chunks_checked,
            bit_exact=quality.exact,
            chunks_encoded=result.chunks_written, chunks_resumed=result.chunks_skipped,
        )
        problems = []
        if floor is not None and quality.psnr < floor:
            problems.append(f"PSNR {quality.psnr:.2f} dB below {floor:.2f} dB")
        if bounded and not quality.bound_met:
            problems.append("decoded voxels differ from the source" if kwargs["max_error"] == 0 else
                            f"max |error| {quality.max_abs_error:g} over the bound {kwargs['max_error']:g}")
        if ratio is not None and quality.ratio < 0.9 * ratio:
            problems.append(f"ratio {quality.ratio:.2f} below 90% of the {ratio} target")
        record["status"] = "failed_verification" if problems else "verified"
        if problems:
            record["error"] = "; ".join(problems)
    except StreamcompError as exc:
        record.update(status="error", error=str(exc))
    except Exception as exc:  # one bad volume must not stop the bucket
        record.update(status="error", error=f"{type(exc).__name__}: {exc}")
    finally:
        if staging:
            try:
                fs, path = filesystem(staging, storage_options)
                fs.rm(path, recursive=True)
            except Exception:
                pass
    record["finished"] = _now()
    return record
