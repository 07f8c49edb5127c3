"""Prometheus metrics of the media storage provider, served by Synapse's metrics listener.

Synapse serves prometheus_client's global registry, so the metrics here are registered there,
once per process when this module is first imported (a second registration of a name fails).
Every series has the labels `backend` (the backend's name, such as `s3`) and `server_name`
(the homeserver's name, as on Synapse's own series, so that several homeservers in one
process stay apart). docs/metrics.md describes each metric with example queries.

Only the provider imports this module: the CLI's own series (--metrics-file) are written
from a registry of their own, in cli/run_metrics.py.
prometheus_client is thread safe; the provider and responders update their series on
Synapse's reactor thread.
"""

from __future__ import annotations

from typing import Literal, get_args

from prometheus_client import Counter, Gauge, Histogram

from synapse_objstore.errors import FailureKind
from synapse_objstore.failures import classify

# Synapse's own label for the homeserver a series belongs to (synapse.metrics.SERVER_NAME_LABEL).
SERVER_NAME_LABEL = "server_name"
LABELS = ("backend", SERVER_NAME_LABEL)
# What failed: `fetch` is opening an object, `stream` is reading it into a response after that.
Operation = Literal["store", "fetch", "stream", "delete", "check"]
OPERATIONS: tuple[Operation, ...] = get_args(Operation)

STORED_BYTES = Counter(
    "synapse_objstore_stored_bytes", "Bytes of media files uploaded to the store.", LABELS
)
STORED_OBJECTS = Counter("synapse_objstore_stored_objects", "Media files uploaded to the store.", LABELS)
FETCHED_BYTES = Counter(
    "synapse_objstore_fetched_bytes", "Bytes read from the store and written to responses.", LABELS
)
FETCHED_OBJECTS = Counter(
    "synapse_objstore_fetched_objects",
    "Objects read from the store and written to a response to the end.",
    LABELS,
)
FETCH_MISSES = Counter(
    "synapse_objstore_fetch_misses", "Fetches of media that the store does not hold (not an error).", LABELS
)
DELETED_OBJECTS = Counter(
    "synapse_objstore_deleted_objects", "Objects deleted from the store, or found gone already.", LABELS
)
ERRORS = Counter(
    "synapse_objstore_errors",
    "Failed store operations, by operation and kind (timeout, connection, denied, other).",
    (*LABELS, "operation", "kind"),
)
STORE_DURATION = Histogram(
    "synapse_objstore_store_duration_seconds",
    "Time to upload one media file, of the uploads that succeeded.",
    LABELS,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
)
FIRST_BYTE_DURATION = Histogram(
    "synapse_objstore_fetch_first_byte_seconds",
    "Time from Synapse asking for an object to its first bytes being written to the response.",
    LABELS,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
DOWNLOADS_IN_FLIGHT = Gauge(
    "synapse_objstore_downloads_in_flight", "Objects being streamed into responses right now.", LABELS
)
STORE_UP = Gauge(
    "synapse_objstore_store_up",
    "1 while the store answers; 0 while the provider takes it as down and fails requests at once.",
    LABELS,
)
PREVIOUS_KEY_READS = Counter(
    "synapse_objstore_previous_key_reads",
    "Objects read only with an SSE-C key other than the current one, by key label (previous-1, previous-2, ..., "
    "unencrypted): what a key rotation has left to rewrite (objstore-offload rekey).",
    (*LABELS, "key"),
)
FAILED_FAST = Counter(
    "synapse_objstore_failed_fast",
    "Requests failed at once, without asking the store, because it was down (also in errors).",
    (*LABELS, "operation"),
)


class ProviderMetrics:
    """The series of one provider (one backend on one homeserver).

    Each labelled child is looked up once, here: the streaming path then pays one `inc` per
    chunk and no label lookup. Every error series exists from the start, at 0, so that
    `rate()` and `increase()` see the first error.
    """

    def __init__(self, backend: str, server_name: str) -> None:
        labels = {"backend": backend, SERVER_NAME_LABEL: server_name}
        self.stored_bytes = STORED_BYTES.labels(**labels)
        self.stored_objects = STORED_OBJECTS.labels(**labels)
        self.fetched_bytes = FETCHED_BYTES.labels(**labels)
        self.fetched_objects = FETCHED_OBJECTS.labels(**labels)
        self.fetch_misses = FETCH_MISSES.labels(**labels)
        self.deleted_objects = DELETED_OBJECTS.labels(**labels)
        self.store_duration = STORE_DURATION.labels(**labels)
        self.first_byte_duration = FIRST_BYTE_DURATION.labels(**labels)
        self.downloads_in_flight = DOWNLOADS_IN_FLIGHT.labels(**labels)
        self.store_up = STORE_UP.labels(**labels)
        self.store_up.set(1)
        self._labels = labels
        self._failed_fast = {operation: FAILED_FAST.labels(**labels, operation=operation) for operation in OPERATIONS}
        self._errors = {
            (operation, kind): ERRORS.labels(**labels, operation=operation, kind=kind.value)
            for operation in OPERATIONS
            for kind in FailureKind
        }

    def count_previous_key_read(self, key: str) -> None:
        """Count a read that only a key other than the current one could make (`key`: its
        label, never the key). Called on the I/O loop's thread: prometheus_client is thread safe."""
        PREVIOUS_KEY_READS.labels(**self._labels, key=key).inc()

    def count_failed_fast(self, operation: Operation, error: BaseException) -> None:
        """Count a request failed at once because the store is down: under its own counter, and
        as an error of the kind that showed the store down."""
        self._failed_fast[operation].inc()
        self.count_error(operation, error)

    def count_error(self, operation: Operation, error: BaseException) -> FailureKind:
        """Count a failed operation under the kind of `error`; return that kind."""
        kind = classify(error)
        self._errors[operation, kind].inc()
        return kind
