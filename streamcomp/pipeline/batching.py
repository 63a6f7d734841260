"""Work handed to the pool in batches: big enough to amortize a call, small enough to balance."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any


def batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Lists of ``size`` items, drawn lazily: the plan's chunks are never all listed at once."""
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch


def batch_size(n: int, workers: int, cap: int) -> int:
    """About eight batches per worker, at most ``cap`` items each."""
    return max(1, min(cap, n // (workers * 8)))
