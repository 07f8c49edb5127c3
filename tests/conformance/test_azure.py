"""The conformance suite against the azure backend on Azurite."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest

from servers.azurite import Azurite
from synapse_objstore.testing import BackendConformance, closed_port


class TestAzureOnAzurite(BackendConformance):
    @pytest.fixture
    def store_config(self, azurite: Azurite) -> dict[str, Any]:
        container = azurite.create_container(f"media-{uuid.uuid4().hex[:12]}")
        return {"backend": "azure", "container": container, "account_name": azurite.account_name,
                "account_key": azurite.account_key, "account_url": azurite.account_url, "prefix": "hs/"}

    @pytest.fixture
    def unreachable_store_config(self, azurite: Azurite) -> dict[str, Any]:
        # the default timeouts and retries: what a user who configured nothing else gets
        return {"backend": "azure", "container": "media", "account_name": azurite.account_name,
                "account_key": azurite.account_key,
                "account_url": f"http://127.0.0.1:{closed_port()}/{azurite.account_name}"}

    @pytest.fixture
    def bad_credentials_store_config(self, store_config: dict[str, Any]) -> dict[str, Any]:
        return {**store_config, "account_key": base64.b64encode(b"not the account's key, 64 bytes long " * 2).decode()}
