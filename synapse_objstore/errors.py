"""Every error synapse-objstore raises, under one root.

Catch `ObjstoreError` for any of them; the store's errors are `OSError`s as well, and the
errors of a config block, a media path or a media file `ValueError`s, as callers (and Synapse)
have always caught them. Which kind of failure a store error is (for metrics, the circuit
breaker, whether a run retries or stops) is its class: `synapse_objstore.store` maps what the
client libraries raise (botocore, aiohttp, gcsfs, azure) to one of these once, where the error
crosses into the store, and keeps it as the `__cause__`.

    ObjstoreError
    ├── ConfigError (ValueError)        a provider config block that cannot be used
    │   └── PluginError                 a plugin that cannot be loaded or registers junk
    ├── ConfigFileError                 homeserver.yaml, database.yaml, a --store-config file
    │   └── NoProviderEntryError
    ├── MediaPathError (ValueError)     a media path that must not become an object key
    ├── MediaFileError (ValueError)     a local media file that is not what Synapse writes
    ├── LocalFileChangedError (OSError) a local file that changed while read or after its upload
    ├── ObjectStoreError (OSError)      a store call that failed (a missing object is no error)
    │   ├── StoreTimeoutError           no answer in time                  kind "timeout"
    │   │   └── DeadlineError           ... within the call's own deadline
    │   ├── StoreUnreachableError       refused or dropped connection      kind "connection"
    │   ├── StoreDeniedError            credentials refused                kind "denied"
    │   ├── BucketMissingError          the bucket (root) does not exist   kind "other"
    │   ├── UnknownKeyError             no configured SSE-C key reads it   kind of its cause
    │   ├── ObjectChangedError          replaced while it was streamed     kind "other"
    │   └── StoreDownError              failed at once: the store is down  kind of the outage
    ├── StoreUnusableError              the whole store cannot be used: a run stops
    ├── OwnershipError                  the store is another homeserver's, or whose is unknown
    │   ├── MarkerUnavailableError
    │   └── DeleteShareError
    ├── CacheDbError                    cache.db cannot be opened or used
    │   ├── OtherMediaStoreError
    │   └── CacheDbLockError
    ├── SynapseDbError                  Synapse's database cannot be reached or read
    │   └── EmptyDatabaseError
    ├── CommandError                    an objstore-offload command refuses to run
    ├── ConsumerPausedTooLongError      a download's client paused and never resumed
    └── UploadNotHeldError              no held copy of a file Synapse keeps only temporarily
"""

from __future__ import annotations

import enum
from collections.abc import Iterator


class FailureKind(str, enum.Enum):
    """What kind of failure a store error is. Few and fixed, so that a dashboard can show each
    one and an alert can name it: the values are the `kind` label of the error metrics."""

    TIMEOUT = "timeout"
    CONNECTION = "connection"
    DENIED = "denied"
    OTHER = "other"


class ObjstoreError(Exception):
    """The root of every error synapse-objstore raises."""


class ConfigError(ObjstoreError, ValueError):
    """A config block that cannot be used. The message names the offending key."""


class PluginError(ConfigError):
    """A plugin that cannot be loaded or registers something unusable. Names the plugin."""


class ConfigFileError(ObjstoreError):
    """A config file that cannot be read or used; the message names the file."""


class NoProviderEntryError(ConfigFileError):
    """homeserver.yaml has no media_storage_providers entry this tool understands."""


class MediaPathError(ObjstoreError, ValueError):
    """A media path that must not become an object key."""


class MediaFileError(ObjstoreError, ValueError):
    """A file of a media is not what Synapse writes (not a regular file, reached through a
    symlink, a name Synapse would not write) or cannot be looked at: that media fails."""


class LocalFileChangedError(ObjstoreError, OSError):
    """A local file changed (its size, modification time or inode) while it was read for
    upload, or between its verified upload and its deletion: it is never deleted so; the next
    run uploads it again."""


class ObjectStoreError(ObjstoreError, OSError):
    """A store operation that failed for a reason other than a missing object.

    The subclasses say the kind of failure. One raised as this class itself (the store answered
    with an error, or one no kind fits) counts as the kind of what it wraps, if any, else
    "other" (`synapse_objstore.failures.classify`)."""

    kind: FailureKind | None = None


