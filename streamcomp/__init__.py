"""streamcomp: streaming INR compression of large biomedical volumes into plain zarr arrays.

``from streamcomp.api import compress`` compresses; any zarr or dask user reads the result back.
"""

__version__ = "0.1.0"
