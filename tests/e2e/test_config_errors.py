"""A provider config Synapse must refuse: it does not start, and says which key is wrong."""

from __future__ import annotations

from typing import Any

import pytest

from servers.moto import MotoServer
from servers.synapse import SynapseServer, provider_entry
from tests.support.homeserver import provider_config

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(("config_change", "synapse_change", "expected"), [
    pytest.param({"bucket_name": "media"}, {}, "unknown key 'bucket_name'", id="unknown-key"),
    pytest.param({"backend": "nosuchstore"}, {}, "unknown backend 'nosuchstore'", id="unknown-backend"),
    pytest.param({"connect_timeout": "fast"}, {}, "'connect_timeout'", id="wrong-type"),
])
def test_synapse_refuses_to_start(tmp_path: Any, moto: MotoServer, config_change: dict[str, Any],
                                  synapse_change: dict[str, Any], expected: str) -> None:
    config = provider_config(moto.endpoint_url, "some-bucket", **config_change)
    server = SynapseServer(tmp_path, [provider_entry(config)], extra_config=synapse_change)

    code, output = server.run_expecting_failure()

    assert code != 0
    assert expected in output, output[-3000:]
