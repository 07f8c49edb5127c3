"""A provider config Synapse must refuse: it does not start, and says which key is wrong."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import pytest
from packaging.version import Version

from tests.e2e.conftest import provider_config
from tests.servers.moto import MotoServer
from tests.servers.synapse import SynapseServer, provider_entry

pytestmark = pytest.mark.e2e

# Synapse reads enable_local_media_storage from 1.146 on; older versions ignore the key.
HAS_LOCAL_STORAGE_SWITCH = Version(version("matrix-synapse")) >= Version("1.146")


@pytest.mark.parametrize(("config_change", "synapse_change", "expected"), [
    pytest.param({"bucket_name": "media"}, {}, "unknown key 'bucket_name'", id="unknown-key"),
    pytest.param({"backend": "nosuchstore"}, {}, "unknown backend 'nosuchstore'", id="unknown-backend"),
    pytest.param({"connect_timeout": "fast"}, {}, "'connect_timeout'", id="wrong-type"),
    pytest.param({}, {"enable_local_media_storage": False}, "enable_local_media_storage", id="no-local-storage",
                 marks=pytest.mark.skipif(not HAS_LOCAL_STORAGE_SWITCH, reason="Synapse < 1.146 has no such key")),
])
def test_synapse_refuses_to_start(tmp_path: Any, moto: MotoServer, config_change: dict[str, Any],
                                  synapse_change: dict[str, Any], expected: str) -> None:
    config = provider_config(moto.endpoint_url, "some-bucket", **config_change)
    server = SynapseServer(tmp_path, [provider_entry(config)], extra_config=synapse_change)

    code, output = server.run_expecting_failure()

    assert code != 0
    assert expected in output, output[-3000:]
