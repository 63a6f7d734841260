"""The source layer: open an input volume lazily, wherever it is stored, and read blocks of it.

Torch-free on purpose: the driver, the planner and the archive job open sources without loading
any network code.
"""

from streamcomp.source.readers import Source, check_volume, open_source, split_format
from streamcomp.source.urls import (
    filesystem,
    is_url,
    local_path,
    path_exists,
    read_json,
    s3_options,
    tensorstore_kvstore,
    write_json,
)

__all__ = [
    "Source",
    "check_volume",
    "filesystem",
    "is_url",
    "local_path",
    "open_source",
    "path_exists",
    "read_json",
    "s3_options",
    "split_format",
    "tensorstore_kvstore",
    "write_json",
]
