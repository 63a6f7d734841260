"""One typed run configuration: what the user asked for, checked before anything is written."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from streamcomp.errors import InputError
from streamcomp.format.ome import PYRAMID_CODECS
from streamcomp.methods import DEFAULT_METHOD
from streamcomp.source import local_path

EXECUTORS = ("auto", "ray", "local")
ENGINES = ("pool", "data")  # what feeds the encode phase on Ray: the pool of actors, or Ray Data


def error_bound(max_error: float | None, lossless: bool) -> float | None:
    """The run's error bound: ``lossless`` is a bound of 0 (and contradicts any other)."""
    if not lossless:
        return max_error
    if max_error not in (None, 0):
        raise InputError(f"lossless and a maximum error of {max_error} contradict each other: give one")
    return 0.0


def validate_target(ratio: float | None, psnr: float | None, max_error: float | None = None) -> None:
    """Exactly one of a ratio (> 1), a PSNR (0-200 dB) or a maximum absolute error (>= 0)."""
    if sum(t is not None for t in (ratio, psnr, max_error)) != 1:
        raise InputError(
            "give exactly one target: a ratio (e.g. --ratio 8), a PSNR (e.g. --psnr 32), "
            "a maximum error (e.g. --max-error 2) or --lossless"
        )
    if max_error is not None and not (isinstance(max_error, int | float) and 0 <= max_error < float("inf")):
        raise InputError(
            f"maximum error must be a finite number >= 0 in the data's units (0: lossless), got {max_error}"
        )
    if ratio is not None and not ratio > 1:
        raise InputError(f"ratio must be greater than 1 (raw size / compressed size), got {ratio}")
    if psnr is not None and not 0 < psnr < 200:
        raise InputError(f"PSNR target must be between 0 and 200 dB, got {psnr}")


def validate_engine(engine: str, executor: str = "auto") -> None:
    """``pool`` or ``data``; Ray Data needs Ray, so ``data`` contradicts the in-process executor."""
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine == "data" and executor == "local":
        raise InputError("--engine data runs the encode phase on Ray Data, which needs Ray: drop --executor local")


@dataclass(frozen=True)
class RunConfig:
    """Everything one compression run needs; :func:`streamcomp.api.compress` takes these as keywords.

    ``executor``: ``auto`` runs tiny inputs (under 64 MiB) in-process when no Ray is running, no
    address and no ``workers`` are given, Ray otherwise; ``ray`` / ``local`` force one (in-process,
    ``workers`` is the number of coding threads: default one per core for thread-safe methods). ``gpu``
    (default: whether the cluster has GPUs) makes workers request one GPU each. ``manifest``
    writes ``<dst>.manifest.json`` beside the output. ``shards`` (a shape in whole chunks, or
    ``"auto"``: about 1 GiB of raw data each) stores many chunks per object (zarr v3 sharding).
    ``engine``: ``pool`` (default) feeds the encode phase to the pipeline's own actor pool,
    ``data`` to a Ray Data actor-pool ``map_batches`` (:mod:`streamcomp.pipeline.dataset`; Ray
    only). ``max_error`` bounds every voxel's absolute error in the data's units (0: lossless, bit for
    bit); ``lossless=True`` is ``max_error=0``. ``ome_zarr`` writes an OME-Zarr 0.5 group: level 0 at
    ``DST/0`` (:attr:`array_url`), a pyramid of averaged levels coded per ``pyramid_codec``.
    """

    src: str
    dst: str
    method: str = DEFAULT_METHOD
    ratio: float | None = None
    psnr: float | None = None
    max_error: float | None = None
    lossless: bool = False
    chunks: str | tuple[int, ...] | None = None
    shards: str | tuple[int, ...] | None = None
    zarr_format: int = 3
    method_params: dict[str, Any] | None = None
    overwrite: bool = False
    resume: bool = False
    progress: bool = True
    storage_options: dict | None = None
    workers: int | None = None
    ray_address: str | None = None
    executor: str = "auto"
    engine: str = "pool"
    gpu: bool | None = None
    manifest: bool = True
    ome_zarr: bool = False
    pyramid_codec: str = "streamcomp"

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_error", error_bound(self.max_error, self.lossless))
        validate_target(self.ratio, self.psnr, self.max_error)
        if self.zarr_format not in (2, 3):
            raise InputError(f"zarr format must be 2 or 3, not {self.zarr_format}")
        if self.shards is not None and self.zarr_format != 3:
            raise InputError("shards need zarr format 3 (sharding_indexed is a zarr v3 codec); drop --zarr-format 2")
        if self.ome_zarr and self.zarr_format != 3:
            raise InputError("--ome-zarr writes an OME-Zarr 0.5 group, which is zarr format 3: drop --zarr-format 2")
        if self.pyramid_codec not in PYRAMID_CODECS:
            raise InputError(f"pyramid codec must be one of {', '.join(PYRAMID_CODECS)}, not {self.pyramid_codec!r}")
        if self.pyramid_codec != "streamcomp" and not self.ome_zarr:
            raise InputError("a pyramid codec needs --ome-zarr (only an OME-Zarr group has a pyramid)")
        if self.executor not in EXECUTORS:
            raise InputError(f"executor must be one of {', '.join(EXECUTORS)}, not {self.executor!r}")
        validate_engine(self.engine, self.executor)
        if self.workers is not None and self.workers < 1:
            raise InputError(f"workers must be at least 1, got {self.workers}")
        if self.method_params is not None and not isinstance(self.method_params, dict):
            raise InputError("method parameters must be a JSON object (a dict)")
        if os.path.abspath(local_path(self.src.partition("#")[0])) == os.path.abspath(local_path(self.dst)):
            raise InputError("the output must not be the source: streamcomp never overwrites its input")

    @property
    def array_url(self) -> str:
        """Where the compressed (level 0) array lies: ``DST/0`` in an OME-Zarr group, else ``DST``."""
        return self.dst.rstrip("/") + "/0" if self.ome_zarr else self.dst

    @property
    def target(self) -> dict[str, float]:
        if self.max_error is not None:
            return {"max_error": self.max_error}
        return {"ratio": self.ratio} if self.ratio is not None else {"psnr": self.psnr}

    @property
    def coder(self) -> str:
        """What codes the chunks, in words: the method, or the bounded mode that replaces it."""
        if self.max_error is None:
            return self.method
        return "lossless" if self.max_error == 0 else f"max error {self.max_error:g}"

    def max_mse(self, peak: float) -> float | None:
        """The PSNR target as an MSE in data units (None under a ratio target)."""
        return None if self.psnr is None else peak**2 / 10 ** (self.psnr / 10)
