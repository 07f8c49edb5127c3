"""The conformance suite against the S3 backend on Ceph's RADOS Gateway, which checks request
signatures (so refused credentials can be proven) and enforces SSE-C (whose ETags are no MD5s,
so verification reads objects back)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from servers.ceph_rgw import CephRGW
from synapse_objstore.testing import BackendConformance, closed_port
from tests.support.s3 import SSE_KEY

pytestmark = pytest.mark.ceph

MiB = 1024 * 1024


def rgw_config(rgw: CephRGW, bucket: str, **extra: Any) -> dict[str, Any]:
    return {"backend": "s3", "bucket": bucket, "endpoint_url": rgw.endpoint_url, "addressing_style": "path",
            "access_key_id": rgw.access_key, "secret_access_key": rgw.secret_key, "prefix": "hs/", **extra}


class TestS3OnCeph(BackendConformance):
    # as on moto (tests/conformance/test_s3.py): 4 parts of 8 MiB in flight, each held once
    upload_memory_limit: ClassVar[int] = 4 * 8 * MiB + 20 * MiB

    @pytest.fixture
    def store_config(self, rgw: CephRGW, rgw_bucket: str) -> dict[str, Any]:
        return rgw_config(rgw, rgw_bucket)

    @pytest.fixture
    def unreachable_store_config(self, rgw: CephRGW) -> dict[str, Any]:
        return {**rgw_config(rgw, "media"), "endpoint_url": f"http://127.0.0.1:{closed_port()}"}

    @pytest.fixture
    def bad_credentials_store_config(self, rgw: CephRGW, rgw_bucket: str) -> dict[str, Any]:
        return rgw_config(rgw, rgw_bucket, secret_access_key="not-the-secret-key-of-this-user")


class TestS3WithSseCOnCeph(TestS3OnCeph):
    @pytest.fixture
    def store_config(self, rgw: CephRGW, rgw_bucket: str) -> dict[str, Any]:
        return rgw_config(rgw, rgw_bucket, sse_customer_key=SSE_KEY)

    @pytest.fixture
    def bad_credentials_store_config(self, rgw: CephRGW, rgw_bucket: str) -> dict[str, Any]:
        return rgw_config(rgw, rgw_bucket, sse_customer_key=SSE_KEY,
                          secret_access_key="not-the-secret-key-of-this-user")
