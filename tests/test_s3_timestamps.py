"""S3 timestamps are parsed by backends/s3/timestamps.py as botocore's parser would, without
dateutil for the forms S3 sends (each took about 55 us of CPU per GET or HEAD)."""

from __future__ import annotations

from pathlib import Path

import pytest
from botocore.utils import parse_timestamp as botocore_parse_timestamp

from servers.moto import MotoServer
from synapse_objstore.backends.s3.timestamps import parse_timestamp
from synapse_objstore.config import parse_store_config
from synapse_objstore.io_loop import run
from synapse_objstore.store import ObjectStore
from tests.support.files import write
from tests.support.s3 import s3_client

FORMS = [
    "Fri, 04 Dec 2026 07:30:00 GMT",  # HTTP date: Last-Modified headers
    "Fri, 04 Dec 2026 07:30:00 +0100",
    "2026-12-04T07:30:00.000Z",  # ISO 8601: XML bodies (listings, CopyObjectResult)
    "2026-12-04T07:30:00Z",
    "2026-12-04T07:30:00.123456+02:00",
    "2026-12-04T07:30:00",  # no zone: UTC
    "1796369400",  # epoch seconds, as a string
    1796369400,
    "Dec 4 2026 7:30am UTC",  # neither form: botocore's own parser
]


@pytest.mark.parametrize("value", FORMS)
def test_every_form_parses_to_what_botocore_gives(value: str | int) -> None:
    ours, botocore = parse_timestamp(value), botocore_parse_timestamp(value)
    assert ours.tzinfo is not None
    if botocore.tzinfo is None:  # botocore leaves a form without a zone naive; S3's dates are UTC
        botocore = botocore.replace(tzinfo=ours.tzinfo)
    assert ours == botocore


def test_a_garbled_timestamp_fails_as_botocore_fails() -> None:
    with pytest.raises(ValueError):
        botocore_parse_timestamp("not a date")
    with pytest.raises(ValueError):
        parse_timestamp("not a date")


def test_heads_and_gets_through_the_store_never_reach_dateutil(
        moto: MotoServer, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's client parses Last-Modified with timestamps.py: with dateutil's parser
    broken, a HEAD, a GET and a listing still give the time the object was stored."""
    store = ObjectStore(parse_store_config({"bucket": bucket, "endpoint_url": moto.endpoint_url}))
    run(store.put_file(write(tmp_path / "a", b"media"), "local_content/ab/cd/ef"))
    stored = s3_client(moto.endpoint_url).head_object(Bucket=bucket, Key="local_content/ab/cd/ef")["LastModified"]

    def no_dateutil(*_: object, **__: object) -> None:
        raise AssertionError("dateutil's parser was called")

    monkeypatch.setattr("dateutil.parser.parse", no_dateutil)

    async def times() -> list[object]:
        info = await store.info("local_content/ab/cd/ef")
        stream = await store.open_read("local_content/ab/cd/ef")
        assert stream is not None
        assert await stream.read(100) == b"media"  # the GET's reply, Last-Modified too, was parsed
        await stream.close()
        listed = [item async for item in store.list("local_content/")]
        return [info.last_modified if info else None, listed[0].last_modified]

    head, listed = run(times())
    assert head == stored and listed == stored
