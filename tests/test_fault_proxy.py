"""The fault proxy does what its faults say, to a real client (boto3) in front of moto, in a
thread of the test and as a process of its own."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError

from servers.moto import MotoServer
from synapse_objstore.testing.fault_proxy import FaultProxy, FaultProxyProcess, Faults
from tests.support.s3 import s3_client

PLAIN = {"request_checksum_calculation": "when_required", "response_checksum_validation": "when_required"}


def client(url: str, attempts: int = 1, read_timeout: float = 10) -> Any:
    return s3_client(url, config=Config(retries={"mode": "standard", "total_max_attempts": attempts},
                                        read_timeout=read_timeout, connect_timeout=2, **PLAIN))


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[FaultProxy]:
    with FaultProxy(moto.endpoint_url, seed=3) as server:
        yield server


def test_forwards_untouched_by_default(moto: MotoServer, bucket: str, proxy: FaultProxy) -> None:
    s3 = client(proxy.endpoint_url)
    data = os.urandom(300_000)
    s3.put_object(Bucket=bucket, Key="a", Body=data)
    assert s3.get_object(Bucket=bucket, Key="a")["Body"].read() == data
    assert s3.head_object(Bucket=bucket, Key="a")["ContentLength"] == len(data)
    assert proxy.stats()["forwarded"] == 3


def test_storm_faults_are_what_s3_sends_and_the_same_for_a_seed(moto: MotoServer, bucket: str) -> None:
    def storm() -> tuple[list[str], dict[str, int]]:
        outcomes = []
        with FaultProxy(moto.endpoint_url, Faults(rate_503=0.3, rate_reset=0.2), seed=7) as proxy:
            s3 = client(proxy.endpoint_url)
            for n in range(60):
                try:
                    s3.put_object(Bucket=bucket, Key=f"k{n}", Body=b"x" * 1000)
                    outcomes.append("ok")
                except ClientError as error:
                    outcomes.append(error.response["Error"]["Code"])
                except ConnectionClosedError:
                    outcomes.append("reset")
            return outcomes, proxy.stats()

    first, stats = storm()
    assert {"ok", "SlowDown", "reset"} <= set(first)
    assert stats["reset mid-request"] and stats["reset before reply"]
    assert storm()[0] == first


def test_whole_store_faults_and_switching_them(moto: MotoServer, bucket: str, proxy: FaultProxy) -> None:
    s3 = client(proxy.endpoint_url)
    proxy.schedule(1, deny="InvalidAccessKeyId")
    s3.put_object(Bucket=bucket, Key="before", Body=b"1")
    with pytest.raises(ClientError, match="InvalidAccessKeyId"):
        s3.put_object(Bucket=bucket, Key="after", Body=b"2")
    proxy.set(deny=None, no_bucket=True)
    with pytest.raises(ClientError, match="NoSuchBucket"):
        s3.put_object(Bucket=bucket, Key="after", Body=b"2")
    proxy.set(no_bucket=False, fail_first=2, match="only-this$")
    s3.put_object(Bucket=bucket, Key="other", Body=b"3")
    with pytest.raises(ClientError, match="SlowDown"):
        s3.put_object(Bucket=bucket, Key="only-this", Body=b"4")
    with pytest.raises(ClientError, match="503"):  # a HEAD's reply has no body to name the code
        s3.head_object(Bucket=bucket, Key="only-this")  # the 2nd request about that object
    s3.put_object(Bucket=bucket, Key="only-this", Body=b"4")


def test_silent_and_stalled_store(moto: MotoServer, bucket: str, proxy: FaultProxy) -> None:
    s3 = client(proxy.endpoint_url, read_timeout=1)
    s3.put_object(Bucket=bucket, Key="big", Body=os.urandom(2_000_000))
    proxy.set(silent=True)
    started = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        s3.head_object(Bucket=bucket, Key="big")
    assert 1 <= time.monotonic() - started < 1 + 9  # the client's read timeout, with a loaded machine's margin
    proxy.set(silent=False, stall=True)
    body = s3.get_object(Bucket=bucket, Key="big")["Body"]
    assert len(body.read(1_000_000)) == 1_000_000  # half the body arrives, then nothing
    with pytest.raises(ReadTimeoutError):
        body.read()
    proxy.set(stall=False)
    assert len(s3.get_object(Bucket=bucket, Key="big")["Body"].read()) == 2_000_000
    assert proxy.stats()["silenced"] == 1 and proxy.stats()["stalled"] == 1


def test_throttled_store_is_slow_each_way_and_answers(moto: MotoServer, bucket: str, proxy: FaultProxy) -> None:
    """1 MiB/s per connection: a 1.5 MiB upload and its download take about 1.5 s each, intact;
    a HEAD (no body) is not held back."""
    s3 = client(proxy.endpoint_url)
    content = os.urandom(3 * 512 * 1024)
    proxy.set(throttle=1024 * 1024)
    started = time.monotonic()
    s3.put_object(Bucket=bucket, Key="slow", Body=content)
    put = time.monotonic() - started
    started = time.monotonic()
    assert s3.get_object(Bucket=bucket, Key="slow")["Body"].read() == content
    get = time.monotonic() - started
    started = time.monotonic()
    s3.head_object(Bucket=bucket, Key="slow")
    assert time.monotonic() - started < 1
    assert 1.4 < put < 1.5 + 5 and 1.4 < get < 1.5 + 5, (put, get)  # a loaded machine's margin above
    assert proxy.stats()["throttled"] == 2


def test_stopping_resets_held_connections(moto: MotoServer) -> None:
    proxy = FaultProxy(moto.endpoint_url, Faults(silent=True)).start()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as held:
        held.sendall(b"GET /bucket/key HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        while not proxy.stats().get("silenced"):
            time.sleep(0.01)
        proxy.stop()
        with pytest.raises(ConnectionResetError):
            held.recv(100)


def test_as_a_process(moto: MotoServer, bucket: str, tmp_path: Any) -> None:
    with FaultProxyProcess(moto.endpoint_url, Faults(deny="AccessDenied"), log=tmp_path / "proxy.log") as proxy:
        s3 = client(proxy.endpoint_url)
        with pytest.raises(ClientError, match="AccessDenied"):
            s3.put_object(Bucket=bucket, Key="a", Body=b"1")
        proxy.set(deny=None)
        s3.put_object(Bucket=bucket, Key="a", Body=b"1")
        assert proxy.stats() == {"requests": 2, "requests PUT": 2, "denied": 1, "forwarded": 1}


def test_refuses_a_target_off_the_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy("http://192.0.2.1:9000")
