"""The conformance suite against the gcs backend on gcp-storage-emulator (which checks no
credentials, so the refused-credentials tests skip; and ignores `ifGenerationMatch` on
downloads, so the pinned-stream test goes through a proxy that honours it, as GCS does)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from servers.gcs_emulator import GcsEmulator
from synapse_objstore.testing import BackendConformance, closed_port
from synapse_objstore.testing.fault_proxy import FaultProxy, Faults

MiB = 1024 * 1024


class TestGcsOnEmulator(BackendConformance):
    # One chunk (chunk_size, 8 MiB) is sent at a time, and is in memory up to four times: as
    # read from the file, the next one being read, aiohttp's copy joining it to the request's
    # headers (Python < 3.12), and the socket's buffer of what the kernel has not taken yet.
    # Measured 37-40 MiB, whatever the object's size.
    upload_memory_limit: ClassVar[int] = 4 * 8 * MiB + 16 * MiB

    @pytest.fixture
    def store_config(self, gcs_emulator: GcsEmulator) -> dict[str, Any]:
        bucket = gcs_emulator.create_bucket(f"media-{uuid.uuid4().hex[:12]}")
        return {"backend": "gcs", "bucket": bucket, "endpoint_url": gcs_emulator.endpoint_url, "token": "anon",
                "prefix": "hs/"}

    @pytest.fixture
    def pinning_store_config(self, store_config: dict[str, Any]) -> Iterator[dict[str, Any]]:
        with FaultProxy(store_config["endpoint_url"], Faults(gcs_generation_match=True)) as proxy:
            yield {**store_config, "endpoint_url": proxy.endpoint_url}

    @pytest.fixture
    def unreachable_store_config(self) -> dict[str, Any]:
        # the default timeouts and retries: what a user who configured nothing else gets
        return {"backend": "gcs", "bucket": "media", "endpoint_url": f"http://127.0.0.1:{closed_port()}",
                "token": "anon"}
