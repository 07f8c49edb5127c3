"""SSE-C and storage class travel on every request that needs them, and secrets stay out of logs.

moto accepts SSE-C and ignores it, so these tests look at the requests botocore actually
sends (its `before-send` event, the last step before the wire). Ceph RGW, which enforces
SSE-C, is in test_ceph_rgw.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from servers.moto import MotoServer
from synapse_objstore.config import parse_store_config
from synapse_objstore.io_loop import run
from synapse_objstore.store import ObjectStore
from synapse_objstore.testing.suite import read_object
from tests.support.files import write
from tests.support.logs import debug_logs
from tests.support.sse_c import KEY_HEADER, record_requests

MiB = 1024 * 1024
SSE_KEY = "0123456789abcdef0123456789ABCDEF"
SECRET_KEY = "super-secret-access-key-value"
ALGO_HEADER = "x-amz-server-side-encryption-customer-algorithm"


@pytest.fixture
def recorded(moto: MotoServer, bucket: str) -> tuple[ObjectStore, list[tuple[str, dict[str, str]]]]:
    store = ObjectStore(parse_store_config({
        "bucket": bucket, "endpoint_url": moto.endpoint_url, "access_key_id": "AKIDTEST",
        "secret_access_key": SECRET_KEY, "sse_customer_key": SSE_KEY, "storage_class": "STANDARD_IA",
        "multipart_threshold": "5MiB", "multipart_chunksize": "5MiB",
    }))
    return store, record_requests(store).sent


def test_every_data_request_carries_the_sse_c_key(recorded: tuple[ObjectStore, list[Any]], tmp_path: Path) -> None:
    store, sent = recorded
    small, big = b"s" * 2000, os.urandom(11 * MiB)
    run(store.put_file(write(tmp_path / "small", small), "local_content/sm/al/l"))
    run(store.put_file(write(tmp_path / "big", big), "local_content/bi/gg/big"))
    assert run(store.info("local_content/bi/gg/big")) is not None
    assert run(read_object(store, "local_content/sm/al/l")) == small
    assert run(read_object(store, "local_content/bi/gg/big")) == big

    kinds = [kind for kind, _ in sent]
    assert kinds.count("UploadPart") == 3 and "CreateMultipartUpload" in kinds
    needing_key = {"PutObject", "CreateMultipartUpload", "UploadPart", "HeadObject", "GetObject"}
    checked = [(kind, headers) for kind, headers in sent if kind in needing_key]
    assert {kind for kind, _ in checked} == needing_key
    for kind, headers in checked:
        assert headers.get(ALGO_HEADER) == "AES256", kind
        assert headers.get(KEY_HEADER), f"{kind} was sent without the SSE-C key"
        assert headers.get(KEY_HEADER + "-md5"), kind
    for kind, headers in sent:
        if kind in ("PutObject", "CreateMultipartUpload"):
            assert headers.get("x-amz-storage-class") == "STANDARD_IA", kind


def test_the_key_is_sent_as_synapse_s3_storage_provider_sends_it(recorded: tuple[ObjectStore, list[Any]],
                                                                tmp_path: Path) -> None:
    """The configured string goes to botocore as-is, which base64-encodes it: objects written
    by the old provider with the same key stay readable."""
    import base64
    import hashlib

    store, sent = recorded
    run(store.put_file(write(tmp_path / "f", b"x"), "local_content/aa/bb/cc"))
    headers = next(h for kind, h in sent if kind == "PutObject")
    assert headers[KEY_HEADER] == base64.b64encode(SSE_KEY.encode()).decode()
    assert headers[KEY_HEADER + "-md5"] == base64.b64encode(hashlib.md5(SSE_KEY.encode()).digest()).decode()


def test_secrets_never_reach_the_logs(recorded: tuple[ObjectStore, list[Any]], tmp_path: Path) -> None:
    store, _ = recorded
    with debug_logs() as output:
        run(store.put_file(write(tmp_path / "f", b"payload"), "local_content/lo/gg/ed"))
        assert run(read_object(store, "local_content/lo/gg/ed")) == b"payload"
        run(store.put_file(write(tmp_path / "big", os.urandom(6 * MiB)), "local_content/lo/gg/big"))
    logged = output.getvalue()
    assert "botocore" in logged and "<redacted>" in logged  # botocore did log the request parameters
    import base64

    for secret in (SSE_KEY, SECRET_KEY, base64.b64encode(SSE_KEY.encode()).decode()):
        assert secret not in logged
