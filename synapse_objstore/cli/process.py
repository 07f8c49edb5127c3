"""What the objstore-offload process costs in memory, set up before any library is loaded.

- glibc gives each thread that allocates its own malloc arena (up to 8 per core), and each
  arena keeps the file buffers freed in it: with the worker threads that read and hash
  files, that is tens of MiB of peak RSS holding nothing. Two arenas serve a run that
  spends its time in the I/O loop and a few hashing threads (MALLOC_ARENA_MAX, set before
  the first thread starts; an admin's own MALLOC_ARENA_MAX is left alone).
- glibc serves a large allocation (a file's bytes read for its digest, a multipart part)
  with its own mmap only above a threshold that it raises to the size of each such block
  freed, up to 32 MiB: after the first 8 MiB part, every part and file buffer is carved
  from the heap, whose freed room is then kept (and fragmented) rather than given back.
  A fixed threshold (MALLOC_MMAP_THRESHOLD, which also stops the raising) gives each one
  back as it is freed: `upload --delete` of 400 media (1,384 files up to 21 MB) peaked at
  about 125 MiB of RSS before, 107 MiB after, for about 10% more CPU (system time: each such
  buffer mapped and faulted in anew; a 1 or 2 MiB threshold cost the same).
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

M_ARENA_MAX = -8  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
ARENAS = 2
MMAP_THRESHOLD = 256 * 1024


def lean_process() -> None:
    for variable, parameter, value in (("MALLOC_ARENA_MAX", M_ARENA_MAX, ARENAS),
                                       ("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, MMAP_THRESHOLD)):
        if variable not in os.environ:
            # not glibc (musl has no mallopt): its allocator has no such arenas or threshold
            with contextlib.suppress(OSError, AttributeError):
                ctypes.CDLL(None).mallopt(parameter, value)
    if "botocore.httpsession" not in sys.modules:
        sys.modules.setdefault("urllib3.contrib.pyopenssl", None)  # type: ignore[arg-type]
