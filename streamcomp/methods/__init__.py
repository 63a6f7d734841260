"""Compression methods behind one plug-in interface, found through package entry points.

A method is one module (or package) with a :class:`Method` subclass, plus one line in the
``streamcomp.methods`` entry-point group of ``pyproject.toml``; methods load on first use, so
listing their names imports no network code.
"""

from __future__ import annotations

import threading
from importlib.metadata import entry_points
from typing import Any

from streamcomp.errors import InputError
from streamcomp.methods.base import FitTargets, Method, Params, Target, encode_only

DEFAULT_METHOD = "wavelet"
ENTRY_POINT_GROUP = "streamcomp.methods"
_LOADED: dict[str, type[Method]] = {}
_LOCK = threading.Lock()


def method_names() -> list[str]:
    """The registered methods' names, sorted (no method is imported)."""
    names = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    if not names:
        raise InputError("no streamcomp methods are registered: install the package (pip install -e .)")
    return names


def method_class(name: str) -> type[Method]:
    """The method class registered under ``name``; its id must be unique among those loaded."""
    with _LOCK:  # zarr decodes chunks on several threads at once
        return _load(name)


def _load(name: str) -> type[Method]:
    if name not in _LOADED:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        if not found:
            raise InputError(f"unknown method {name!r}; choose one of: {', '.join(method_names())}")
        cls = found[0].load()
        if cls.name != name:
            raise InputError(f"entry point {name!r} loads method {cls.name!r}: fix the package metadata")
        for other in _LOADED.values():
            if other.method_id == cls.method_id and other is not cls:
                raise InputError(f"method id {cls.method_id} is used by both {other.name!r} and {name!r}")
        _LOADED[name] = cls
    return _LOADED[name]


def build_method(name: str, params: dict[str, Any] | None = None, ndim: int | None = None) -> Method:
    """A method instance from its name and parameters, checked against the volume's axes."""
    method = method_class(name)(**(params or {}))
    if ndim is not None and ndim not in method.ndims:
        raise InputError(f"method {name!r} handles {method.ndims}-D volumes, this one has {ndim} axes")
    return method


__all__ = [
    "DEFAULT_METHOD",
    "FitTargets",
    "Method",
    "Params",
    "Target",
    "build_method",
    "encode_only",
    "method_class",
    "method_names",
]
