"""SSE-C keys for the key rotation tests, objects written under a given key, and the requests
a store sends (botocore's events: the request as sent, and the status it got)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import REGISTRY

from synapse_objstore.io_loop import run
from synapse_objstore.store import ObjectStore
from synapse_objstore.testing.consumers import RecordingConsumer
from synapse_objstore.testing.synapse_harness import start_streaming, wait_for

# Three generations of a homeserver's SSE-C key (32 bytes each), and one it never had.
KEY_A = "generation-a-key-0123456789abcde"
KEY_B = "generation-b-key-0123456789abcde"
KEY_C = "generation-c-key-0123456789abcde"
STRAY_KEY = "a-key-nobody-configured-01234567"
KEY_HEADER = "x-amz-server-side-encryption-customer-key"
COPY_KEY_HEADER = "x-amz-copy-source-server-side-encryption-customer-key"


def put_under(s3: Any, bucket: str, key: str, data: bytes, sse_key: str | None) -> None:
    """Write an object as an earlier config would have: under `sse_key` (None: no SSE-C), with
    a Content-Type and user metadata that a rewrite must keep."""
    sse = {"SSECustomerKey": sse_key, "SSECustomerAlgorithm": "AES256"} if sse_key else {}
    s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType="image/png",
                  Metadata={"origin": key.replace("/", "-")}, **sse)


def request_kind(method: str, url: str, headers: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = parse_qs(parts.query, keep_blank_values=True)
    if method == "HEAD" and "/" not in parts.path.strip("/"):  # path-style: /bucket
        return "HeadBucket"
    if method == "PUT" and "partNumber" in query:
        return "UploadPartCopy" if "x-amz-copy-source" in headers else "UploadPart"
    if method == "PUT" and "x-amz-copy-source" in headers:
        return "CopyObject"
    if method == "POST" and "uploads" in query:
        return "CreateMultipartUpload"
    if method == "POST" and "uploadId" in query:
        return "CompleteMultipartUpload"
    if method == "DELETE" and "uploadId" in query:
        return "AbortMultipartUpload"
    return {"PUT": "PutObject", "GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(method, method)


class RequestLog:
    """Each request the store's client sent: its kind and headers, and the status it got."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, str]]] = []
        self.answers: list[int] = []

    def clear(self) -> None:
        self.sent.clear()
        self.answers.clear()

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.sent]

    def statuses(self) -> list[int]:
        return list(self.answers)

    def of_kind(self, kind: str) -> list[dict[str, str]]:
        return [headers for sent, headers in self.sent if sent == kind]


def record_requests(store: ObjectStore) -> RequestLog:
    """Record every request of `store`'s client from now on (connects the store)."""
    log = RequestLog()

    async def hook() -> None:
        await store.connect()

        def before_send(request: Any, **_: Any) -> None:
            headers = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
            log.sent.append((request_kind(request.method, request.url, headers), headers))

        def after_call(http_response: Any = None, parsed: Any = None, **_: Any) -> None:
            if http_response is not None:
                log.answers.append(int(http_response.status_code))

        events = store.filesystem().fs.s3.meta.events
        events.register("before-send.s3", before_send)
        events.register("after-call.s3", after_call)

    run(hook())
    return log


def previous_key_reads(label: str) -> float:
    """The provider's count of reads that needed the key `label` (all backends and servers)."""
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name == "synapse_objstore_previous_key_reads":
            total += sum(s.value for s in metric.samples
                         if s.name.endswith("_total") and s.labels.get("key") == label)
    return total


def stream_media(in_reactor: Callable[..., Any], provider: Any, path: str, info: Any) -> bytes:
    consumer = RecordingConsumer()
    wait_for(in_reactor, start_streaming(in_reactor, provider, path, info, consumer))
    return consumer.data
