"""Which homeserver a store (bucket + prefix) belongs to, so that `reconcile` never deletes the
objects of another one.

`reconcile` deletes every object its database does not know. Pointed at the wrong database (a
homeserver.yaml of another server with the same provider block, a database.yaml left in the
working directory, a staging server cloned from production) it would take a healthy
homeserver's media for orphans. So the store carries a small marker object, `OWNER_MARKER`
under the prefix, naming its homeserver: the server name, a fingerprint of its database, where
that database was, and the creation time of the newest media it had. The first `upload` or
`reconcile --apply` with a database writes it. Then:

- an `upload` or `reconcile` with another homeserver's database is refused (two homeservers must
  never share a prefix: the first to offload there claims it);
- a `reconcile` with the owner's database in another place (a copy on a staging server, a clone),
  or with one whose newest media is older than the recorded one (restored from a backup), is
  refused until the admin says the database changed (`--database-changed`);
- an `upload` or `reconcile` with a database that lacks the owner's witnesses is refused the
  same way, wherever that database is (below).

Witnesses: a copy of the owner's database in the same place as far as its settings tell (a
staging server cloned whole from production, `localhost:5432` on both) and with media of its
own since (so not older) passes the checks above; its reconcile would take the media the owner
added after the copy for orphans. So every `upload` and `reconcile --apply` of the owner
records the ids of its WITNESS_COUNT newest local media in the marker, newest first, and a run
whose database lacks all of the NEWEST_WITNESSES_MISSING newest of them is refused: it is not
the database that recorded them, but a copy that went its own way since (a copy has every
media up to the moment it was made, and none of the other's after). Media deleted here and
there since are orphans as ever; a homeserver that deleted its newest media since (an admin's
delete, a spam clean-up) says so once with `--database-changed`, and the run records the
witnesses anew. A copy that records first (it offloads before the owner runs again, with
media of its own) makes the owner's runs refuse until the admin looks, which is the point:
two databases write to one store. The refused run writes that into the marker (`contested`),
and the runs of both are refused from then on: else the copy's reconcile went on to delete
what the owner added after the copy, while the owner was refused. `--database-changed` records
the marker anew without it.

The fingerprint is that of the homeserver's first user (name and creation time, which Synapse
never changes or deletes: deactivated users keep their row). It stays the same when the
database moves to another host, is restored from a dump or ported from SQLite to PostgreSQL,
and differs between any two homeservers. When the settings come from homeserver.yaml, that user
must be of its `server_name`, so a `database:` section copied from another server is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from synapse_objstore.cli.synapse_db import SynapseDb
from synapse_objstore.errors import (
    MarkerUnavailableError,
    ObjectStoreError,
    OwnershipError,
    StoreUnusableError,
    SynapseDbError,
)
from synapse_objstore.media import printable
from synapse_objstore.owner_marker import (
    OWNER_MARKER,
    HomeserverIdentity,
    OwnerRecord,
    mark_contested,
    read_owner,
    record_owner,
)

if TYPE_CHECKING:  # the store's modules take long to import; the CLI imports this module at start
    from synapse_objstore.store import ObjectStore

__all__ = ["OWNER_MARKER", "OwnershipError", "check_owner", "check_same_owner", "claim_store", "identify"]
# The most a reconcile run deletes, in percent of the media objects listed, unless told otherwise.
# A wrong database makes nearly every object look orphaned; a nightly run deletes a sliver.
DEFAULT_MAX_DELETE_SHARE = 10.0
# How many of its newest local media a run records as witnesses of the owner's database; a
# database that lacks all of the NEWEST_WITNESSES_MISSING newest of them is refused.
WITNESS_COUNT = 32
NEWEST_WITNESSES_MISSING = 3


@dataclass(frozen=True)
class DatabaseState:
    """What a run's database shows of the homeserver, next to what the store's marker recorded."""

    identity: HomeserverIdentity
    local_media: int
    remote_media: int
    newest_media_ts: int  # when its newest media was created (ms)
    witnesses: tuple[str, ...]  # its newest local media, to record
    missing_witnesses: tuple[str, ...]  # of the witnesses recorded in the marker, those it lacks

    def renews(self, recorded: OwnerRecord) -> bool:
        """Whether recording this state would change the marker."""
        return bool(recorded.contested) or (recorded.owner, recorded.newest_media_ts, recorded.witnesses) != (
            self.identity, self.newest_media_ts, self.witnesses)


def read_state(db: SynapseDb, identity: HomeserverIdentity, recorded: OwnerRecord | None) -> DatabaseState:
    """The state of `db`, whose homeserver is `identity` (blocking: run it in a thread)."""
    local, remote, newest_media_ts = db.media_counts()
    witnesses = tuple(db.newest_local_media(WITNESS_COUNT))
    missing: tuple[str, ...] = ()
    if recorded is not None and recorded.witnesses and recorded.owner.same_homeserver(identity):
        missing = tuple(sorted(set(recorded.witnesses) - db.existing_local_media(list(recorded.witnesses))))
    return DatabaseState(identity, local, remote, newest_media_ts, witnesses, missing)


def check_contested(recorded: OwnerRecord, state: DatabaseState, store: ObjectStore) -> None:
    """Refuse while the marker records that a run of this homeserver with another database was
    refused by it: two databases write to the store, and the one that recorded last (a staging
    clone that ran first) would delete what the other added since the copy."""
    if not recorded.contested:
        return
    raise OwnershipError(
        f"{store.backend.describe()} belongs to homeserver {recorded.describe()}, but a run with another database of "
        f"it was refused since ({printable(recorded.contested)}): two copies of the homeserver's database write to "
        f"this store (a staging server cloned from production?), and each one's reconcile would delete the media "
        f"the other added. Refusing, for this run's database ({state.identity.describe()}) as for the other. Give a "
        "copy a bucket or prefix of its own; then run the homeserver that owns the store once with "
        "--database-changed."
    )


def check_witnesses(recorded: OwnerRecord, state: DatabaseState, store: ObjectStore) -> None:
    """Refuse a database that lacks the newest witnesses the owner recorded (see above)."""
    newest = recorded.witnesses[:NEWEST_WITNESSES_MISSING]
    missing = state.missing_witnesses
    if not newest or not set(newest) <= set(missing):
        return  # none recorded (a marker of an earlier version), or deleted here and there since
    raise OwnershipError(
        f"{store.backend.describe()} belongs to homeserver {recorded.describe()}; the {len(newest)} newest local "
        f"media its database had then are not in this run's database ({state.identity.describe()}), "
        f"{len(missing)} of the {len(recorded.witnesses)} recorded in all "
        f"({', '.join(printable(media_id) for media_id in missing[:3])}{', ...' if len(missing) > 3 else ''}). "
        "So it is not that database but a copy that went its own way since: a staging server cloned from "
        "production, or a restored backup. Its reconcile would delete the media the other copy added: refusing. Give "
        "a copy a bucket or prefix of its own. Only if these media were deleted in Synapse since (an admin's "
        "delete, a spam clean-up), run again with --database-changed."
    )


def identify(db: SynapseDb) -> HomeserverIdentity:
    """The homeserver of `db` (blocking: run it in a thread), told by its first user. When the
    settings came from homeserver.yaml, the user must be of its `server_name`."""
    configured = db.server_name
    first_user = db.first_user(configured)
    if first_user is None and configured is not None and (other := db.first_user()) is not None:
        raise OwnershipError(
            f"homeserver.yaml ({db.source}) says server_name {configured!r}, but the users of its database "
            f"({db.description}) are of {other[0].partition(':')[2]!r}: its 'database:' section names "
            "another homeserver's database. Refusing."
        )
    if first_user is None:
        raise OwnershipError(f"{db.description} (from {db.source}) has no users: it is not the database of a "
                             "homeserver that has media. Refusing.")
    name, created_ts = first_user
    server_name = name.partition(":")[2]
    if not name.startswith("@") or not server_name:
        raise OwnershipError(f"the first user of {db.description} is {name!r}, not a Matrix user id: "
                             "is it a Synapse database?")
    fingerprint = hashlib.sha256(f"{name}\n{created_ts}".encode()).hexdigest()[:16]
    return HomeserverIdentity(server_name, fingerprint, db.description)


async def claim_store(store: ObjectStore, db: SynapseDb, command: str, dry_run: bool,
                      database_changed: bool = False) -> str | None:
    """Before offloading into a store: refuse one recorded as another homeserver's, or as this
    one's by a database that `db` is a copy of gone its own way since (the witnesses; unless
    `database_changed`); record this homeserver in one that has no owner yet (the first to
    offload there claims it), and renew its record (the witnesses) otherwise. A database in
    another place than recorded, or older, renews nothing until reconcile is told
    `--database-changed`: offloading deletes nothing remote, so it goes on.

    What only costs the check does not stop the run either: a database whose users or media
    cannot be read (a role without SELECT on `users`), a store that does not take the marker
    this time (the returned warning says so; the next run checks). A marker the store does
    not give (after the batch retries, and one more try when the store failed rather than
    refused, as a media gets) is refused: MarkerUnavailableError. A store that fails
    the listing made before a claim (does it already hold objects?) stops the run as a failed
    `preflight` does (StoreUnusableError): nothing is claimed, so the next run claims it, and
    tells. Nothing here bounds the store's calls: run this `watched` (cli/store_watch.py), as
    the rest of a run, so that a silent store stops it."""
    try:
        identity = await asyncio.to_thread(identify, db)
    except SynapseDbError as error:
        return f"warning: the store's owner is neither checked nor recorded: {error}"
    # A marker the store will not give (403, or 400 for an SSE-C key other than the one it was
    # written with: another homeserver's) is an owner unknown, not none: refused (exit 2), or
    # that owner's reconcile would take what this run offloads (and deletes) for its orphans.
    from synapse_objstore.cli.store_watch import is_retryable  # imports the store: not at the CLI's start

    try:
        recorded = await read_owner(store)
    except MarkerUnavailableError as error:
        if error.__cause__ is None or not is_retryable(error.__cause__):
            raise
        recorded = await read_owner(store)
    try:
        if recorded is not None and not recorded.owner.same_homeserver(identity):
            raise OwnershipError(
                f"{store.backend.describe()} belongs to homeserver {recorded.describe()}, but this run's database is "
                f"{identity.describe()}. Two homeservers must never share a bucket and prefix: each one's reconcile "
                f"would delete the other's media. Refusing to {command} into it; check --config, database.yaml "
                "and the provider block."
            )
        state = await asyncio.to_thread(read_state, db, identity, recorded)
        if recorded is not None and not database_changed:
            try:
                check_witnesses(recorded, state, store)
            except OwnershipError:
                if not dry_run:
                    await mark_contested(store, recorded, identity, command)
                raise
            check_contested(recorded, state, store)
        if dry_run:
            return None
        if recorded is None:
            held = await _holds_objects(store)
            await record_owner(store, identity, state.newest_media_ts, state.witnesses, command)
            if held:
                return (f"note: recorded {identity.describe()} as the owner of {store.backend.describe()}, which "
                        "already holds objects. If another homeserver writes to this bucket and prefix, separate "
                        "them now: once this claim is older than its grace period, reconcile takes the other's "
                        "media for this one's orphans.")
        elif not database_changed and (recorded.owner.database != identity.database
                                       or state.newest_media_ts < recorded.newest_media_ts):
            return (f"note: the owner record of {store.backend.describe()} is not renewed: it names the database "
                    f"{printable(recorded.owner.database)}, with newer media than this run's "
                    f"({printable(identity.database)}) or elsewhere; reconcile refuses until told --database-changed")
        elif state.renews(recorded):
            await record_owner(store, identity, state.newest_media_ts, state.witnesses, command, recorded.claimed_at)
    except (SynapseDbError, MarkerUnavailableError) as error:
        return f"warning: the store's owner is neither checked nor recorded: {error}"
    return None


async def _holds_objects(store: ObjectStore) -> bool:
    """Whether the store holds anything besides the owner marker (one short listing)."""
    from synapse_objstore.health import store_failure  # imports the store: not at the CLI's start

    objects = store.list(page_size=2)
    try:
        async with contextlib.aclosing(objects):  # type: ignore[type-var]  # an async generator, typed as an iterator
            async for info in objects:
                if info.media_path != OWNER_MARKER:
                    return True
    except ObjectStoreError as error:
        raise StoreUnusableError(f"{store_failure(store, error)}, listing it before recording this homeserver as "
                                 "its owner. Nothing was changed") from error
    return False


async def check_same_owner(source: ObjectStore, target: ObjectStore) -> None:
    """Before copying one store into another: refuse a target recorded as another homeserver's."""
    source_owner, target_owner = await read_owner(source), await read_owner(target)
    if source_owner and target_owner and not source_owner.owner.same_homeserver(target_owner.owner):
        raise OwnershipError(
            f"{target.backend.describe()} belongs to homeserver {target_owner.describe()}, and "
            f"{source.backend.describe()} to {source_owner.describe()}: copying would mix two homeservers' media "
            "under one prefix. Refusing; choose another bucket or prefix for the target."
        )


