"""streamcomp: streaming INR compression of large biomedical volumes into plain zarr arrays."""

__version__ = "0.1.0"
