"""OME-Zarr (NGFF 0.5) output: pyramid levels, downsampling by averaging, multiscales metadata, level arrays.

Viewers (neuroglancer, napari, webKnossos) expect an image group with ``multiscales``, axis names,
units and a pyramid. Level 0 is the compressed array at ``DST/0``; levels 1, 2, ... lie at
``DST/1``, ``DST/2``. Every level voxel is the mean of the source voxels it covers, computed from
the source itself (never from the lossy level 0), so each level chunk is an independent task that
reads only the region it covers, in bounded pieces.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np
import zarr
from numcodecs import Zstd
from zarr.core.buffer import default_buffer_prototype
from zarr.core.group import GroupMetadata

from streamcomp.errors import InputError
from streamcomp.format.codec import codec_config_of
from streamcomp.format.store import create_array, store_for
from streamcomp.source.readers import ome_multiscales

NGFF_VERSION = "0.5"
PYRAMID_CODECS = ("streamcomp", "zstd")  # level 0's codec configuration, or plain zstd any viewer decodes
MIN_INPLANE = 64  # no level is made from one whose in-plane size is at most this
MAX_READ_VOXELS = 2**24  # one source read while downsampling (the region is read in pieces)
ZSTD_LEVEL = 5
GROUP_DOC = "zarr.json"


@dataclass(frozen=True)
class Level:
    """One pyramid level: its path in the group, its factor per axis from the source, its shape."""

    path: str
    factors: tuple[int, ...]
    shape: tuple[int, ...]


def axis_names(ndim: int) -> tuple[str, ...]:
    """z, y, x for volumes, t, z, y, x for 4D series."""
    return ("z", "y", "x") if ndim == 3 else ("t", "z", "y", "x")


def plan_levels(shape: tuple[int, ...], chunks: tuple[int, ...], voxel_size: tuple[float, ...] | None) -> list[Level]:
    """Level 0 and the levels below it: 2x in-plane while z spacing is at least twice the in-plane
    spacing (serial-section EM), else 2x on every spatial axis; t is never downsampled. Stops once
    a level fits one chunk in-plane or is at most ``MIN_INPLANE`` voxels across."""
    ndim = len(shape)
    spacing = np.ones(ndim) if voxel_size is None else np.asarray(voxel_size, np.float64)
    z = ndim - 3
    levels = [Level("0", (1,) * ndim, tuple(shape))]
    while True:
        last = levels[-1]
        y, x = last.shape[-2:]
        if (y <= chunks[-2] and x <= chunks[-1]) or max(y, x) <= MIN_INPLANE:
            return levels
        current = spacing * np.asarray(last.factors)
        anisotropic = current[z] >= 2 * min(current[-2], current[-1])
        step = [1] * ndim
        for axis in range(z, ndim):
            if not (axis == z and anisotropic) and last.shape[axis] > 1:
                step[axis] = 2
        factors = tuple(f * s for f, s in zip(last.factors, step, strict=True))
        level_shape = tuple(math.ceil(n / f) for n, f in zip(shape, factors, strict=True))
        levels.append(Level(str(len(levels)), factors, level_shape))


def downsample(block: np.ndarray, factors: tuple[int, ...]) -> np.ndarray:
    """The mean over each ``factors`` box (partial boxes at the far edges average what they hold);
    integers round to the nearest, the dtype stays."""
    if all(f == 1 for f in factors):
        return block.copy()
    out = tuple(math.ceil(n / f) for n, f in zip(block.shape, factors, strict=True))
    padded = np.zeros(tuple(o * f for o, f in zip(out, factors, strict=True)), np.float64)
    padded[tuple(slice(0, n) for n in block.shape)] = block
    sums = padded.reshape([v for o, f in zip(out, factors, strict=True) for v in (o, f)]).sum(
        axis=tuple(range(1, 2 * block.ndim, 2))
    )
    counts = np.ones(())
    for n, f in zip(block.shape, factors, strict=True):  # voxels per box: separable, one axis at a time
        counts = np.multiply.outer(counts, np.minimum(f, n - f * np.arange(math.ceil(n / f))))
    mean = sums / counts
    if block.dtype.kind in "iu":
        mean = np.rint(mean)
    return mean.astype(block.dtype)


def level_block(
    read: Callable[[tuple[slice, ...]], np.ndarray],
    source_shape: tuple[int, ...],
    factors: tuple[int, ...],
    slices: tuple[slice, ...],
) -> np.ndarray:
    """The level region ``slices`` (level coordinates) computed from the source through ``read``,
    which is called on pieces of at most about ``MAX_READ_VOXELS`` source voxels."""
    region = [s.stop - s.start for s in slices]
    tile = list(region)
    while math.prod(tile) * math.prod(factors) > MAX_READ_VOXELS and max(tile) > 1:
        axis = int(np.argmax(tile))
        tile[axis] = math.ceil(tile[axis] / 2)
    out: np.ndarray | None = None
    for offsets in product(*(range(0, r, t) for r, t in zip(region, tile, strict=True))):
        part = tuple(
            slice(s.start + o, min(s.start + o + t, s.stop)) for s, o, t in zip(slices, offsets, tile, strict=True)
        )
        src = tuple(slice(p.start * f, min(p.stop * f, n)) for p, f, n in zip(part, factors, source_shape, strict=True))
        values = downsample(read(src), factors)
        if out is None:
            out = np.empty(region, values.dtype)
        out[tuple(slice(o, o + v) for o, v in zip(offsets, values.shape, strict=True))] = values
    return out


def multiscales_attrs(
    levels: list[Level],
    voxel_size: tuple[float, ...] | None,
    units: tuple[str | None, ...] | None,
    name: str,
    pyramid_codec: str,
) -> dict[str, Any]:
    """The group's NGFF 0.5 attributes: axes (name, type, unit) and per level a scale (voxel size
    times factor) and the translation that centres a mean over its source voxels."""
    ndim = len(levels[0].shape)
    base = np.ones(ndim) if voxel_size is None else np.asarray(voxel_size, np.float64)
    axes = []
    for i, axis in enumerate(axis_names(ndim)):
        entry = {"name": axis, "type": "time" if axis == "t" else "space"}
        if units is not None and units[i]:
            entry["unit"] = units[i]
        axes.append(entry)
    datasets = []
    for level in levels:
        factors = np.asarray(level.factors, np.float64)
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": (base * factors).tolist()}]
        if level.path != "0":
            transforms.append({"type": "translation", "translation": ((factors - 1) / 2 * base).tolist()})
        datasets.append({"path": level.path, "coordinateTransformations": transforms})
    multiscale = {
        "name": name,
        "axes": axes,
        "datasets": datasets,
        "type": "mean",
        "metadata": {"description": "level 0 coded by streamcomp; each level the mean of the source voxels it covers",
                     "pyramid_codec": pyramid_codec},
    }
    return {"ome": {"version": NGFF_VERSION, "multiscales": [multiscale]}}


def level_url(dst: str, path: str) -> str:
    return f"{dst.rstrip('/')}/{path}"


def level_chunks(level: Level, chunks: tuple[int, ...]) -> tuple[int, ...]:
    """Level 0's chunk shape, clipped to the level."""
    return tuple(min(c, n) for c, n in zip(chunks, level.shape, strict=True))


