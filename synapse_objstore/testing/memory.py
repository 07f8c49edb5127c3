"""How much memory a piece of work takes at its peak, counted as Python allocations.

tracemalloc counts every allocation made through Python's allocator, in every thread: the
I/O loop's, the worker threads' and the reactor's. Buffers of object data (bytes, bytearrays)
are such allocations, so a store that holds a whole object in memory shows up in full.
"""

from __future__ import annotations

import contextlib
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class PeakMemory:
    bytes: int = 0


@contextlib.contextmanager
def peak_memory() -> Iterator[PeakMemory]:
    """Measure the peak of traced memory above what was in use when the block started."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    baseline, _ = tracemalloc.get_traced_memory()
    result = PeakMemory()
    try:
        yield result
    finally:
        result.bytes = tracemalloc.get_traced_memory()[1] - baseline
        if not was_tracing:
            tracemalloc.stop()