@dataclass(frozen=True)
class OwnerCheck:
    """What a reconcile run was told about the store's owner."""

    replace_owner: str | None = None  # the recorded owner's server name, to hand the store over
    database_changed: bool = False  # accept the same homeserver's database moved or restored


def check_owner(recorded: OwnerRecord | None, state: DatabaseState, store: ObjectStore, told: OwnerCheck) -> None:
    """Refuse to reconcile a store recorded as another homeserver's, or with a database that is
    a copy of the owner's: elsewhere than recorded (staging, a clone), older (a backup), or
    lacking the witnesses the owner recorded (a copy gone its own way)."""
    where, current, newest_media_ts = store.backend.describe(), state.identity, state.newest_media_ts
    if recorded is None:
        if told.replace_owner is not None:
            raise OwnershipError(f"--replace-owner: {where} has no recorded owner to replace; leave the option out")
        return
    if not recorded.owner.same_homeserver(current):
        if told.replace_owner == recorded.owner.server_name:
            return
        if told.replace_owner is not None:
            raise OwnershipError(f"--replace-owner {told.replace_owner!r} does not name the store's "
                                 f"recorded owner ({recorded.owner.server_name!r})")
        raise OwnershipError(
            f"{where} belongs to homeserver {recorded.describe()}, but this run's database is {current.describe()}"
            f"{', another database of that name' if recorded.owner.server_name == current.server_name else ''}. "
            "Reconciling would take the other homeserver's media for orphans and delete them: refusing. Check "
            "--config, database.yaml and the provider block: two homeservers must never share a bucket and prefix. "
            "Only if the store really changed hands, run again with --replace-owner naming the recorded owner."
        )
    if told.replace_owner is not None:
        raise OwnershipError(f"--replace-owner: {where} already belongs to this homeserver; leave the option out")
    if told.database_changed:
        return
    if recorded.owner.database != current.database:
        raise OwnershipError(
            f"{where} belongs to homeserver {recorded.describe()}; this run's database is {current.describe()}: the "
            "same homeserver's data, in another place. A copy of it (a staging server, a clone) lacks the media "
            "added since it was copied, and reconciling with it would delete them: refusing. If the database "
            "moved, run again with --database-changed."
        )
    if newest_media_ts < recorded.newest_media_ts:
        raise OwnershipError(
            f"the newest media in {current.database} was created {_iso(newest_media_ts)}, before the newest one "
            f"this store's owner had when last recorded ({_iso(recorded.newest_media_ts)}): the database is an "
            "older copy (restored from a backup?), and reconciling would delete the media added since. Refusing. "
            "If you know why, run again with --database-changed."
        )
    check_witnesses(recorded, state, store)
    check_contested(recorded, state, store)


def _iso(ts_ms: int) -> str:
    return datetime.datetime.fromtimestamp(ts_ms / 1000, datetime.timezone.utc).isoformat(" ", "seconds")
