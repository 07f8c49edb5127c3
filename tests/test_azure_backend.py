"""The azure backend beyond the conformance suite: its config, the optional extra, the other
ways to give credentials, and Content-MD5 on blobs uploaded in blocks."""

from __future__ import annotations

import datetime
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import AccountSasPermissions, BlobServiceClient, ResourceTypes, generate_account_sas

from servers.azurite import Azurite
from synapse_objstore.config import parse_store_config
from synapse_objstore.errors import ConfigError
from synapse_objstore.io_loop import run
from synapse_objstore.testing.suite import read_object
from synapse_objstore.verification import RemoteChecker, State

KiB = 1024
KEY = "a2V5LW9mLXRoZS1hY2NvdW50"


@pytest.fixture
def container(azurite: Azurite) -> str:
    return azurite.create_container(f"media-{uuid.uuid4().hex[:12]}")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"container": "Media", "account_name": "acct"}, "'container': must be a container name"),
        ({"container": "my--media", "account_name": "acct"}, "'container': must be a container name"),
        ({"container": "media", "account_name": "My_Account"}, "'account_name': must be a storage account name"),
        ({"container": "media"}, "account_name is required"),
        ({"container": "media", "account_url": "http://127.0.0.1:1/devstoreaccount1", "account_key": KEY},
         "account_key needs account_name"),
        ({"container": "media", "account_name": "acct", "account_key": KEY, "sas_token": "sv=1&sig=abc"},
         "account_key and sas_token are alternatives"),
        ({"container": "media", "account_name": "acct", "connection_string": "AccountName=acct;AccountKey=a2V5"},
         "leave out account_name and account_url"),
        ({"container": "media", "account_name": "acct", "account_url": "https://acct.blob.core.windows.net?sv=1&sig=x"},
         "'account_url': must be an http:// or https:// URL of the blob service"),
        ({"container": "media", "account_name": "acct", "block_size": "1 KiB"}, "'block_size'"),
    ],
)
def test_bad_azure_config_is_refused_naming_the_key(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_store_config({"backend": "azure", **config})


def account_sas(azurite: Azurite) -> str:
    return generate_account_sas(
        azurite.account_name, azurite.account_key, ResourceTypes(container=True, object=True),
        AccountSasPermissions(read=True, write=True, delete=True, list=True, create=True),
        expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1),
    )


@pytest.mark.parametrize("credentials", ["connection_string", "sas_token"])
def test_a_connection_string_or_a_sas_token_works_and_stays_secret(
    azurite: Azurite, container: str, open_store: Any, tmp_path: Path, credentials: str
) -> None:
    if credentials == "connection_string":
        config = {"connection_string": azurite.connection_string}
        secret = azurite.account_key
    else:
        secret = account_sas(azurite)
        config = {"account_name": azurite.account_name, "account_url": azurite.account_url, "sas_token": secret}
    store = open_store({"backend": "azure", "container": container, **config})
    (tmp_path / "media").write_bytes(b"some media")
    run(store.put_file(str(tmp_path / "media"), "local_content/ab/cd/ef"))

    assert run(read_object(store, "local_content/ab/cd/ef", 64 * KiB)) == b"some media"
    assert secret not in repr(store.backend) + repr(store) + store.backend.describe()


def test_a_blob_uploaded_in_blocks_carries_its_md5(
    azurite: Azurite, container: str, open_store: Any, tmp_path: Path
) -> None:
    """Azure records a Content-MD5 by itself only for a blob sent in one request; ours set it
    for blobs sent in blocks too, so verification needs no read-back."""
    store = open_store({"backend": "azure", "container": container, "account_name": azurite.account_name,
                        "account_key": azurite.account_key, "account_url": azurite.account_url,
                        "block_size": 64 * KiB, "upload_concurrency": 3})
    data = os.urandom(1000 * KiB + 5)  # 16 blocks, the last one short
    local = tmp_path / "media"
    local.write_bytes(data)
    run(store.put_file(str(local), "local_content/bl/oc/ks"))

    assert run(read_object(store, "local_content/bl/oc/ks", 256 * KiB)) == data
    checker = RemoteChecker(store, read_back=False)
    check = run(checker.check("local_content/bl/oc/ks", run(checker.digest(str(local)))))
    assert (check.state, check.detail) == (State.VERIFIED, "size+etag")


def test_a_blob_without_an_md5_is_read_back_not_trusted(
    azurite: Azurite, container: str, open_store: Any, tmp_path: Path
) -> None:
    """A blob another tool committed from blocks has no Content-MD5: verification reads it back."""
    data = os.urandom(300 * KiB)
    with BlobServiceClient.from_connection_string(azurite.connection_string) as client:
        blob = client.get_blob_client(container, "local_content/ot/he/rtool")
        blob.stage_block("YmxvY2sx", data)
        blob.commit_block_list(["YmxvY2sx"])
        assert blob.get_blob_properties().content_settings.content_md5 is None
    store = open_store({"backend": "azure", "container": container, "connection_string": azurite.connection_string})
    local = tmp_path / "media"
    local.write_bytes(data)
    checker = RemoteChecker(store)
    check = run(checker.check("local_content/ot/he/rtool", run(checker.digest(str(local)))))
    assert (check.state, check.detail) == (State.VERIFIED, "size+read-back")
