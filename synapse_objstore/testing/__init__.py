"""Test support for backend authors: the conformance suite every backend must pass.

    from synapse_objstore.testing import BackendConformance

    class TestMyBackend(BackendConformance):
        @pytest.fixture
        def store_config(self, tmp_path):
            return {"backend": "mine", ...}

The fixtures the suite runs on (a running Twisted reactor, for the Synapse part) come from
the pytest plugin `synapse_objstore.testing.plugin`, which installing synapse-objstore
registers. docs/plugins.md describes the suite.
"""

from synapse_objstore.testing.network import closed_port
from synapse_objstore.testing.suite import BackendConformance

__all__ = ["BackendConformance", "closed_port"]
