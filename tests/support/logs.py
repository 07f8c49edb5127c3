"""Everything the process logs while a block runs, at DEBUG (botocore then logs each request's
parameters): what a test searches for secrets."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def debug_logs() -> Iterator[io.StringIO]:
    """The root logger at DEBUG into a buffer for the block; its level and handlers as they were after."""
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield output
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
