"""The public entry point: compress a volume into a streamcomp zarr array.

Everything the user could get wrong is checked before the output is created (:class:`RunConfig`
and the pipeline's open phase), so a bad call writes nothing. The work itself (plan, fit, encode,
write) is :mod:`streamcomp.pipeline`: chunks stream through Ray workers that read their own
blocks, so memory stays flat whatever the size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from streamcomp.errors import InputError
from streamcomp.pipeline import RunConfig, run


@dataclass
class CompressResult:
    dst: str
    method: str
    shape: tuple[int, ...]
    dtype: str
    chunks: tuple[int, ...]
    raw_bytes: int
    stored_bytes: int
    seconds: float
    chunks_written: int
    target: dict[str, float] = field(default_factory=dict)
    chunks_skipped: int = 0  # already present and valid (resume)
    manifest: str | None = None
    run: dict[str, Any] = field(default_factory=dict)  # pipeline statistics (executor, workers, times)
    coder: str = ""  # what coded the chunks: the method, or "lossless" / "max error E"
    pyramid_bytes: int | None = None  # an OME-Zarr group's levels 1.. and group document (not in ``ratio``)

    @property
    def ratio(self) -> float:
        return self.raw_bytes / max(self.stored_bytes, 1)

    @property
    def bits_per_voxel(self) -> float:
        return 8 * self.stored_bytes / (self.raw_bytes / np.dtype(self.dtype).itemsize)


def compress(src: str, dst: str, **options: Any) -> CompressResult:
    """Compress ``src`` (``.npy``, ``.tif``, HDF5, zarr/N5/precomputed path or URL) into a zarr array at ``dst``.

    ``options`` are the fields of :class:`~streamcomp.pipeline.RunConfig`: ``method``, one of
    ``ratio`` / ``psnr`` / ``max_error`` / ``lossless=True``, ``chunks``, ``shards``, ``zarr_format``,
    ``method_params``, ``overwrite``, ``resume``,
    ``progress``, ``storage_options``, ``workers``, ``ray_address``, ``executor``, ``engine`` (``pool``
    or ``data``: Ray Data feeds the encode phase), ``gpu``,
    ``manifest``, ``ome_zarr`` (an OME-Zarr 0.5 group with a pyramid; level 0 at ``dst/0``) and
    ``pyramid_codec`` (``streamcomp`` or ``zstd``). ``ray_address`` (or ``RAY_ADDRESS``) names a
    running cluster, otherwise an embedded local Ray is started with ``workers`` CPUs and stopped
    afterwards; tiny inputs run in-process. ``resume=True`` completes an existing output: finished
    chunks that pass the frame and CRC check are kept, the rest encoded with the array's own codec
    configuration.
    """
    try:
        cfg = RunConfig(src, dst, **options)
    except TypeError as exc:
        raise InputError(f"compress() got an unknown option: {exc}") from exc
    summary, stats = run(cfg)
    return CompressResult(
        dst=dst,
        method=cfg.method,
        shape=summary["shape"],
        dtype=summary["dtype"],
        chunks=summary["chunks"],
        raw_bytes=summary["raw_bytes"],
        stored_bytes=summary["stored_bytes"],
        seconds=stats.seconds.get("total", 0.0),
        chunks_written=stats.chunks_encoded,
        target=summary["target"],
        chunks_skipped=stats.chunks_skipped,
        manifest=summary["manifest"],
        run=asdict(stats),
        coder=cfg.coder,
        pyramid_bytes=summary.get("pyramid_bytes"),
    )
