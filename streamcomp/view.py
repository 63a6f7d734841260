"""``streamcomp view``: serve a decoded array (any pyramid level) to neuroglancer, on 127.0.0.1 only.

No viewer runs the streamcomp codec, but neuroglancer's Python integration can serve an array
from this process: each block the browser asks for is read through zarr here, which decodes only
the chunks it touches. The server binds to loopback; reach it from elsewhere through an SSH tunnel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamcomp.errors import InputError
from streamcomp.format.ome import axis_names
from streamcomp.source.readers import level_scale, ome_multiscales
from streamcomp.verify import open_compressed

BIND_ADDRESS = "127.0.0.1"
# NGFF unit names -> the SI symbols neuroglancer's coordinate spaces take.
NEUROGLANCER_UNITS = {
    "nanometer": "nm", "micrometer": "um", "millimeter": "mm", "centimeter": "cm", "meter": "m",
    "angstrom": "Å", "second": "s", "millisecond": "ms", "microsecond": "us", "nanosecond": "ns",
}


@dataclass
class Served:
    """A running neuroglancer viewer showing one level: open ``url`` in a browser."""

    viewer: Any
    volume: Any
    array: Any
    url: str


def _neuroglancer() -> Any:
    try:
        import neuroglancer
    except ImportError as exc:
        raise InputError("streamcomp view needs the neuroglancer package: pip install 'streamcomp[view]'") from exc
    return neuroglancer


def coordinate_space(dst: str, storage_options: dict | None, level: int, ndim: int) -> dict[str, list]:
    """Axis names, units and voxel sizes of a level, from the group's ``multiscales`` (unit-less 1s
    for a plain array or a group that gives none)."""
    scales, units = [1.0] * ndim, [""] * ndim
    multiscale = ome_multiscales(dst, storage_options)
    if multiscale is not None:
        found = level_scale(multiscale, str(multiscale["datasets"][level]["path"]))
        if found is not None and len(found[0]) == ndim:
            scales = list(found[0])
            units = [NEUROGLANCER_UNITS.get(u, "") if u else "" for u in found[1]]
    return {"names": list(axis_names(ndim)), "units": units, "scales": scales}


def serve(dst: str, level: int = 0, port: int = 0, storage_options: dict | None = None) -> Served:
    """Start neuroglancer's server on 127.0.0.1:``port`` (0: any free port) showing ``level`` of ``dst``."""
    if not 0 <= port <= 65535:
        raise InputError(f"port must be between 0 and 65535, got {port}")
    ng = _neuroglancer()
    array = open_compressed(dst, storage_options, level)
    dims = ng.CoordinateSpace(**coordinate_space(dst, storage_options, level, array.ndim))
    ng.set_server_bind_address(BIND_ADDRESS, bind_port=port)
    volume = ng.LocalVolume(data=array, dimensions=dims, volume_type="image")
    viewer = ng.Viewer()
    with viewer.txn() as state:
        state.dimensions = dims
        state.layers[f"level {level}"] = ng.ImageLayer(source=volume)
    return Served(viewer, volume, array, viewer.get_viewer_url())


def stop() -> None:
    """Stop the server (every viewer URL it gave stops working)."""
    _neuroglancer().stop()
