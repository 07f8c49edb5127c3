"""The owner marker: a small object under a store's prefix naming the homeserver it belongs to.

`objstore-offload` writes it (see cli/ownership.py for when, and what it guards); the provider
reads it at startup to warn of a store that another homeserver claimed. It holds the server
name, a fingerprint of the homeserver's database, where that database was, the creation time
of the newest media it had and the ids of its newest local media (its witnesses), as JSON. It
is not a media path Synapse writes, so reconcile never takes it for an orphan.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from synapse_objstore.errors import MarkerUnavailableError, OwnershipError
from synapse_objstore.media import printable

if TYPE_CHECKING:  # the CLI imports this module at start; the store's modules take long to import
    from synapse_objstore.store import ObjectStore

OWNER_MARKER = "synapse-objstore-owner.json"
MARKER_FORMAT = 1
MARKER_MAX_SIZE = 64 * 1024
# The most witnesses a marker holds (cli/ownership.py records WITNESS_COUNT of them).
MAX_WITNESSES = 256


@dataclass(frozen=True)
class HomeserverIdentity:
    """A homeserver as its database shows it."""

    server_name: str
    fingerprint: str  # sha256 of the first user's name and creation time, 16 hex digits
    database: str  # where it was read, for people: "postgres synapse on db.example:5432"

    def describe(self) -> str:
        return (f"{printable(self.server_name)} (database {printable(self.database)}, "
                f"fingerprint {printable(self.fingerprint)})")

    def same_homeserver(self, other: HomeserverIdentity) -> bool:
        return self.server_name == other.server_name and self.fingerprint == other.fingerprint


@dataclass(frozen=True)
class OwnerRecord:
    """What the marker object holds."""

    owner: HomeserverIdentity
    # the creation time (ms) of the newest media in the owner's database when it was recorded:
    # a database whose newest media is older is an older copy of it
    newest_media_ts: int
    recorded_at: str
    recorded_by: str
    # when this owner first claimed the store (ISO 8601): reconcile deletes nothing until the claim
    # is older than its grace period, so that another homeserver writing there is told first
    claimed_at: str
    # the ids of the owner's newest local media when it was recorded: a copy of its database
    # that lacks them went its own way since (see cli/ownership.py); none in older markers
    witnesses: tuple[str, ...] = ()
    # set by a run of the same homeserver that the record refused as a copy (another place, older,
    # lacking the witnesses): two databases write to the store, and neither deletes anything until
    # one is run with --database-changed (which records anew, without it); what and when, for people
    contested: str = ""

    def describe(self) -> str:
        return (f"{self.owner.describe()}, claimed {printable(self.claimed_at)}, recorded "
                f"{printable(self.recorded_at)} by {printable(self.recorded_by)}")

    @property
    def claimed(self) -> datetime.datetime:
        try:
            moment = datetime.datetime.fromisoformat(self.claimed_at)
        except ValueError:
            return datetime.datetime.now(datetime.timezone.utc)  # unreadable: as if claimed just now
        return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


async def read_owner(store: ObjectStore) -> OwnerRecord | None:
    """The owner recorded in the store, or None when no marker is there yet."""
    where = f"{OWNER_MARKER} in {store.backend.describe()}"
    try:
        info = await store.info(OWNER_MARKER)
        if info is None:
            return None
        if info.size > MARKER_MAX_SIZE:
            raise OwnershipError(f"the owner marker {where} is {info.size} bytes: not one this tool wrote. "
                                 "Refusing; look at it.")
        data = b""
        stream = await store.open_read(OWNER_MARKER)
        if stream is None:
            return None
        try:
            while len(data) <= MARKER_MAX_SIZE and (chunk := await stream.read(MARKER_MAX_SIZE)):
                data += chunk
        finally:
            await stream.close()
    except OSError as error:
        raise MarkerUnavailableError(f"cannot read the owner marker {where} ({error}): refusing to go on without "
                                     "knowing whose store it is") from error
    try:
        return _parse_marker(data)
    except (ValueError, KeyError, TypeError, RecursionError) as error:
        raise OwnershipError(
            f"the owner marker {where} cannot be read ({printable(str(error))[:200]}): it was not written by this "
            "tool, or is damaged. Refusing; look at it, and delete it only if this homeserver is the store's "
            "only user."
        ) from None


def _parse_marker(data: bytes) -> OwnerRecord:
    raw = json.loads(data)
    if not isinstance(raw, dict) or type(raw.get("format")) is not int or raw["format"] != MARKER_FORMAT:
        raise ValueError("not a marker of a format this tool knows")
    owner = raw["owner"]
    fields = (owner["server_name"], owner["fingerprint"], owner["database"], raw["recorded_at"], raw["recorded_by"],
              raw["claimed_at"])
    witnesses = raw.get("witnesses", [])
    contested = raw.get("contested", "")
    if (not all(isinstance(field, str) for field in fields) or not isinstance(contested, str)
            or type(raw["newest_media_ts"]) is not int
            or not isinstance(witnesses, list) or not all(isinstance(witness, str) for witness in witnesses)):
        raise ValueError("a field has the wrong type")
    if len(witnesses) > MAX_WITNESSES:
        raise ValueError(f"{len(witnesses)} witnesses, more than this tool writes")
    return OwnerRecord(HomeserverIdentity(*fields[:3]), raw["newest_media_ts"], *fields[3:], tuple(witnesses),
                       contested)


async def record_owner(store: ObjectStore, identity: HomeserverIdentity, newest_media_ts: int,
                       witnesses: tuple[str, ...], command: str, claimed_at: str | None = None) -> OwnerRecord:
    """Write the marker naming `identity` as the store's owner; `claimed_at` that of the record
    it renews (a new claim starts now)."""
    now = _now()
    record = OwnerRecord(identity, newest_media_ts, now, _by(command), claimed_at or now, witnesses)
    try:
        with _marker_file(record) as path:
            for _ in range(2):  # a copy that arrives wrong is written again, once
                await store.put_file(path, OWNER_MARKER)
                written = await _read_back(store)
                if written == record:
                    return record
                if written is not None and written.owner.same_homeserver(identity):
                    return written  # another run of this homeserver (another --shard) recorded it meanwhile
                if written is not None:  # another homeserver claimed it at the same moment: its claim stands
                    raise OwnershipError(
                        f"{store.backend.describe()} was claimed at the same moment by homeserver "
                        f"{written.describe()}, not {identity.describe()}: two homeservers must never share a bucket "
                        "and prefix. Refusing; nothing was deleted.")
    except OSError as error:
        raise MarkerUnavailableError(f"could not record this homeserver as the owner of {store.backend.describe()} "
                                     f"({error}): nothing was deleted") from None
    with contextlib.suppress(OSError):  # a damaged marker left there would stop every later run
        await store.delete(OWNER_MARKER)
    raise MarkerUnavailableError(f"the owner marker written to {store.backend.describe()} did not read back as "
                                 "written (so it was removed): nothing was deleted")


async def mark_contested(store: ObjectStore, recorded: OwnerRecord, refused: HomeserverIdentity, command: str) -> None:
    """Record in the marker that a run of the same homeserver with another database (`refused`)
    was refused by it: from then on neither database's runs delete anything (see
    OwnerRecord.contested). Best effort: a store that does not take it leaves the refusal alone."""
    if recorded.contested:
        return
    note = f"{_now()}: {_by(command)} was refused, with the database {refused.database}"
    with _marker_file(replace(recorded, contested=note)) as path, contextlib.suppress(OSError):
        await store.put_file(path, OWNER_MARKER)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def _by(command: str) -> str:
    """Which run, on which host, for people."""
    return f"objstore-offload {command} on {socket.gethostname()}"


@contextlib.contextmanager
def _marker_file(record: OwnerRecord) -> Iterator[str]:
    """The path of a temporary file holding the marker of `record` (what put_file sends), removed after."""
    body: dict[str, Any] = {"format": MARKER_FORMAT, "owner": asdict(record.owner),
                            "newest_media_ts": record.newest_media_ts, "recorded_at": record.recorded_at,
                            "recorded_by": record.recorded_by, "claimed_at": record.claimed_at,
                            "witnesses": list(record.witnesses)}
    if record.contested:
        body["contested"] = record.contested
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as file:
        json.dump(body, file, indent=2)
    try:
        yield file.name
    finally:
        os.unlink(file.name)


async def _read_back(store: ObjectStore) -> OwnerRecord | None:
    try:
        return await read_owner(store)
    except MarkerUnavailableError:
        raise
    except OwnershipError:  # damaged on its way
        return None
