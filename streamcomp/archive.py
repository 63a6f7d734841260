"""Archive a whole prefix (bucket, folder) of volumes: discover, compress, verify, record.

``archive(src_prefix, dst_prefix, ...)`` finds every volume under ``src_prefix`` (zarr v2/v3
arrays, OME-Zarr multiscale groups at their full-resolution level, ``.npy`` / ``.tif`` files),
compresses each with :func:`streamcomp.compress.compress` (one Ray session for all) to the same
relative path under ``dst_prefix`` (files ``a/b.npy`` -> ``a/b.zarr``), checks a sample of decoded
chunks against the source (:func:`streamcomp.verify.evaluate`) and appends one JSON line per
volume to ``<dst_prefix>/archive_manifest.jsonl``. Rerunning skips volumes already verified with
the same source checksum; a half-written output resumes at chunk level. Sources are only read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from streamcomp.errors import InputError, StreamcompError

MANIFEST = "archive_manifest.jsonl"
STAGING = ".archive_staging"
FILE_SUFFIXES = (".npy", ".tif", ".tiff")
ZARR_DOCS = ("zarr.json", ".zarray", ".zgroup")


class ArchiveError(InputError):
    """The archive cannot start: a missing bucket, refused credentials, an unreachable endpoint."""


@dataclass
class Volume:
    rel: str  # relative path of the volume (the array itself, for OME-Zarr the full-resolution level)
    kind: str  # "zarr3", "zarr2", "ome-zarr", "npy", "tif"
    checksum: str  # sha256 of the file's bytes, or of the zarr metadata and chunk listing
    checksum_kind: str
    source_bytes: int  # bytes stored at the source (files: file size; zarr: all its objects)

    @property
    def dst_rel(self) -> str:
        if self.kind in ("npy", "tif"):
            return posixpath.splitext(self.rel)[0] + ".zarr"
        return self.rel


@dataclass
class Skipped:
    rel: str
    reason: str


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


def _fs(url: str, storage_options: dict | None) -> tuple[Any, str]:
    import fsspec

    from streamcomp.io import is_url, local_path, s3_options

    if not is_url(url):
        return fsspec.filesystem("file"), os.path.abspath(local_path(url)).rstrip("/")
    fs, path = fsspec.core.url_to_fs(url, **(s3_options(url, storage_options) or {}))
    return fs, path.rstrip("/")


def _join(prefix: str, rel: str) -> str:
    return prefix.rstrip("/") + "/" + rel if rel else prefix.rstrip("/")


def _explain(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    low = text.lower()
    if "nosuchbucket" in low or "bucket does not exist" in low:
        return "the bucket does not exist"
    if any(s in low for s in ("accessdenied", "access denied", "invalidaccesskeyid", "signaturedoesnotmatch",
                              "forbidden", "permissionerror", "403")):
        return f"access denied (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, --anon): {text}"
    if any(s in low for s in ("connect", "endpoint", "timeout")):
        return f"the endpoint cannot be reached (check --endpoint-url): {text}"
    return text


def preflight(src_prefix: str, dst_prefix: str, storage_options: dict | None) -> None:
    """Fail before any work: the source must be listable and readable, the destination writable."""
    from streamcomp.io import is_url

    try:
        fs, root = _fs(src_prefix, storage_options)
        bucket_or_dir = root.split("/")[0] if "://" in src_prefix and not src_prefix.startswith("file://") else root
        if not fs.exists(bucket_or_dir) or not fs.exists(root):
            raise ArchiveError(f"source {src_prefix} does not exist"
                               + (" (the bucket does not exist)" if not fs.exists(bucket_or_dir) else ""))
        entries = fs.ls(root, detail=True)
        first = next((e["name"] for e in entries if e.get("type") == "file"), None)
        if first is not None:  # listing can be allowed where reading is not (anonymous, narrow policies)
            fs.cat_file(first, start=0, end=1)
    except ArchiveError:
        raise
    except Exception as exc:
        raise ArchiveError(f"cannot list source {src_prefix}: {_explain(exc)}") from exc
    fs, root = _fs(dst_prefix, storage_options)
    probe = f"{root}/.archive_write_probe"
    try:
        if not is_url(dst_prefix):
            os.makedirs(root, exist_ok=True)
        fs.pipe(probe, b"ok")
        if fs.cat_file(probe) != b"ok":  # written and read back, as the pipeline and verify will
            raise ArchiveError(f"destination {dst_prefix} does not return what was written")
    except ArchiveError:
        raise
    except Exception as exc:
        raise ArchiveError(f"cannot write to destination {dst_prefix}: {_explain(exc)}") from exc
    finally:
        with contextlib.suppress(Exception):
            fs.rm(probe)


def _sha256_file(fs: Any, path: str) -> str:
    h = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while block := f.read(8 * 2**20):
            h.update(block)
    return h.hexdigest()


def _zarr_checksum(fs: Any, path: str, files: dict[str, int]) -> tuple[str, int]:
    """sha256 over the array's metadata documents and its (key, size) listing; total bytes."""
    h = hashlib.sha256()
    total = 0
    for key in sorted(k for k in files if k == path or k.startswith(path + "/")):
        rel, size = key[len(path) + 1:], files[key]
        total += size
        h.update(f"{rel}\0{size}\n".encode())
        if posixpath.basename(rel) in (*ZARR_DOCS, ".zattrs"):
            h.update(fs.cat_file(key))
    return h.hexdigest(), total


