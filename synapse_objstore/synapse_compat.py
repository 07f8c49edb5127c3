"""Names that not every supported Synapse version has (pyproject.toml states the oldest).

`ConsumerRequestedStopError` is what a Responder fails `write_to_consumer` with when the client
goes away. Synapse 1.135 added it, and logs it at debug level only; older versions have no such
class and take any failure of `write_to_consumer` as the client gone (logged as a warning), so
there the provider raises an error of its own.
"""

from __future__ import annotations

try:
    from synapse.media._base import ConsumerRequestedStopError
except ImportError:  # Synapse < 1.135

    class ConsumerRequestedStopError(Exception):  # type: ignore[no-redef]
        """The consumer (the client's connection) asked the responder to stop producing."""


__all__ = ["ConsumerRequestedStopError"]
