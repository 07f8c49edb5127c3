"""Which homeserver a store (bucket + prefix) belongs to, so that `reconcile` never deletes the
objects of another one.

`reconcile` deletes every object its database does not know. Pointed at the wrong database (a
homeserver.yaml of another server with the same provider block, a database.yaml left in the
working directory) it would take a healthy homeserver's media for orphans. So the store carries
a small marker object, `OWNER_MARKER` under the prefix, naming the homeserver that reconciles
it: its server name and a fingerprint of its database. `reconcile --apply` writes it on its
first run and, on every run, refuses (exit 2, naming both) when the database it was given is
not the one the marker names.

The fingerprint is that of the homeserver's first user (name and creation time, which Synapse
never changes or deletes: deactivated users keep their row). It stays the same when the
database moves to another host, is restored from a dump or ported from SQLite to PostgreSQL,
and differs between any two homeservers. The server name is checked against the users too, so
a homeserver.yaml whose `database:` points at another server's database is refused as well.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import socket
import tempfile
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from synapse_objstore.cli.synapse_db import SynapseDb

if TYPE_CHECKING:  # the store's modules take long to import; the CLI imports this module at start
    from synapse_objstore.store import ObjectStore

# Not a media path Synapse writes (reconcile never deletes it), at the top of the prefix.
OWNER_MARKER = "synapse-objstore-owner.json"
MARKER_FORMAT = 1
MARKER_MAX_SIZE = 64 * 1024
# The most a reconcile run deletes, in percent of the media objects listed, unless told otherwise.
# A wrong database makes nearly every object look orphaned; a nightly run deletes a sliver.
DEFAULT_MAX_DELETE_SHARE = 10.0


class OwnershipError(RuntimeError):
    """The store belongs to another homeserver than the database given, or the owner cannot be
    told: reconcile refuses before it deletes anything (exit 2)."""


@dataclass(frozen=True)
class HomeserverIdentity:
    """A homeserver as its database shows it."""

    server_name: str
    # sha256 of the first user's name and creation time (16 hex digits); None while there is no user
    fingerprint: str | None
    database: str  # where it was read, for people: "postgres synapse on db.example:5432"

    def describe(self) -> str:
        fingerprint = f"fingerprint {self.fingerprint}" if self.fingerprint else "no users yet"
        return f"{self.server_name} (database {self.database}, {fingerprint})"

    def same_homeserver(self, other: HomeserverIdentity) -> bool:
        """Same server name, and the same fingerprint where both have one (a marker written while
        the homeserver had no user yet is claimed by its first fingerprint)."""
        if self.server_name != other.server_name:
            return False
        return self.fingerprint is None or other.fingerprint is None or self.fingerprint == other.fingerprint


@dataclass(frozen=True)
class OwnerRecord:
    """What the marker object holds."""

    owner: HomeserverIdentity
    recorded_at: str
    recorded_by: str

    def describe(self) -> str:
        return f"{self.owner.describe()}, recorded {self.recorded_at} by {self.recorded_by}"


def identify(db: SynapseDb, configured_server_name: str | None) -> HomeserverIdentity:
    """The homeserver of `db` (blocking: run it in a thread). Its server name is that of its
    users; homeserver.yaml's `server_name`, when given, must agree."""
    first_user = db.first_user()
    fingerprint = None
    server_name = configured_server_name
    if first_user is not None:
        name, created_ts = first_user
        users_server = name.partition(":")[2]
        if not name.startswith("@") or not users_server:
            raise OwnershipError(f"the first user of {db.description} is {name!r}, not a Matrix user id: "
                                 "is it a Synapse database?")
        if configured_server_name is not None and users_server != configured_server_name:
            raise OwnershipError(
                f"homeserver.yaml says server_name {configured_server_name!r}, but the users of its database "
                f"({db.description}) are of {users_server!r}: its 'database:' section names another "
                f"homeserver's database. Refusing to reconcile."
            )
        server_name = users_server
        fingerprint = hashlib.sha256(f"{name}\n{created_ts}".encode()).hexdigest()[:16]
    if server_name is None:
        raise OwnershipError(
            f"cannot tell which homeserver {db.description} belongs to (it has no users, and no homeserver.yaml "
            "names its server_name): give --config homeserver.yaml"
        )
    return HomeserverIdentity(server_name, fingerprint, db.description)


async def read_owner(store: ObjectStore) -> OwnerRecord | None:
    """The owner recorded in the store, or None when no marker is there yet."""
    where = f"{OWNER_MARKER} in {store.backend.describe()}"
    data = b""
    try:
        stream = await store.open_read(OWNER_MARKER)
        if stream is None:
            return None
        try:
            while chunk := await stream.read(MARKER_MAX_SIZE):
                data += chunk
                if len(data) > MARKER_MAX_SIZE:
                    break
        finally:
            await stream.close()
    except OSError as error:
        raise OwnershipError(f"cannot read the owner marker {where} ({error}): refusing to reconcile without "
                             "knowing whose store it is") from None
    try:
        raw = json.loads(data)
        if raw.get("format") != MARKER_FORMAT:
            raise ValueError(f"unknown format {raw.get('format')!r}")
        owner = raw["owner"]
        return OwnerRecord(
            HomeserverIdentity(str(owner["server_name"]), owner.get("fingerprint"), str(owner.get("database", "?"))),
            str(raw.get("recorded_at", "?")),
            str(raw.get("recorded_by", "?")),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise OwnershipError(
            f"the owner marker {where} cannot be read ({error}): it was not written by this tool, or is damaged. "
            "Refusing to reconcile; look at it, and delete it only if this homeserver is the store's only user."
        ) from None


async def record_owner(store: ObjectStore, identity: HomeserverIdentity, command: str) -> OwnerRecord:
    """Write the marker naming `identity` as the store's owner."""
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    record = OwnerRecord(identity, now, f"objstore-offload {command} on {socket.gethostname()}")
    body: dict[str, Any] = {"format": MARKER_FORMAT, "owner": asdict(identity),
                            "recorded_at": record.recorded_at, "recorded_by": record.recorded_by}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as file:
        json.dump(body, file, indent=2)
    try:
        await store.put_file(file.name, OWNER_MARKER)
    except OSError as error:
        raise OwnershipError(f"could not record this homeserver as the owner of {store.backend.describe()} "
                             f"({error}): nothing was deleted") from None
    finally:
        os.unlink(file.name)
    return record


def check_owner(recorded: OwnerRecord | None, current: HomeserverIdentity, store: ObjectStore,
                replace_owner: str | None) -> None:
    """Refuse when the store belongs to another homeserver. `replace_owner` must name the
    recorded owner's server to hand the store over (the old owner is then asked for nothing)."""
    if recorded is None or recorded.owner.same_homeserver(current):
        if replace_owner is not None and recorded is not None:
            raise OwnershipError(f"--replace-owner {replace_owner}: the store already belongs to this homeserver "
                                 f"({recorded.describe()}); leave the option out")
        return
    if replace_owner is not None:
        if replace_owner == recorded.owner.server_name:
            return
        raise OwnershipError(f"--replace-owner {replace_owner!r} does not name the store's recorded owner "
                             f"({recorded.owner.server_name!r})")
    raise OwnershipError(
        f"{store.backend.describe()} belongs to homeserver {recorded.describe()}, but this run's database is of "
        f"homeserver {current.describe()}. Reconciling would take the other homeserver's media for orphans and "
        "delete them: refusing. Check --config, database.yaml and the provider block. Only if the store really "
        "changed hands, run again with --replace-owner naming the recorded owner's server."
    )
