"""Decoding at a chosen resolution: a coordinate method's chunks evaluated on a coarser (or finer)
grid, instead of decoding every voxel and then resampling.

The output grid of an axis of ``n`` voxels at scale ``s`` has ``m = max(1, round(n * s))`` voxels;
output voxel ``j`` is centred at source position ``(j + 0.5) * n / m - 0.5``, the centre of the
source voxels it covers (for ``s = 1/2``, between voxels ``2j`` and ``2j + 1``, where averaging
would put it). Each output voxel is evaluated by the chunk that holds its centre, in that chunk's
[-1, 1] coordinates, so only the chunks a region touches are read.

A coarser voxel stands for the average over its cell, and a point value keeps the fine-scale error
that averaging removes: each is the mean of two points of its cell (:func:`supersampling_offsets`),
or, at scale 1/2 (along any axes, 1 along the others) of a method whose fit was trained for
two-voxel cells (``siren`` with ``half_scale_weight``), one evaluation of the cell itself
(:meth:`~streamcomp.methods.base.Method.decode_cells`).
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from streamcomp.errors import ChunkFormatError, InputError
from streamcomp.format.chunk import NONFINITE_VALUES, denormalize, nonfinite_classes
from streamcomp.format.codec import codec_config_of, method_from_config, usable_cores
from streamcomp.format.frame import Frame, unpack
from streamcomp.format.shards import chunks_per_shard, unpack_shard
from streamcomp.format.store import read_chunk
from streamcomp.methods import Method
from streamcomp.verify import open_compressed

MAX_SCALE = 8.0


def parse_scale(scale: float | str | Sequence[float], ndim: int) -> tuple[float, ...]:
    """One scale per axis from a number, ``"0.5"``, ``"1,0.5,0.5"`` or a sequence."""
    if isinstance(scale, str):
        try:
            values = tuple(float(v) for v in scale.split(","))
        except ValueError as exc:
            raise InputError(f"scale must be a number or one per axis like 1,0.5,0.5, got {scale!r}") from exc
    elif isinstance(scale, int | float):
        values = (float(scale),)
    else:
        values = tuple(float(v) for v in scale)
    if len(values) == 1:
        values = values * ndim
    if len(values) != ndim:
        raise InputError(f"scale needs one value or one per axis ({ndim}), got {len(values)}")
    if not all(0 < v <= MAX_SCALE and math.isfinite(v) for v in values):
        raise InputError(f"every scale must be in (0, {MAX_SCALE:g}], got {values}")
    return values


def scaled_shape(shape: Sequence[int], scale: Sequence[float]) -> tuple[int, ...]:
    return tuple(max(1, round(n * s)) for n, s in zip(shape, scale, strict=True))


def _check_region(region: Sequence[slice] | None, shape: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    if region is None:
        return tuple((0, n) for n in shape)
    if len(region) != len(shape):
        raise InputError(f"region needs one slice per axis ({len(shape)}), got {len(region)}")
    out = []
    for sl, n in zip(region, shape, strict=True):
        start, stop, step = sl.indices(n)
        if step != 1 or stop <= start:
            raise InputError(f"region slices must be non-empty with step 1 inside the array {shape}, got {sl}")
        out.append((start, stop))
    return tuple(out)


def coordinate_method(config: dict) -> Method:
    """The array's method, if its chunks can be evaluated at arbitrary coordinates."""
    if config.get("max_error") is not None:
        raise InputError("an error-bounded (lossless or --max-error) array decodes at full resolution only")
    method = method_from_config(config)
    if type(method).decode_at is Method.decode_at:
        raise InputError(
            f"method {method.name!r} stores no continuous representation, so it cannot decode at another "
            "scale: decode at full resolution (streamcomp decompress) and downsample, or compress with a "
            "coordinate method (sr, siren, sci, planes, unicompress)"
        )
    return method


