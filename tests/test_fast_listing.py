"""ListObjectsV2 replies parsed by backends/s3/fast_listing.py give what botocore's parser gives
for the fields the listing reads, keys URL-decoded as before, over a real moto listing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from servers.moto import MotoServer
from synapse_objstore.backends.s3 import fast_listing
from tests.support.s3 import s3_client

FIELDS = ("Key", "Size", "ETag", "LastModified", "StorageClass")
ODD_KEYS = ["media/plain", "media/with space", "media/ünïcode/é", "media/amp&lt<gt>", "media/plus+percent%20"]


def _listing(moto: MotoServer, bucket: str, fast: bool, parsed: list[int]) -> list[dict[str, Any]]:
    """The listing; `parsed` gets the number of entries fast_listing parsed, page by page."""
    from aiobotocore.session import AioSession

    def count(customized_response_dict: dict[str, Any], **_: Any) -> None:
        parsed.append(len(customized_response_dict.get("Contents", [])))

    async def go() -> list[dict[str, Any]]:
        session = AioSession()
        async with session.create_client("s3", endpoint_url=moto.endpoint_url, region_name="us-east-1",
                                         aws_access_key_id="k", aws_secret_access_key="s") as client:
            if fast:
                fast_listing.register(client)
                client.meta.events.register(fast_listing.EVENT, count, unique_id="count-fast-parses")
            items: list[dict[str, Any]] = []
            async for page in client.get_paginator("list_objects_v2").paginate(
                    Bucket=bucket, Prefix="media/", PaginationConfig={"PageSize": 2}):
                items += [{f: item.get(f) for f in FIELDS} for item in page.get("Contents", [])]
            return items

    return asyncio.run(go())


def test_fast_listing_gives_what_botocore_gives(moto: MotoServer, tmp_path: Path) -> None:
    bucket = "fast-listing"
    client = s3_client(moto.endpoint_url)
    client.create_bucket(Bucket=bucket)
    for number, key in enumerate(ODD_KEYS):
        client.put_object(Bucket=bucket, Key=key, Body=b"x" * number)
    parsed: list[int] = []
    slow, fast = _listing(moto, bucket, False, []), _listing(moto, bucket, True, parsed)
    assert fast == slow
    assert parsed == [2, 2, 1]  # every page went through fast_listing
    assert sorted(item["Key"] for item in fast) == sorted(ODD_KEYS)


def test_a_body_that_is_no_xml_is_left_to_botocore() -> None:
    response = {"status_code": 200, "body": b"<ListBucketResult><Contents>not closed"}
    customized: dict[str, Any] = {}
    fast_listing.parse_contents(response_dict=response, customized_response_dict=customized)
    assert customized == {} and response["body"] == b"<ListBucketResult><Contents>not closed"
