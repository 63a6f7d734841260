"""The on-disk contract: chunk frames, the registered zarr/numcodecs codec, output stores."""
