"""The key rotation settings: bad ones refused naming the key by its position (never its value),
every key kept out of reprs, errors and debug logs, and (on moto, which accepts SSE-C but ignores
it: the requests sent are what is checked) the copy-source SSE-C headers of a rewrite."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest

from servers.moto import MotoServer
from synapse_objstore.backends.base import KeyedObject, KeyLabel
from synapse_objstore.config import parse_store_config
from synapse_objstore.errors import ConfigError
from synapse_objstore.io_loop import run
from synapse_objstore.store import ObjectStore
from synapse_objstore.testing.suite import read_object
from tests.support.logs import debug_logs
from tests.support.s3 import put_objects, s3_config
from tests.support.sse_c import COPY_KEY_HEADER, KEY_A, KEY_B, KEY_C, KEY_HEADER, record_requests

ALL_KEYS = (KEY_A, KEY_B, KEY_C)


def found_under(store: ObjectStore, media_path: str, label: str) -> KeyedObject:
    """What `key_of` would find on a store that tells keys apart: moto ignores SSE-C (and echoes
    no key MD5), so which key an object is under is told here rather than asked."""
    info = run(store.backend.object_info(store.filesystem(), store.remote_path(media_path)))
    return KeyedObject(KeyLabel(label), info)


def b64(key: str) -> str:
    return base64.b64encode(key.encode()).decode()


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"previous_sse_customer_keys": [KEY_B, "short"]},
         "previous_sse_customer_keys entry 2 must be exactly 32 bytes"),
        ({"previous_sse_customer_keys": [KEY_C]}, "previous_sse_customer_keys entry 1 is the current sse_customer_key"),
        ({"previous_sse_customer_keys": [KEY_B, KEY_A, KEY_B]}, "entry 3 repeats entry 1"),
        ({"previous_sse_customer_keys": [""]}, "previous_sse_customer_keys entry 1 is empty"),
        ({"sse_customer_key": None, "previously_unencrypted": True}, "previously_unencrypted needs sse_customer_key"),
    ],
)
def test_bad_rotation_settings_are_refused_by_position(extra: dict[str, Any], named: str) -> None:
    config = {"bucket": "m", "sse_customer_key": KEY_C, **extra}
    with pytest.raises(ConfigError) as refused:
        parse_store_config({k: v for k, v in config.items() if v is not None})
    assert named in str(refused.value)
    for key in ALL_KEYS:
        assert key not in str(refused.value) and b64(key) not in str(refused.value)


def test_sse_c_can_be_turned_off_with_the_old_key_kept_for_reads() -> None:
    backend = parse_store_config({"bucket": "m", "previous_sse_customer_keys": [KEY_A]})
    assert backend.key_labels() == ("current", "previous-1")


def test_every_key_is_a_secret_raw_and_base64() -> None:
    backend = parse_store_config({"bucket": "m", "sse_customer_key": KEY_C,
                                  "previous_sse_customer_keys": [KEY_B, KEY_A], "previously_unencrypted": True})
    secrets = set(backend.settings.secret_values())
    assert {KEY_A, KEY_B, KEY_C, b64(KEY_A), b64(KEY_B), b64(KEY_C)} <= secrets
    shown = repr(backend) + str(backend.settings) + repr(backend.settings.model_dump())
    assert backend.key_labels() == ("current", "previous-1", "previous-2", "unencrypted")
    for key in ALL_KEYS:
        assert key not in shown and b64(key) not in shown


@pytest.fixture
def rotated_on_moto(moto: MotoServer, bucket: str,
                    open_store: Callable[[dict[str, Any]], ObjectStore]) -> ObjectStore:
    return open_store(s3_config(moto, bucket, sse_customer_key=KEY_C, previous_sse_customer_keys=[KEY_B, KEY_A]))


def test_a_rewrite_copies_with_the_old_key_as_source_and_the_current_one_as_destination(
        moto: MotoServer, bucket: str, rotated_on_moto: ObjectStore) -> None:
    store = rotated_on_moto
    put_objects(moto, bucket, {"local_content/aa/bb/cc": b"old bytes"})
    sent = record_requests(store)
    found = found_under(store, "local_content/aa/bb/cc", "previous-2")
    sent.clear()
    run(store.backend.rewrite_with_current_key(store.filesystem(), store.remote_path("local_content/aa/bb/cc"),
                                               found))
    copy = sent.of_kind("CopyObject")[0]
    assert copy[COPY_KEY_HEADER] == b64(KEY_A)
    assert copy[COPY_KEY_HEADER.replace("-key", "-algorithm")] == "AES256"
    assert copy[KEY_HEADER] == b64(KEY_C)
    assert copy["x-amz-metadata-directive"] == "REPLACE"
    assert copy["x-amz-copy-source"].endswith("/local_content/aa/bb/cc")


def test_no_key_reaches_logs_or_errors_with_debug_logging(moto: MotoServer, bucket: str,
                                                          rotated_on_moto: ObjectStore) -> None:
    store = rotated_on_moto
    put_objects(moto, bucket, {"local_content/lo/gg/ed": b"payload"})
    with debug_logs() as output:
        assert run(read_object(store, "local_content/lo/gg/ed")) == b"payload"
        run(store.backend.rewrite_with_current_key(store.filesystem(), store.remote_path("local_content/lo/gg/ed"),
                                                   found_under(store, "local_content/lo/gg/ed", "previous-1")))
        with pytest.raises(ValueError) as unknown:
            run(store.backend.rewrite_with_current_key(store.filesystem(), store.remote_path("local_content/lo/gg/ed"),
                                                       found_under(store, "local_content/lo/gg/ed", "previous-7")))
    logged = output.getvalue() + str(unknown.value) + repr(store) + repr(store.backend)
    assert "botocore" in logged and "<redacted>" in logged and "CopySourceSSECustomerKey" in logged
    for key in ALL_KEYS:
        assert key not in logged and b64(key) not in logged


def test_with_sse_c_turned_off_etags_are_not_taken_for_md5s_while_old_keys_remain() -> None:
    """An object still under an old key has an ETag that is no MD5: claiming one would make
    `verify` find it changed."""
    assert not parse_store_config({"bucket": "m", "previous_sse_customer_keys": [KEY_A]}).checksum_scheme().whole_md5
    assert parse_store_config({"bucket": "m"}).checksum_scheme().whole_md5


def test_an_object_too_large_for_copy_object_is_copied_in_parts(
        moto: MotoServer, bucket: str, rotated_on_moto: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """CopyObject takes at most 5 GiB: a larger object is copied in parts (UploadPartCopy) with
    the copy-source SSE-C headers, the current key and its metadata. moto echoes no
    SSECustomerKeyMD5, so the copy looks unencrypted: it is aborted and the object rewritten
    through this host. (The limits are lowered so that a small object counts as larger.)"""
    import synapse_objstore.backends.s3.rewrite as rewrite

    monkeypatch.setattr(rewrite, "MAX_COPY_SIZE", 1024)
    monkeypatch.setattr(rewrite, "COPY_PART_SIZE", 4000)
    store = rotated_on_moto
    data = b"z" * 6000
    put_objects(moto, bucket, {"local_content/hu/ge/one": data})
    path = store.remote_path("local_content/hu/ge/one")
    found = found_under(store, "local_content/hu/ge/one", "previous-1")
    sent = record_requests(store)
    result = run(store.backend.rewrite_with_current_key(store.filesystem(), path, found))
    assert sent.kinds() == ["CreateMultipartUpload", "UploadPartCopy", "AbortMultipartUpload",
                            "GetObject", "PutObject"]
    part = sent.of_kind("UploadPartCopy")[0]
    assert part[COPY_KEY_HEADER] == b64(KEY_B) and part[KEY_HEADER] == b64(KEY_C)
    assert part["x-amz-copy-source-range"] == "bytes=0-3999"
    assert sent.of_kind("CreateMultipartUpload")[0][KEY_HEADER] == b64(KEY_C)
    assert not result.server_side and result.bytes_moved == len(data)
    assert sent.of_kind("GetObject")[0][KEY_HEADER] == b64(KEY_B)
    assert sent.of_kind("PutObject")[0][KEY_HEADER] == b64(KEY_C)
    assert run(read_object(store, "local_content/hu/ge/one")) == data