def discover(src_prefix: str, storage_options: dict | None = None,
             exclude: str | None = None) -> tuple[list[Volume], list[Skipped]]:
    """Every volume under ``src_prefix`` and, with a reason, what was found and cannot be archived."""
    from streamcomp.io import open_source

    fs, root = _fs(src_prefix, storage_options)
    files = {p.rstrip("/"): int(info.get("size") or 0) for p, info in fs.find(root, detail=True).items()}
    excl = _fs(exclude, storage_options)[1] if exclude else None
    if excl:
        files = {p: s for p, s in files.items() if not (p == excl or p.startswith(excl + "/"))}

    def rel_of(p: str) -> str:
        return p[len(root) + 1:]

    nodes = sorted({posixpath.dirname(p) for p in files if posixpath.basename(p) in ZARR_DOCS})
    top = [n for n in nodes if not any(n.startswith(o + "/") for o in nodes if o != n)]
    volumes: list[Volume] = []
    skipped: list[Skipped] = []
    for node in top:
        rel = rel_of(node)
        try:
            kind, array_path = _resolve_zarr_node(fs, node, files)
        except InputError as exc:
            skipped.append(Skipped(rel, str(exc)))
            continue
        try:
            open_source(_join(src_prefix, rel_of(array_path)), storage_options)
        except StreamcompError as exc:
            skipped.append(Skipped(rel, f"cannot read: {exc}"))
            continue
        checksum, nbytes = _zarr_checksum(fs, node, files)
        volumes.append(Volume(rel_of(array_path), kind, checksum, "sha256 of zarr metadata + key/size listing",
                              nbytes))
    for path, size in sorted(files.items()):
        if any(path.startswith(n + "/") for n in top):
            continue
        rel = rel_of(path)
        if posixpath.basename(rel) == MANIFEST or rel.startswith(STAGING):
            continue
        if not rel.lower().endswith(FILE_SUFFIXES):
            skipped.append(Skipped(rel, "not a volume format (zarr v2/v3, OME-Zarr, .npy, .tif)"))
            continue
        kind = "npy" if rel.lower().endswith(".npy") else "tif"
        try:
            with _local_copy(fs, path, src_prefix) as local:
                open_source(local)
            checksum = _sha256_file(fs, path)
        except StreamcompError as exc:
            skipped.append(Skipped(rel, f"cannot read: {exc}"))
            continue
        except Exception as exc:
            skipped.append(Skipped(rel, f"cannot read: {_explain(exc)}"))
            continue
        volumes.append(Volume(rel, kind, checksum, "sha256 of the file's bytes", size))
    dsts: dict[str, str] = {}
    unique = []
    for v in volumes:
        if v.dst_rel in dsts:
            skipped.append(Skipped(v.rel, f"its output {v.dst_rel} would collide with that of {dsts[v.dst_rel]}"))
            continue
        dsts[v.dst_rel] = v.rel
        unique.append(v)
    return unique, skipped


def _resolve_zarr_node(fs: Any, node: str, files: dict[str, int]) -> tuple[str, str]:
    """(kind, path of the array to compress) for a zarr node; OME-Zarr groups -> level 0."""
    if f"{node}/zarr.json" in files:
        meta = json.loads(fs.cat_file(f"{node}/zarr.json"))
        if meta.get("node_type") == "array":
            return "zarr3", node
        attrs = meta.get("attributes") or {}
    elif f"{node}/.zarray" in files:
        return "zarr2", node
    else:
        attrs = json.loads(fs.cat_file(f"{node}/.zattrs")) if f"{node}/.zattrs" in files else {}
    multiscales = (attrs.get("ome") or {}).get("multiscales") or attrs.get("multiscales")
    if not multiscales:
        raise InputError("a zarr group without OME-Zarr multiscales metadata (no single array to archive)")
    try:
        level0 = multiscales[0]["datasets"][0]["path"]
    except (KeyError, IndexError, TypeError) as exc:
        raise InputError("OME-Zarr multiscales metadata without datasets[0].path") from exc
    return "ome-zarr", f"{node}/{level0.strip('/')}"


class _local_copy:
    """A local path for a file source (a download into a temporary file for remote prefixes)."""

    def __init__(self, fs: Any, path: str, prefix: str) -> None:
        from streamcomp.io import is_url

        self.fs, self.path, self.remote = fs, path, is_url(prefix)
        self.tmp: str | None = None

    def __enter__(self) -> str:
        if not self.remote:
            return self.path
        fd, self.tmp = tempfile.mkstemp(suffix=posixpath.splitext(self.path)[1])
        os.close(fd)
        self.fs.get_file(self.path, self.tmp)
        return self.tmp

    def __exit__(self, *exc: Any) -> None:
        if self.tmp:
            os.unlink(self.tmp)


