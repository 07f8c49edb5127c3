"""The CPU of botocore's request pipeline for one small PutObject, with no network: the reply
is canned at botocore's `before-send` event. Where bench/s3_put_micro.py's rounds scatter too
much to show a part of a millisecond, this shows the parts of the store's PUT path one at a time:

    s3fs+signed      s3fs's `_call_s3` (how the store sent it before), payload SHA-256 signed
    direct+signed    S3Uploader._put_object (straight on the client), payload signed
    direct+unsigned  the same to a loopback endpoint: UNSIGNED-PAYLOAD (client.signs_payloads)

    python bench/s3_put_canned.py --files 500 --rounds 10
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import random
import resource
import statistics
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from aiobotocore.awsrequest import AioAWSResponse

from synapse_objstore.backends.s3.client import create_s3_filesystem
from synapse_objstore.backends.s3.s3fs_private import call_s3
from synapse_objstore.backends.s3.settings import S3Settings
from synapse_objstore.backends.s3.uploads import S3Uploader


class EmptyBody:
    async def read(self) -> bytes:
        return b""


def canned_reply(request: Any, **_: Any) -> AioAWSResponse:
    return AioAWSResponse(request.url, 200, {"etag": '"0"', "content-length": "0"}, EmptyBody())


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def main(count: int, rounds: int) -> None:
    rng = random.Random(3)
    requests = []
    for i in range(count):
        data = rng.randbytes(rng.randint(50_000, 300_000))
        requests.append({"Bucket": "bench", "Key": f"k/{i}", "Body": data, "IfNoneMatch": "*",
                         "ContentMD5": base64.b64encode(hashlib.md5(data).digest()).decode(),
                         "ContentType": "image/png", "Metadata": {"sha256": hashlib.sha256(data).hexdigest()}})

    async def store(endpoint: str) -> tuple[Any, S3Uploader]:
        settings = S3Settings.model_validate({"bucket": "bench", "endpoint_url": endpoint, "region_name": "us-east-1",
                                              "access_key_id": "a", "secret_access_key": "b"})
        fs = create_s3_filesystem(settings, None, asyncio.get_running_loop())
        (await fs.set_session()).meta.events.register("before-send.s3", canned_reply)
        return fs, S3Uploader(settings, "bench")

    signed = await store("http://192.0.2.10:9")  # never reached: the reply is canned
    unsigned = await store("http://127.0.0.1:9")
    lanes: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
        "s3fs+signed": lambda kw: call_s3(signed[0], "put_object", **kw),
        "direct+signed": lambda kw: signed[1]._put_object(signed[0], **kw),
        "direct+unsigned": lambda kw: unsigned[1]._put_object(unsigned[0], **kw),
    }
    results: dict[str, list[float]] = {name: [] for name in lanes}
    for round_ in range(rounds):
        for name in (list(lanes) if round_ % 2 == 0 else list(lanes)[::-1]):
            started = cpu()
            for kwargs in requests:
                await lanes[name](kwargs)
            results[name].append((cpu() - started) / count * 1000)
    first = results["s3fs+signed"]
    for name, spent in results.items():
        # the difference round by round: the load of other jobs moves both lanes of a round alike
        saved = statistics.median([a - b for a, b in zip(first, spent, strict=True)])
        print(f"{name:16s} median {statistics.median(spent):.3f} ms of CPU per PUT, {saved:.3f} ms less than "
              f"s3fs+signed in the same round (median) ({', '.join(f'{ms:.3f}' for ms in spent)})")
    for fs, _ in (signed, unsigned):
        await (await fs.set_session()).close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.files, args.rounds))
