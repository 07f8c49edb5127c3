"""The conformance suite against the S3 backend on moto."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from servers.moto import MotoServer
from synapse_objstore.testing import BackendConformance, closed_port

MiB = 1024 * 1024


class TestS3OnMoto(BackendConformance):
    # Up to multipart_concurrency (4) parts of multipart_chunksize (8 MiB) are in flight, each
    # in memory once: aiohttp sends the part as read from the file, a chunk at a time, with no
    # copy of its own (s3fs_private.SentAsIsBody). 32 MiB, whatever the object's size, and the
    # client's first call (botocore's models, about 12 MiB): measured 46-47 MiB (66-78 with the copy).
    upload_memory_limit: ClassVar[int] = 4 * 8 * MiB + 20 * MiB

    @pytest.fixture
    def store_config(self, moto: MotoServer, bucket: str) -> dict[str, Any]:
        return {"backend": "s3", "bucket": bucket, "endpoint_url": moto.endpoint_url, "prefix": "hs/"}

    @pytest.fixture
    def unreachable_store_config(self) -> dict[str, Any]:
        # the default timeouts and retries: what a user who configured nothing else gets
        return {"backend": "s3", "bucket": "media", "endpoint_url": f"http://127.0.0.1:{closed_port()}",
                "access_key_id": "AKIDUNREACHABLE", "secret_access_key": "s3cr3t-never-shown"}
