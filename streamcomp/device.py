"""Where tensors go and how many threads they use.

The GPU when there is one, the CPU otherwise (never required). Training and per-chunk
refinement run many small ops; on a CPU that other processes (Ray actors, other tests) share,
intra-op threads spin against each other and a fit ran 20x slower with two threads than with one,
so those loops run single-threaded (``single_thread``); parallelism comes from running chunks in
separate processes instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextmanager
def single_thread() -> Iterator[None]:
    """Run the enclosed torch CPU work on one intra-op thread, restoring the setting after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
