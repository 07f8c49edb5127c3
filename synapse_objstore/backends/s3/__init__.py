"""Amazon S3 and S3-compatible stores (Ceph RGW, MinIO, R2, B2, ...) through s3fs.

Every key of synapse-s3-storage-provider means what it meant there, and object keys are
`prefix + media path` in `bucket`, so a bucket written by it keeps working.

    settings.py      the `backend: s3` keys and their checks
    client.py        the s3fs filesystem (and aiobotocore client) built from them
    backend.py       S3Backend: HEAD, listings, incomplete multipart uploads, wiring
    uploads.py       PUT, conditional PUT and multipart uploads (the shared part loop)
    streaming.py     a GET's body streamed as received, resumed by ranged GETs, watchdog-timed
    keys.py          SSE-C key rotation on reads: the keys tried, in order, and which one fits
    rewrite.py       an object rewritten under the current SSE-C key (CopyObject, or through this host)
    s3fs_private.py  every private member of s3fs, aiobotocore and aiohttp used, and why
"""

from __future__ import annotations

from typing import Any

from synapse_objstore.backends.s3.backend import S3Backend
from synapse_objstore.backends.s3.settings import S3Settings
from synapse_objstore.backends.s3.streaming import S3BodyStream, TimedPieceReader
from synapse_objstore.hookspecs import hookimpl

__all__ = ["S3Backend", "S3BodyStream", "S3Settings", "TimedPieceReader", "register_backends"]


@hookimpl
def register_backends(register: Any) -> None:
    register(S3Backend)