class ScaledReader:
    """Reads regions of a compressed array at a chosen scale (see the module doc)."""

    def __init__(self, dst: str, scale: float | str | Sequence[float], storage_options: dict | None = None) -> None:
        self.array = open_compressed(dst, storage_options)
        self.method = coordinate_method(codec_config_of(self.array))
        self.shape = tuple(self.array.shape)
        self.chunks = tuple(self.array.chunks)
        self.scale = parse_scale(scale, len(self.shape))
        self.dtype = np.dtype(self.array.dtype)
        self._shard: tuple[tuple[int, ...], dict | None] | None = None
        self._shard_lock = threading.Lock()
        self._offsets = supersampling_offsets(self.scale)
        # Halving some axes and keeping the others: a method trained for two-voxel cells
        # (``decode_cells``) evaluates each output voxel once instead of supersampling.
        self._halving = set(self.scale) <= {0.5, 1.0} and 0.5 in self.scale

    def output_shape(self, region: Sequence[slice] | None = None) -> tuple[int, ...]:
        bounds = _check_region(region, self.shape)
        return scaled_shape([hi - lo for lo, hi in bounds], self.scale)

    def read(self, region: Sequence[slice] | None = None) -> np.ndarray:
        """The region (source voxel coordinates; None: everything) at the reader's scale."""
        out = np.empty(self.output_shape(region), dtype=self.dtype)
        for where, values in self.pieces(region):
            out[where] = values
        return out

    def pieces(self, region: Sequence[slice] | None = None) -> Iterator[tuple[tuple[slice, ...], np.ndarray]]:
        """(output slices, values) per chunk the region touches, in C order of chunks, so a caller
        can write a large output piece by piece.

        Chunks are read and evaluated on a thread per usable core (torch and the store release the
        GIL), as zarr decodes a full-resolution read; at most two per thread are in flight, so memory
        stays bounded."""
        workers = usable_cores()
        with ThreadPoolExecutor(workers) as pool:
            pending: deque = deque()
            for combo in itertools.product(*self._groups(region)):
                coords = tuple(chunk for chunk, _, _ in combo)
                index = tuple(out_idx for _, out_idx, _ in combo)
                local = [pos for _, _, pos in combo]
                pending.append((index, pool.submit(self._evaluate, coords, local)))
                if len(pending) > 2 * workers:
                    index, future = pending.popleft()
                    yield index, future.result()
            while pending:
                index, future = pending.popleft()
                yield index, future.result()

    def piece_count(self, region: Sequence[slice] | None = None) -> int:
        """How many pieces :meth:`pieces` yields: the chunks the region's output grid falls in."""
        return math.prod(len(groups) for groups in self._groups(region))

    def _groups(self, region: Sequence[slice] | None) -> list[list[tuple[int, slice, np.ndarray]]]:
        bounds = _check_region(region, self.shape)
        return [
            _axis_groups(lo, hi, s, c, n)
            for (lo, hi), s, c, n in zip(bounds, self.scale, self.chunks, self.shape, strict=True)
        ]

    def _evaluate(self, coords: tuple[int, ...], local: list[np.ndarray]) -> np.ndarray:
        shape = tuple(len(p) for p in local)
        data = self._chunk_bytes(coords)
        if data is None:
            return np.full(shape, self.array.fill_value, dtype=self.dtype)
        frame = unpack(data)
        if frame.method_id != self.method.method_id:
            raise ChunkFormatError(
                f"chunk {coords} was written by method id {frame.method_id}, not by {self.method.name!r}"
            )
        if frame.constant:
            return np.full(shape, frame.vmin).astype(self.dtype)
        sections = frame.sections[1:] if frame.has_nonfinite else frame.sections
        valid = tuple(frame.valid)
        norm = None
        if self._halving:
            # A halved axis's cell: two voxels, each half the [-1, 1] voxel spacing from its centre.
            spread = [1.0 / (v - 1) if s == 0.5 and v > 1 else 0.0 for s, v in zip(self.scale, valid, strict=True)]
            centres = _points(local, (0.0,) * len(local), valid)
            norm = self.method.decode_cells(sections, valid, centres, torch.tensor(spread))
        if norm is None:
            # One call for every point: a method's per-chunk set-up (loading, a feature grid) runs once.
            points = torch.cat([_points(local, offset, valid) for offset in self._offsets])
            norm = self.method.decode_at(sections, valid, points).reshape(len(self._offsets), -1).mean(axis=0)
        values = denormalize(frame, norm.astype(np.float64).reshape(shape))
        if frame.has_nonfinite:
            values = _refill_nonfinite(frame, values, local)
        if self.dtype.kind in "iu":
            values = np.rint(values)
        return values.astype(self.dtype)

    def _chunk_bytes(self, coords: tuple[int, ...]) -> bytes | None:
        if self.array.shards is None:
            return read_chunk(self.array, coords)
        per_shard = chunks_per_shard(tuple(self.array.shards), self.chunks)
        shard = tuple(c // k for c, k in zip(coords, per_shard, strict=True))
        with self._shard_lock:  # chunks are read on several threads; consecutive ones share a shard
            if self._shard is None or self._shard[0] != shard:
                data = read_chunk(self.array, shard)
                parts = None if data is None else unpack_shard(data, per_shard)
                if data is not None and parts is None:
                    raise ChunkFormatError(f"shard {shard} of {self.array.store_path} is damaged (index or checksum)")
                self._shard = (shard, parts)
            parts = self._shard[1]
        return None if parts is None else parts.get(tuple(c % k for c, k in zip(coords, per_shard, strict=True)))


def supersampling_offsets(scale: Sequence[float]) -> list[tuple[float, ...]]:
    """Where, around each output voxel centre, the representation is evaluated (source voxel units).

    An output voxel coarser than the source stands for the average over its cell, and a point value
    keeps the representation's fine-scale error that averaging removes. Two points along the cell's
    diagonal, at the 2-point Gauss-Legendre nodes (+-w / (2 sqrt 3) for a cell w voxels wide),
    integrate the cell exactly for functions linear along every axis, at a quarter of the cost
    of the 8 points that decoding every voxel takes at scale 1/2.
    """
    half = [1 / (2 * math.sqrt(3) * s) if s < 1 else 0.0 for s in scale]
    if not any(half):
        return [tuple(0.0 for _ in scale)]
    return [tuple(half), tuple(-h for h in half)]


def _axis_groups(lo: int, hi: int, scale: float, chunk: int, n: int) -> list[tuple[int, slice, np.ndarray]]:
    """Per chunk along one axis: (chunk index, output slice, output centres within the chunk)."""
    m = max(1, round((hi - lo) * scale))
    centres = lo + (np.arange(m) + 0.5) * (hi - lo) / m - 0.5
    owner = np.clip(np.floor((centres + 0.5) / chunk).astype(int), 0, (n - 1) // chunk)
    groups = []
    for c in np.unique(owner):
        where = np.flatnonzero(owner == c)  # contiguous: owners rise with the centres
        groups.append((int(c), slice(int(where[0]), int(where[-1]) + 1), centres[where] - c * chunk))
    return groups


def _points(local: list[np.ndarray], offset: tuple[float, ...], valid: tuple[int, ...]) -> torch.Tensor:
    """The chunk's [-1, 1] coordinates of the output voxels (positions ``local`` per axis, moved
    by ``offset`` source voxels), one row per voxel in C order."""
    axes = [_unit_coords(p + o, v) for p, o, v in zip(local, offset, valid, strict=True)]
    mesh = torch.meshgrid(*[torch.from_numpy(a) for a in axes], indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=-1).float()


def _unit_coords(positions: np.ndarray, valid: int) -> np.ndarray:
    """Voxel positions within a chunk to its [-1, 1] coordinates (those of ``models.coords.grid``)."""
    if valid == 1:
        return np.zeros_like(positions, dtype=np.float32)
    return (-1 + 2 * positions / (valid - 1)).astype(np.float32)


def _refill_nonfinite(frame: Frame, values: np.ndarray, local: list[np.ndarray]) -> np.ndarray:
    """NaN / inf where the nearest source voxel had them."""
    nearest = [np.clip(np.rint(p).astype(int), 0, v - 1) for p, v in zip(local, frame.valid, strict=True)]
    picked = nonfinite_classes(frame)[np.ix_(*nearest)]
    return np.where(picked > 0, NONFINITE_VALUES[picked], values)


def read_scaled(
    dst: str,
    scale: float | str | Sequence[float],
    region: Sequence[slice] | None = None,
    storage_options: dict | None = None,
) -> np.ndarray:
    """``region`` of the compressed array at ``dst`` (whole array by default) decoded at ``scale``
    (one per axis or one for all; 0.5 halves every axis), evaluating each chunk's representation
    on the coarser grid. Only coordinate methods can (others raise :class:`InputError`)."""
    return ScaledReader(dst, scale, storage_options).read(region)
