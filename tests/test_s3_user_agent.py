"""The S3 client sends a User-Agent built once (backends/s3/client.py USER_AGENT), not
rebuilt by botocore for every request."""

from __future__ import annotations

import asyncio
import contextlib

from synapse_objstore.backends.s3.client import USER_AGENT, create_s3_filesystem
from synapse_objstore.backends.s3.settings import S3Settings


def test_requests_carry_the_fixed_user_agent() -> None:
    async def sent_user_agents() -> list[str]:
        settings = S3Settings.model_validate({
            "bucket": "b", "endpoint_url": "http://127.0.0.1:9", "access_key_id": "k", "secret_access_key": "s",
            "region_name": "us-east-1", "retries": 0, "connect_timeout": 1})
        client = await create_s3_filesystem(settings, None, asyncio.get_running_loop()).set_session()
        seen: list[str] = []
        client.meta.events.register(
            "before-send.s3", lambda request, **_: seen.append(request.headers["User-Agent"].decode()))
        with contextlib.suppress(Exception):  # nothing listens there: the request was built, and that is all
            await client.head_bucket(Bucket="b")
        await client.close()
        return seen

    seen = asyncio.run(sent_user_agents())
    assert seen and seen[0].startswith(USER_AGENT)
