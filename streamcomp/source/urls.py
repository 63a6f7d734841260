"""URLs and paths: local paths, ``file://`` and fsspec URLs (``s3://``, ``gs://``, ``https://``).

One place decides what is remote, how S3 storage options are completed from the environment and
how a URL becomes a filesystem, a tensorstore kvstore or a small text document, so the source, the
output store, the manifest and the archive job all address storage the same way.
"""

from __future__ import annotations

import json
import os
from typing import Any

from streamcomp.errors import InputError


def is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def local_path(path: str) -> str:
    return path[len("file://") :] if path.startswith("file://") else path


def _endpoint(storage_options: dict | None) -> str | None:
    so = storage_options or {}
    return (
        so.get("endpoint_url")
        or (so.get("client_kwargs") or {}).get("endpoint_url")
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )


def s3_options(url: str, storage_options: dict | None) -> dict | None:
    """fsspec storage options for ``url``, with the S3 endpoint taken from the environment if unset.

    (s3fs reads ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` itself; the endpoint it does not.)
    """
    so = dict(storage_options or {})
    if url.startswith(("s3://", "s3a://")):
        endpoint = _endpoint(so)
        if endpoint and "endpoint_url" not in so and "endpoint_url" not in (so.get("client_kwargs") or {}):
            so["endpoint_url"] = endpoint
    return so or None


def filesystem(url: str, storage_options: dict | None = None) -> tuple[Any, str]:
    """(fsspec filesystem, path without trailing slash) for a local path or any fsspec URL."""
    import fsspec

    if not is_url(url):
        return fsspec.filesystem("file"), os.path.abspath(local_path(url)).rstrip("/")
    fs, path = fsspec.core.url_to_fs(url, **(s3_options(url, storage_options) or {}))
    return fs, path.rstrip("/")


def path_exists(url: str, storage_options: dict | None = None) -> bool:
    fs, path = filesystem(url, storage_options)
    return bool(fs.exists(path))


def write_json(url: str, doc: dict[str, Any], storage_options: dict | None = None) -> None:
    """A small JSON document, replaced whole (a temporary file renamed locally, one PUT remotely)."""
    text = json.dumps(doc, indent=2, default=str)
    if is_url(url):
        fs, path = filesystem(url, storage_options)
        fs.pipe(path, text.encode())
        return
    path = local_path(url)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def read_json(url: str, storage_options: dict | None = None) -> dict[str, Any] | None:
    """The JSON document at ``url``, or None when it is absent or unreadable as JSON."""
    fs, path = filesystem(url, storage_options)
    try:
        return json.loads(fs.cat_file(path))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def tensorstore_kvstore(url: str, storage_options: dict | None = None) -> dict:
    """tensorstore kvstore spec for a local path, ``file://``, ``s3://``, ``gs://`` or ``http(s)://`` URL.

    S3: the endpoint is ``storage_options["endpoint_url"]`` (or ``client_kwargs.endpoint_url``, or
    ``AWS_ENDPOINT_URL[_S3]``), the region ``client_kwargs.region_name`` / ``AWS_REGION`` /
    ``AWS_DEFAULT_REGION`` (``us-east-1`` for a custom endpoint), credentials the default AWS chain
    (environment, profile, instance metadata) or none with ``{"anon": true}``.
    """
    so = storage_options or {}
    scheme, sep, rest = url.partition("://")
    if not sep or scheme == "file":
        return {"driver": "file", "path": os.path.abspath(local_path(url)).rstrip("/") + "/"}
    bucket, _, path = rest.partition("/")
    path = path.strip("/") + "/" if path.strip("/") else ""
    if scheme in ("s3", "s3a"):
        spec: dict[str, Any] = {"driver": "s3", "bucket": bucket, "path": path}
        endpoint = _endpoint(so)
        region = (
            (so.get("client_kwargs") or {}).get("region_name")
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
        )
        if endpoint:
            spec["endpoint"] = endpoint
            region = region or "us-east-1"
        if region:
            spec["aws_region"] = region
        if so.get("anon"):
            spec["aws_credentials"] = {"type": "anonymous"}
        return spec
    if scheme in ("gs", "gcs"):
        return {"driver": "gcs", "bucket": bucket, "path": path}
    if scheme in ("http", "https"):
        return {"driver": "http", "base_url": url.rstrip("/") + "/"}
    raise InputError(f"unsupported URL scheme {scheme!r} in {url}; use a path, file://, s3://, gs:// or https://")


