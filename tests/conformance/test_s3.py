"""The conformance suite against the S3 backend on moto."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from servers.moto import MotoServer
from synapse_objstore.testing import BackendConformance, closed_port

MiB = 1024 * 1024


class TestS3OnMoto(BackendConformance):
    # Up to multipart_concurrency (4) parts of multipart_chunksize (8 MiB) are in flight, and
    # each is in memory twice: the part as read from the file, and the copy aiohttp makes of
    # the BytesIO botocore wraps it in. 64 MiB, measured 66-78 MiB, whatever the object's size.
    upload_memory_limit: ClassVar[int] = 2 * 4 * 8 * MiB + 16 * MiB

    @pytest.fixture
    def store_config(self, moto: MotoServer, bucket: str) -> dict[str, Any]:
        return {"backend": "s3", "bucket": bucket, "endpoint_url": moto.endpoint_url, "prefix": "hs/"}

    @pytest.fixture
    def unreachable_store_config(self) -> dict[str, Any]:
        # the default timeouts and retries: what a user who configured nothing else gets
        return {"backend": "s3", "bucket": "media", "endpoint_url": f"http://127.0.0.1:{closed_port()}",
                "access_key_id": "AKIDUNREACHABLE", "secret_access_key": "s3cr3t-never-shown"}