def _matches(array: zarr.Array, level: Level, chunks: tuple[int, ...], dtype: np.dtype, codec: str,
             config: dict[str, Any]) -> bool:
    if tuple(array.shape) != level.shape or tuple(array.chunks) != chunks or np.dtype(array.dtype) != dtype:
        return False
    if codec == "streamcomp":
        try:
            return codec_config_of(array) == config
        except InputError:
            return False
    return is_zstd_level(array)


def is_zstd_level(array: zarr.Array) -> bool:
    """Whether a level array is coded by plain zstd (a viewable preview) rather than streamcomp."""
    return [type(c).__name__ for c in array.compressors] == ["ZstdCodec"]


def prepare_level(
    url: str,
    storage_options: dict | None,
    level: Level,
    chunks: tuple[int, ...],
    dtype: np.dtype,
    codec: str,
    config: dict[str, Any],
    resume: bool,
) -> zarr.Array:
    """The level array at ``url``: on a resume the existing one when its metadata matches, else a new
    one (level 0's codec configuration, or plain zstd any viewer decodes)."""
    chunks = level_chunks(level, chunks)
    store = store_for(url, storage_options)
    if resume:
        try:
            existing = zarr.open_array(store, mode="r+")
        except (FileNotFoundError, zarr.errors.NodeTypeValidationError):
            existing = None
        if existing is not None and _matches(existing, level, chunks, dtype, codec, config):
            return existing
    if codec == "streamcomp":
        names = axis_names(len(level.shape))
        return create_array(store, level.shape, chunks, dtype, config, 3, overwrite=True, dimension_names=names)
    return zarr.create_array(
        store, shape=level.shape, chunks=chunks, dtype=dtype, fill_value=0, zarr_format=3, overwrite=True,
        compressors=zarr.codecs.ZstdCodec(level=ZSTD_LEVEL), filters=None, dimension_names=axis_names(len(level.shape)),
    )


def zstd_chunk(block: np.ndarray, chunk_shape: tuple[int, ...]) -> bytes:
    """A chunk's bytes as zarr's ``bytes`` (little endian) + ``zstd`` codecs store them: padded to
    the full chunk with the fill value 0."""
    full = np.zeros(chunk_shape, block.dtype.newbyteorder("<"))
    full[tuple(slice(0, n) for n in block.shape)] = block
    return Zstd(level=ZSTD_LEVEL).encode(full.tobytes())


def zstd_chunk_is_valid(data: bytes | None, chunk_shape: tuple[int, ...], dtype: np.dtype) -> bool:
    """Whether stored bytes are a whole zstd frame of one chunk."""
    if data is None:
        return False
    try:
        return len(Zstd().decode(data)) == math.prod(chunk_shape) * np.dtype(dtype).itemsize
    except RuntimeError:
        return False


def write_group(dst: str, storage_options: dict | None, attributes: dict[str, Any]) -> int:
    """Write (replace) the group's ``zarr.json`` in one store write; returns its size in bytes."""
    from zarr.core.sync import sync

    doc = GroupMetadata(attributes=attributes, zarr_format=3).to_buffer_dict(default_buffer_prototype())[GROUP_DOC]
    sync(store_for(dst, storage_options).set(GROUP_DOC, doc))
    return len(doc.to_bytes())


def group_levels(dst: str, storage_options: dict | None = None) -> list[str] | None:
    """The level paths of an OME-Zarr group (finest first), or None when ``dst`` is no such group."""
    multiscale = ome_multiscales(dst, storage_options)
    if multiscale is None:
        return None
    return [str(d["path"]) for d in multiscale.get("datasets", [])]


