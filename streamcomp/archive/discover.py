"""Find the volumes under a prefix (zarr v2/v3 arrays, OME-Zarr level 0, .npy / .tif files), with
a checksum of each source so a rerun knows what it already archived; check access before any work."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import tempfile
from dataclasses import dataclass
from typing import Any

from streamcomp.errors import InputError, StreamcompError
from streamcomp.source import filesystem, is_url, open_source

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


def join_prefix(prefix: str, rel: str) -> str:
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

    try:
        fs, root = filesystem(src_prefix, storage_options)
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
    fs, root = filesystem(dst_prefix, storage_options)
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

    fs, root = filesystem(src_prefix, storage_options)
    files = {p.rstrip("/"): int(info.get("size") or 0) for p, info in fs.find(root, detail=True).items()}
    excl = filesystem(exclude, storage_options)[1] if exclude else None
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
            open_source(join_prefix(src_prefix, rel_of(array_path)), storage_options)
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
            with local_copy(fs, path, src_prefix) as local:
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


class local_copy:
    """A local path for a file source (a download into a temporary file for remote prefixes)."""

    def __init__(self, fs: Any, path: str, prefix: str) -> None:

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
