"""fetch_deadline and store_deadline hold the provider's calls to a store that accepts
connections and never answers (moto stopped with SIGSTOP), whatever its client's timeouts and
retries add up to; and the error names the store and the deadline."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from servers.moto import MotoServer
from synapse_objstore.errors import FailureKind, ObjectStoreError
from synapse_objstore.failures import classify
from synapse_objstore.testing.suite import put_media
from synapse_objstore.testing.synapse_harness import load_provider, local_media

DEADLINE = 2.0
# The bound is the feature, and this its margin: the reactor's and the I/O loop's share on a
# loaded machine, well short of the 30 s the first attempt alone would take without a deadline.
SLACK = 10.0


def silent_store_config(frozen_moto: MotoServer, **extra: Any) -> dict[str, Any]:
    # three attempts of up to 30 s each: 90 s without the deadlines
    return {"bucket": "frozen", "endpoint_url": frozen_moto.endpoint_url, "check_on_startup": False,
            "connect_timeout": 30, "read_timeout": 30, "retries": 2, **extra}


def test_a_fetch_fails_at_fetch_deadline_naming_the_store_and_the_deadline(
    reactor: Any, in_reactor: Callable[..., Any], frozen_moto: MotoServer, media_store: Path
) -> None:
    provider = load_provider(reactor, media_store, silent_store_config(frozen_moto, fetch_deadline=DEADLINE))
    path, info = local_media("silentfetch01")
    started = time.monotonic()
    with pytest.raises(ObjectStoreError) as raised:
        in_reactor(provider.fetch, path, info, timeout=60)
    elapsed = time.monotonic() - started
    assert DEADLINE <= elapsed < DEADLINE + SLACK, f"the error took {elapsed:.1f} s"
    assert str(raised.value) == (
        f"could not fetch {path!r} on s3://frozen/ at {frozen_moto.endpoint_url}: the store did not answer "
        f"within fetch_deadline (2 s, all retries included)"
    )
    assert classify(raised.value) == FailureKind.TIMEOUT


def test_an_upload_whose_body_the_store_stops_taking_fails_at_store_deadline(
    reactor: Any, in_reactor: Callable[..., Any], frozen_moto: MotoServer, media_store: Path
) -> None:
    """No client timeout covers sending a body: without the deadline this upload waits for
    as long as the store stays silent."""
    provider = load_provider(reactor, media_store, silent_store_config(frozen_moto, store_deadline=DEADLINE))
    path, info = local_media("silentstore01")
    put_media(media_store, path, os.urandom(12 * 1024 * 1024))  # one PUT: below multipart_threshold
    started = time.monotonic()
    with pytest.raises(ObjectStoreError, match=r"the store did not finish within store_deadline \(2 s"):
        in_reactor(provider.store_file, path, info, timeout=60)
    elapsed = time.monotonic() - started
    assert DEADLINE <= elapsed < DEADLINE + SLACK, f"the error took {elapsed:.1f} s"
