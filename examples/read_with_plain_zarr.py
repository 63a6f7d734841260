"""Read a streamcomp array with plain zarr and dask: no streamcomp import, decode is transparent.

    python examples/read_with_plain_zarr.py out/em_sample.zarr
"""

import sys

import dask.array as da
import zarr

path = sys.argv[1] if len(sys.argv) > 1 else "out/em_sample.zarr"
array = zarr.open_array(path, mode="r")
print("zarr:", array.shape, array.dtype, "chunks", array.chunks)
print("one slice decoded by zarr, mean", float(array[0].mean()))
lazy = da.from_zarr(path)
print("dask: lazy", lazy, "-> mean of a sub-volume", float(lazy[:4, :64, :64].mean().compute()))