class StoreTimeoutError(ObjectStoreError):
    """The store did not answer in time (the client's own timeouts, after its retries)."""

    kind = FailureKind.TIMEOUT


class DeadlineError(StoreTimeoutError):
    """A store call that did not end within its deadline, all of its retries included. Its
    cause is a TimeoutError."""


class StoreUnreachableError(ObjectStoreError):
    """The store could not be reached: connection refused, reset or dropped, no route."""

    kind = FailureKind.CONNECTION


class StoreDeniedError(ObjectStoreError):
    """The store refused the credentials, or the permission (HTTP 401 or 403)."""

    kind = FailureKind.DENIED


class BucketMissingError(ObjectStoreError):
    """The bucket (container, root directory) that the object keys live under does not exist.
    An answer of the store, not an outage: kind "other"."""

    kind = FailureKind.OTHER


class UnknownKeyError(ObjectStoreError):
    """No configured SSE-C key (current, previous, or none where `previously_unencrypted`)
    reads the object: it was written with a key the config no longer lists. Its cause is the
    store's answer to the first key tried, and it counts under that answer's kind. The message
    names the keys tried by their labels, never a key."""


class ObjectChangedError(ObjectStoreError):
    """The object was replaced (or deleted) while it was being streamed: the stream stops
    rather than hand out bytes of two versions. The reader may open it again. An answer of
    the store, not an outage: kind "other"."""

    kind = FailureKind.OTHER


class StoreDownError(ObjectStoreError):
    """A call failed at once, without asking the store, because the store is down
    (synapse_objstore.breaker). Its cause is the last failure that showed it down, and it
    counts under that failure's kind."""

    def __init__(self, message: str, kind: FailureKind) -> None:
        super().__init__(message)
        self.kind = kind


class StoreUnusableError(ObjstoreError):
    """The store cannot be used at all (no bucket, refused credentials, a failed check before
    the run): the run stops, rather than fail once per file. Its cause says why."""


class OwnershipError(ObjstoreError):
    """The store belongs to another homeserver, or whose it is cannot be told: whoever asked
    refuses before it changes anything (the CLI exits with code 2)."""


class MarkerUnavailableError(OwnershipError):
    """The store did not give the owner marker (or take it): a store error, not a marker's content."""


class DeleteShareError(OwnershipError):
    """More of the store would be deleted than `max_delete_share` allows: refused before deleting."""


class CacheDbError(ObjstoreError):
    """cache.db cannot be opened or used; the message names the file."""


class OtherMediaStoreError(CacheDbError):
    """cache.db records the offload of another media store than the run's."""


class CacheDbLockError(CacheDbError):
    """cache.db's lock could not be taken; the message names the run that holds it, or the reason."""


class SynapseDbError(ObjstoreError):
    """Synapse's database cannot be reached or read; the message says which and why."""


class EmptyDatabaseError(SynapseDbError):
    """Synapse's database has no media at all: most likely the wrong database."""


class CommandError(ObjstoreError):
    """An objstore-offload command cannot start or go on (a store config it cannot use, a
    --metrics-file of another run): the message says why."""


class ConsumerPausedTooLongError(ObjstoreError):
    """The consumer of a download paused and did not resume within the responder's PAUSE_TIMEOUT."""


class UploadNotHeldError(ObjstoreError):
    """`store_file` for a file whose temporary file the spam check did not hold."""


KIND_ERRORS: dict[FailureKind, type[ObjectStoreError]] = {
    FailureKind.TIMEOUT: StoreTimeoutError,
    FailureKind.CONNECTION: StoreUnreachableError,
    FailureKind.DENIED: StoreDeniedError,
    FailureKind.OTHER: ObjectStoreError,
}
"""The store error class of each kind of failure."""

def exception_chain(error: BaseException) -> Iterator[BaseException]:
    """`error`, then its cause (or the exception it was raised while handling), and so on."""
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or (None if link.__suppress_context__ else link.__context__)
