"""Load the provider the way Synapse does, and consumers that behave like HTTP clients.

They live in synapse_objstore.testing, which the conformance suite ships to backend authors;
the tests import them from here as before.
"""

from synapse_objstore.testing.consumers import RecordingConsumer
from synapse_objstore.testing.synapse_harness import MODULE, homeserver, load_provider, local_media

__all__ = ["MODULE", "RecordingConsumer", "homeserver", "load_provider", "local_media"]
