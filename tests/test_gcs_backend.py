"""The gcs backend beyond the conformance suite: its config, the optional extra, credentials
looked up off the I/O loop, and MD5s for objects uploaded in chunks."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from typing_extensions import Self

from servers.gcs_emulator import GcsEmulator
from synapse_objstore.config import parse_store_config
from synapse_objstore.errors import ConfigError
from synapse_objstore.io_loop import run
from synapse_objstore.testing.suite import read_object
from synapse_objstore.verification import RemoteChecker, State

KiB = 1024


@pytest.fixture
def gcs_config(gcs_emulator: GcsEmulator) -> dict[str, Any]:
    bucket = gcs_emulator.create_bucket(f"media-{uuid.uuid4().hex[:12]}")
    return {"backend": "gcs", "bucket": bucket, "endpoint_url": gcs_emulator.endpoint_url, "token": "anon"}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"bucket": "Media"}, "'bucket': must be a bucket name"),
        ({"bucket": "media/hs"}, "'bucket': must be a bucket name"),
        ({"bucket": "media", "token": "/nonexistent/key.json"}, "'token': must be one of google_default, cloud, anon"),
        ({"bucket": "media", "chunk_size": 300 * KiB}, "'chunk_size': must be a multiple of 256 KiB"),
        ({"bucket": "media", "endpoint_url": "127.0.0.1:9023"}, "'endpoint_url': must be an http:// or https:// URL"),
        ({"bucket": "media", "retries": -1}, "'retries'"),
        ({}, "'bucket' is required"),
    ],
)
def test_bad_gcs_config_is_refused_naming_the_key(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_store_config({"backend": "gcs", **config})


def test_an_object_uploaded_in_chunks_reads_back_and_verifies_by_its_md5(
    gcs_config: dict[str, Any], open_store: Any, tmp_path: Path
) -> None:
    store = open_store({**gcs_config, "chunk_size": 256 * KiB})
    data = os.urandom(1000 * KiB + 3)  # four chunks, the last one short
    local = tmp_path / "media"
    local.write_bytes(data)
    run(store.put_file(str(local), "local_content/ch/un/ked"))

    assert run(read_object(store, "local_content/ch/un/ked", 256 * KiB)) == data
    checker = RemoteChecker(store, read_back=False)
    check = run(checker.check("local_content/ch/un/ked", run(checker.digest(str(local)))))
    assert (check.state, check.detail) == (State.VERIFIED, "size+etag")


class SlowTokenEndpoint:
    """Google's OAuth token endpoint as a service account uses it, on 127.0.0.1, answering
    after `delay` seconds."""

    def __init__(self, delay: float) -> None:
        self.requests = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                endpoint.requests += 1
                time.sleep(delay)
                body = json.dumps({"access_token": "ya29.local-test-token", "expires_in": 3600,
                                   "token_type": "Bearer"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def service_account_file(path: Path, token_uri: str) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "test", "private_key_id": "1", "private_key": pem.decode(),
        "client_email": "synapse@test.iam.gserviceaccount.com", "client_id": "1", "token_uri": token_uri,
    }))
    return path


def test_fetching_a_token_does_not_stall_the_io_loop(gcs_config: dict[str, Any], open_store: Any,
                                                     tmp_path: Path) -> None:
    """gcsfs fetches tokens with blocking HTTP; done on the I/O loop, a slow token endpoint
    would freeze every download in flight."""
    # The bound is the feature: a token fetched on the loop would stall it for the whole 3 s
    # delay; the loop's own hiccups on a loaded machine stay well under half of that.
    with SlowTokenEndpoint(delay=3.0) as endpoint:
        key_file = service_account_file(tmp_path / "key.json", endpoint.url)
        store = open_store({**gcs_config, "token": str(key_file)})
        (tmp_path / "media").write_bytes(b"media")

        async def store_while_ticking() -> float:
            """The longest the loop went without running another coroutine during two uploads."""
            longest, stop = 0.0, asyncio.Event()

            async def tick() -> None:
                nonlocal longest
                while not stop.is_set():
                    before = time.monotonic()
                    await asyncio.sleep(0.01)
                    longest = max(longest, time.monotonic() - before)

            ticker = asyncio.ensure_future(tick())
            await store.put_file(str(tmp_path / "media"), "local_content/to/ke/nmedia")
            await store.put_file(str(tmp_path / "media"), "local_content/to/ke/nmedia2")
            stop.set()
            await ticker
            return longest

        longest_stall = run(store_while_ticking(), timeout=60)
    assert endpoint.requests == 1  # one token, kept for its hour
    assert longest_stall < 1.5, f"the I/O loop stalled for {longest_stall:.2f} s"
    assert run(store.exists("local_content/to/ke/nmedia2"))
