"""fast_listing names elements as botocore does, by their local name whatever their namespace:
a reply whose root carries the S3 namespace under a prefix (`<s:ListBucketResult xmlns:s=...>`)
while its entries carry none is parsed by botocore into every entry. Matched by the root's
namespace, such entries were not found, and the page was handed back empty as its Contents:
the listing silently lacked every object while the pages went on."""

from __future__ import annotations

import copy
from typing import Any

import botocore.parsers
import botocore.session
import pytest

from synapse_objstore.backends.s3 import fast_listing

S3 = "http://s3.amazonaws.com/doc/2006-03-01/"
ENTRY = (b"<Contents><Key>media/a&amp;b\nc</Key><LastModified>2026-01-02T03:04:05.678Z</LastModified>"
         b"<ETag>&quot;abc&quot;</ETag><Size> 12 </Size><StorageClass>STANDARD</StorageClass></Contents>")
TAIL = b"<IsTruncated>true</IsTruncated><NextContinuationToken>t&amp;&#233;</NextContinuationToken>"
BODIES = {
    "default namespace": b'<ListBucketResult xmlns="' + S3.encode() + b'">' + ENTRY * 2 + TAIL + b"</ListBucketResult>",
    "no namespace": b"<ListBucketResult>" + ENTRY * 2 + TAIL + b"</ListBucketResult>",
    "prefixed root": (b'<s:ListBucketResult xmlns:s="' + S3.encode() + b'">' + ENTRY * 2 + TAIL
                      + b"</s:ListBucketResult>"),
    "entries in another namespace": (b'<ListBucketResult xmlns="' + S3.encode() + b'">'
                                     + ENTRY.replace(b"<Contents>", b'<Contents xmlns="urn:x">') * 2 + TAIL
                                     + b"</ListBucketResult>"),
}


def _parse(body: bytes, fast: bool) -> dict[str, Any]:
    model = botocore.session.get_session().get_service_model("s3").operation_model("ListObjectsV2")
    response: dict[str, Any] = {"status_code": 200, "headers": {}, "body": copy.copy(body)}
    customized: dict[str, Any] = {}
    if fast:
        fast_listing.parse_contents(response_dict=response, customized_response_dict=customized)
    parsed: dict[str, Any] = botocore.parsers.create_parser("rest-xml").parse(response, model.output_shape)
    parsed.update(customized)
    parsed.pop("ResponseMetadata", None)
    return parsed


@pytest.mark.parametrize("name", BODIES)
def test_fast_listing_finds_the_entries_botocore_finds(name: str) -> None:
    slow, fast = _parse(BODIES[name], False), _parse(BODIES[name], True)
    assert len(slow["Contents"]) == 2
    assert fast == slow