def read_manifest(dst_prefix: str, storage_options: dict | None = None) -> list[dict[str, Any]]:
    fs, root = _fs(dst_prefix, storage_options)
    path = f"{root}/{MANIFEST}"
    if not fs.exists(path):
        return []
    return [json.loads(line) for line in fs.cat_file(path).decode().splitlines() if line.strip()]


def _append_manifest(dst_prefix: str, record: dict[str, Any], storage_options: dict | None) -> None:
    """Append one line (object stores cannot append: rewrite the small file whole)."""
    fs, root = _fs(dst_prefix, storage_options)
    path = f"{root}/{MANIFEST}"
    old = fs.cat_file(path) if fs.exists(path) else b""
    fs.pipe(path, old + (json.dumps(record, sort_keys=True) + "\n").encode())


def _stage(fs: Any, path: str, prefix: str, staging_url: str, storage_options: dict | None) -> str:
    """Copy a remote .npy/.tif into a plain zarr array the (possibly remote) workers can read."""
    import zarr

    from streamcomp.io import is_url, open_source, s3_options

    with _local_copy(fs, path, prefix) as local:
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
    method: str = "siren",
    ratio: float | None = None,
    psnr: float | None = None,
    method_params: dict[str, Any] | None = None,
    chunks: str | tuple[int, ...] | None = None,
    storage_options: dict | None = None,
    ray_address: str | None = None,
    workers: int | None = None,
    gpu: bool | None = None,
    executor: str = "ray",
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
    ``max_volumes`` stops after that many volumes were processed in this run (the rest on rerun).
    """
    from streamcomp.compress import compress, validate_target
    from streamcomp.pipeline import start_ray
    from streamcomp.verify import evaluate

    validate_target(ratio, psnr)
    say = log or (lambda msg: None)
    preflight(src_prefix, dst_prefix, storage_options)
    dst_root = _fs(dst_prefix, storage_options)[1]
    volumes, skipped = discover(src_prefix, storage_options, exclude=dst_prefix)
    report = ArchiveReport(manifest=_join(dst_prefix, MANIFEST))
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
                                  dict(method=method, ratio=ratio, psnr=psnr, method_params=method_params,
                                       chunks=chunks, workers=workers, gpu=gpu, executor=executor,
                                       ray_address=ray_address, progress=progress),
                                  verify_chunks, floor, ratio)
            _append_manifest(dst_prefix, record, storage_options)
            if record["status"] == "verified":
                report.verified.append(vol.rel)
                say(f"verified  {vol.rel} -> {record['destination']}  ratio {record['ratio']:.2f}  "
                    f"PSNR {record['psnr']:.2f} dB  SSIM {record['ssim']:.4f}")
            else:
                report.failed.append({"rel": vol.rel, "reason": record["error"]})
                say(f"FAILED    {vol.rel}: {record['error']}")
    finally:
        if started:
            import ray

            ray.shutdown()
    return report


def _archive_one(vol: Volume, src_prefix: str, dst_prefix: str, dst_root: str, storage_options: dict | None,
                 compress: Any, evaluate: Any, kwargs: dict[str, Any], verify_chunks: int,
                 floor: float | None, ratio: float | None) -> dict[str, Any]:
    from streamcomp.io import is_url

    src_url = _join(src_prefix, vol.rel)
    dst_url = _join(dst_prefix, vol.dst_rel)
    record: dict[str, Any] = {
        "source": src_url, "source_rel": vol.rel, "destination": dst_url, "kind": vol.kind,
        "source_checksum": vol.checksum, "source_checksum_kind": vol.checksum_kind,
        "bytes_before": vol.source_bytes, "started": _now(), "method": kwargs["method"],
        "target": {"ratio": ratio} if ratio is not None else {"psnr": kwargs["psnr"]},
    }
    staging = None
    try:
        read_url = src_url
        if vol.kind in ("npy", "tif") and is_url(src_prefix):
            fs, root = _fs(src_prefix, storage_options)
            staging = _join(dst_prefix, f"{STAGING}/{vol.dst_rel}")
            read_url = _stage(fs, f"{root}/{vol.rel}", src_prefix, staging, storage_options)
        result = compress(read_url, dst_url, resume=True, storage_options=storage_options, **kwargs)
        quality = evaluate(read_url, dst_url, sample=verify_chunks or None, storage_options=storage_options)
        record.update(
            shape=list(result.shape), dtype=result.dtype, chunks=list(result.chunks),
            raw_bytes=quality.raw_bytes, bytes_after=quality.stored_bytes, ratio=quality.ratio,
            psnr=quality.psnr if quality.psnr != float("inf") else None, lossless=quality.psnr == float("inf"),
            ssim=quality.ssim, max_abs_error=quality.max_abs_error, chunks_verified=quality.chunks_checked,
            chunks_encoded=result.chunks_written, chunks_resumed=result.chunks_skipped,
        )
        problems = []
        if floor is not None and quality.psnr < floor:
            problems.append(f"PSNR {quality.psnr:.2f} dB below {floor:.2f} dB")
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
                fs, path = _fs(staging, storage_options)
                fs.rm(path, recursive=True)
            except Exception:
                pass
    record["finished"] = _now()
    return record
