"""What the objstore-offload process costs in memory, set up before any library is loaded.

- glibc gives each thread that allocates its own malloc arena (up to 8 per core), and each
  arena keeps the file buffers freed in it: with the worker threads that read and hash
  files, that is tens of MiB of peak RSS holding nothing. Two arenas serve a run that
  spends its time in the I/O loop and a few hashing threads (MALLOC_ARENA_MAX, set before
  the first thread starts; an admin's own MALLOC_ARENA_MAX is left alone).
- botocore's httpsession imports urllib3.contrib.pyopenssl only to reach the SSLContext
  class urllib3 had before pyOpenSSL patched it, and falls back to that same class
  (urllib3.util.ssl_.SSLContext, the standard library's) when the import fails; that import
  loads pyOpenSSL and cryptography (about 10 MiB of RSS), which the CLI never uses: the
  requests go through aiohttp and the standard ssl module. Marking the module absent, before
  botocore is imported, makes botocore take its fallback. A process that imported
  botocore already keeps what it has.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys

M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)
ARENAS = 2


def lean_process() -> None:
    if "MALLOC_ARENA_MAX" not in os.environ:
        # not glibc (musl has no mallopt): its allocator has no such arenas to limit
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).mallopt(M_ARENA_MAX, ARENAS)
    if "botocore.httpsession" not in sys.modules:
        sys.modules.setdefault("urllib3.contrib.pyopenssl", None)  # type: ignore[arg-type]
