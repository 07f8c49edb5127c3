"""`rekey`: rewrite every object still under an earlier SSE-C key (or none) under the current key.

An s3 store's config names the current key (`sse_customer_key`), the keys it replaced
(`previous_sse_customer_keys`) and whether objects written without SSE-C may remain
(`previously_unencrypted`); the provider reads under all of them. This command lists every
object under the prefix, asks the backend which configured key reads each (`key_of`), and
reports the objects and bytes under each key, named by label only ("current", "previous-1",
..., "unencrypted"; never a key). Nothing changes without `apply`.

With `apply`, each object not under the current key is rewritten under it in the store
(`rewrite_with_current_key`: CopyObject with the copy-source SSE-C headers, the object's
metadata, Content-Type and storage class kept; a streamed GET-and-PUT through this host where
the store cannot do that copy, as Ceph RGW 16.2 cannot: it answers 501 to a copy from an SSE-C
source, and leaves the copy of an unencrypted object unencrypted), then verified:
the current key must read it, with the size, Content-Type and user metadata it had (the
sha256 metadata included). A failure is reported and never stops the others.

Crash safety: a CopyObject and a single PUT replace the object atomically, and a multipart
rewrite only when it completes, so a run killed at any point (SIGKILL included) leaves every
object whole, under its old key or the current one; the next run finds only what is left (an
interrupted multipart rewrite may leave an incomplete upload, which `reconcile --apply` aborts).
Two runs at once are harmless: each object is rewritten from what the store holds under a
configured key to the same bytes under the current key, and a rewrite that fails because the
other run got there first is checked again and counted as done.

The whole prefix is listed first, into a temporary index on disk (cli/listing_index.py, about
150 bytes an object), and nothing is rewritten before that listing has ended: rekey rewrites
only Synapse's media paths (media.parse_media_path) and this store's owner marker (the provider
and the CLI read it through the same keys, and one left under an old key would be unreadable
once that key leaves the config). Any other object under the prefix (another homeserver's
`hs2/local_content/...` or `hs2/synapse-objstore-owner.json` under a prefix "" meant to be
"hs1/", a name another tool wrote with a '..', '.' or empty segment) says the prefix may be
wrong: the run refuses (CommandError, exit 2; the dry run too) before rewriting anything,
naming the first few, and stops listing at the FOREIGN_NAMED-th. Checked as the listing comes,
that would be too late for one listed after the first rewrites. A listing that fails (the store
down, or answering errors, after the client's retries) so rewrites nothing: StoreUnusableError
(exit code 2). A store that goes silent while the objects are rewritten (cli/store_watch.py)
stops the run at once: the rewrites under way are abandoned, each whole or not at all, as when
the run is killed; the summary says what was done.

An object that no configured key reads is named, counted as failed and left as it is. Each
object is read and rewritten under the name the listing gives, exactly (`ObjectStore.key_of`
takes the listed object).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from synapse_objstore.backends.base import CURRENT, UNENCRYPTED, Backend, KeyedObject, KeyLabel, RewriteResult
from synapse_objstore.cli.each import each
from synapse_objstore.cli.listing_index import ListingIndex
from synapse_objstore.cli.report import Summary, human_size
from synapse_objstore.cli.store_watch import watched
from synapse_objstore.errors import CommandError, MediaPathError, StoreUnusableError, UnknownKeyError
from synapse_objstore.health import preflight
from synapse_objstore.media import parse_media_path, printable
from synapse_objstore.owner_marker import OWNER_MARKER
from synapse_objstore.redaction import redact
from synapse_objstore.store import ObjectInfo, ObjectStore

T = TypeVar("T")

# A listing stops at the FOREIGN_NAMED-th object that is neither media nor the owner marker; the refusal names them.
FOREIGN_NAMED = 3


@dataclass
class RekeySummary(Summary):
    """`objects_*` count the objects listed, under each key, and rewritten."""

    objects_listed: int = 0
    bytes_listed: int = 0
    objects_current: int = 0  # already under the current key
    bytes_current: int = 0
    objects_old: int = 0  # under a previous key, or unencrypted where the current config encrypts
    bytes_old: int = 0
    objects_rekeyed: int = 0  # rewritten and verified (would be, in a dry run)
    bytes_rekeyed: int = 0
    objects_copied: int = 0  # of those, copied in the store, server-side
    objects_streamed: int = 0  # of those, downloaded and uploaded again through this host
    bytes_streamed: int = 0
    objects_gone: int = 0  # deleted while the run went on (Synapse purged the media)
    objects_unreadable: int = 0  # no configured key reads them
    # label -> [objects, bytes]; labels only, never a key
    by_key: dict[str, list[int]] = field(default_factory=dict)
    current_key: str = ""  # what the current config writes: "SSE-C" or "no SSE-C"
    fingerprints: dict[str, str] = field(default_factory=dict)  # label -> "key md5 1a2b3c4d"; never a key
    stopped: str = ""  # why the run stopped before the listing ended; "" when it did not

    def count_key(self, label: str, size: int) -> None:
        with self._lock:
            entry = self.by_key.setdefault(label, [0, 0])
            entry[0] += 1
            entry[1] += size

    def lines(self) -> list[str]:
        rewrote = "Would have rewritten" if self.dry_run else "Rewrote"
        lines = [f"Listed {self.objects_listed} objects ({human_size(self.bytes_listed)}); the current config "
                 f"writes {self.current_key}"]
        for label, (objects, size) in sorted(self.by_key.items(), key=lambda item: _label_order(item[0])):
            named = f" ({self.fingerprints[label]})" if label in self.fingerprints else ""
            lines.append(f"  under {label}{named}: {objects} objects ({human_size(size)})")
        if self.objects_unreadable:
            lines.append(f"  readable with no configured key: {self.objects_unreadable} objects (see below)")
        if self.objects_gone:
            lines.append(f"  deleted while the run went on: {self.objects_gone} objects")
        lines.append(f"{rewrote} {self.objects_rekeyed} objects under the current key "
                     f"({human_size(self.bytes_rekeyed)})" + ("" if self.dry_run else ", each verified"))
        if self.objects_streamed:
            lines.append(f"  {self.objects_streamed} of them ({human_size(self.bytes_streamed)}) downloaded and "
                         "uploaded again through this host: the store could not rewrite them in place")
        left = self.objects_old - (0 if self.dry_run else self.objects_rekeyed)
        if left > 0:
            lines.append(f"Left under an earlier key: {left} objects" +
                         (" (run again with --apply to rewrite them)" if self.dry_run else " (run again)"))
        elif not self.stopped and not self.failures and not (self.dry_run and self.objects_old):
            lines.append("Every object is under the current key" + ("" if self.objects_rekeyed else " already"))
        if self.stopped:
            lines.append(f"Stopped after {self.objects_listed} objects listed: {self.stopped}; the objects not "
                         "looked at yet were left as they are (run again)")
        return lines + self.failure_lines("objects")


def _label_order(label: str) -> tuple[int, int]:
    if label == CURRENT:
        return (0, 0)
    if label.startswith("previous-") and label[9:].isdigit():
        return (1, int(label[9:]))
    return (2, 0)


def check_rekeyable(store: ObjectStore, apply: bool = False, decrypt: bool = False) -> None:
    """Refuse (CommandError, exit 2) a store this command cannot rekey, saying why; and an
    --apply that would store SSE-C objects unencrypted (a config whose sse_customer_key is
    missing, by design or by mistake) unless `decrypt` confirms it."""
    backend = store.backend
    if backend.name != "s3" or type(backend).rewrite_with_current_key is Backend.rewrite_with_current_key:
        raise CommandError(
            f"rekey works on S3 stores only (SSE-C keys are an S3 feature); this store is {backend.describe()}, "
            f"with the {backend.name} backend"
        )
    settings: Any = backend.settings
    if settings.sse_customer_key is None and backend.key_labels() == (CURRENT,):
        raise CommandError(
            f"nothing to rekey on {backend.describe()}: its config has no sse_customer_key, no "
            "previous_sse_customer_keys and no previously_unencrypted. To encrypt a bucket written without SSE-C, "
            "set sse_customer_key and previously_unencrypted: true; to rotate a key, move it to "
            "previous_sse_customer_keys and set the new one as sse_customer_key; to turn SSE-C off, unset "
            "sse_customer_key and list the old key in previous_sse_customer_keys"
        )
    if apply and settings.sse_customer_key is None and not decrypt:
        raise CommandError(
            f"the config of {backend.describe()} has no sse_customer_key, so --apply would store every object "
            "now under one of previous_sse_customer_keys unencrypted (turning SSE-C off). If that is what you "
            "want, add --decrypt; if not, set sse_customer_key (the key new uploads are to use) and run again"
        )


class Rekeyer:
    def __init__(self, store: ObjectStore, jobs: int, apply: bool, summary: RekeySummary, progress: Any,
                 info: Callable[..., None]) -> None:
        self.store = store
        self.backend: Backend = store.backend  # an S3Backend (check_rekeyable)
        self.jobs = jobs
        self.apply = apply
        self.summary = summary
        self.progress = progress
        self.info = info
        settings: Any = self.backend.settings
        self._likely = CURRENT  # the key of the last object looked at: the one to try first
        self._first_rewrite = {True: asyncio.Lock(), False: asyncio.Lock()}  # see _rewrite
        self._learned: set[bool] = set()
        summary.current_key = "SSE-C" if getattr(settings, "sse_customer_key", None) is not None else "no SSE-C"
        summary.fingerprints = {str(label): name for label, name in self.backend.key_fingerprints().items()}

    async def run(self) -> None:
        await preflight(self.store)
        try:
            await watched(self._rekey_listed(), self.store)
        except StoreUnusableError:
            self.summary.stopped = self.summary.stopped or f"{self.store.backend.describe()} stopped answering"
            raise

    async def _rekey_listed(self) -> None:
        index = await self._listing()
        try:
            await each(index.listed(), self._object, self.jobs, (OSError, MediaPathError),  # store errors are OSErrors
                       lambda info, error: self.summary.fail(info.media_path, error), lambda: self.progress.update(1))
        finally:
            index.close()

    async def _listing(self) -> ListingIndex:
        """Every object under the prefix, listed before any is rewritten; a CommandError if any is not ours."""
        foreign: list[str] = []

        def check(info: ObjectInfo) -> None:
            self.summary.add(objects_listed=1, bytes_listed=info.size)
            if info.media_path != OWNER_MARKER and parse_media_path(info.media_path) is None:
                foreign.append(info.media_path)
                if len(foreign) >= FOREIGN_NAMED:
                    raise self._foreign(foreign, more=True)

        try:
            index = await ListingIndex.of(self.store, check)
        except (OSError, StoreUnusableError) as error:  # a store error, or a bucket gone (a missing file, to s3fs)
            cause = error.__cause__ if isinstance(error, StoreUnusableError) and error.__cause__ else error
            self.summary.stopped = f"listing {self.store.backend.describe()} failed"
            raise StoreUnusableError(
                f"rekey stopped: listing {self.store.backend.describe()} failed ({type(cause).__name__}: {cause}) "
                f"after {self.summary.objects_listed} objects. Nothing was rewritten (rekey lists every object "
                "before it rewrites any); run the same command again once the store can be used"
            ) from error
        if foreign:
            index.close()
            raise self._foreign(foreign, more=False)
        return index

    def _foreign(self, names: list[str], more: bool) -> CommandError:
        keys = ", ".join(printable(self.store.prefix + name) for name in names)
        return CommandError(
            f"refusing to rekey {self.store.backend.describe()}: its prefix {self.store.prefix!r} holds "
            f"objects that are neither Synapse media nor this store's owner marker: {keys}"
            f"{', and maybe more' if more else ''}. Is the prefix right? They may be another homeserver's, which "
            "a rekey would make unreadable to it. Nothing was rewritten; fix the prefix (or move those objects out "
            "of it) and run again"
        )

    async def _object(self, info: ObjectInfo) -> None:
        media_path = info.media_path
        try:
            found = await self._inspect(info, self._likely)
        except FileNotFoundError:
            self.summary.add(objects_gone=1)
            return
        except UnknownKeyError as error:
            self.summary.add(objects_unreadable=1)
            self.summary.fail(media_path, f"no configured key reads it; left as it is ({error})")
            return
        label = self._likely = found.label
        self.summary.count_key(label, info.size)
        if label == CURRENT:
            self.summary.add(objects_current=1, bytes_current=info.size)
            return
        self.summary.add(objects_old=1, bytes_old=info.size)
        if not self.apply:
            self.summary.add(objects_rekeyed=1, bytes_rekeyed=info.size)
            return
        try:
            result = await self._rewrite(info, found)
        except FileNotFoundError:
            self.summary.add(objects_gone=1)
            return
        except OSError as error:
            # another run at the same time may have rewritten it first: then the read with the old key fails
            if await self._verify(info, found) is None:
                self.summary.add(objects_rekeyed=1, bytes_rekeyed=info.size)
                return
            self.summary.fail(media_path, f"not rewritten, still under {label}: {error}")
            return
        if not result.server_side:  # the backend says why, once, in a warning
            self.summary.add(objects_streamed=1, bytes_streamed=int(result.bytes_moved))
        else:
            self.summary.add(objects_copied=1)
        problem = await self._verify(info, found)
        if problem is not None:
            self.summary.fail(media_path, f"rewritten from {label}, but {problem}")
            return
        self.summary.add(objects_rekeyed=1, bytes_rekeyed=info.size)

    async def _rewrite(self, info: ObjectInfo, found: KeyedObject) -> RewriteResult:
        """The backend's rewrite. The first of each kind (from an SSE-C key, from no key) runs
        alone: it learns whether the store can copy such objects in place, so that the others
        do not each try a copy the store refuses (and the backend says so once, not once per job)."""
        def rewrite() -> Awaitable[RewriteResult]:
            return self.store.rewrite_with_current_key(info, found)

        kind = found.label == UNENCRYPTED
        if kind not in self._learned:
            async with self._first_rewrite[kind]:
                if kind not in self._learned:
                    try:
                        return await rewrite()
                    finally:
                        self._learned.add(kind)
        return await rewrite()

    async def _inspect(self, info: ObjectInfo, first: KeyLabel = CURRENT) -> KeyedObject:
        """Which configured key reads the object, with its HEAD (size, Content-Type, metadata, ETag):
        the backend's `key_of`, trying the key labelled `first` first."""
        return await self._read(lambda: self.store.key_of(info, first))

    async def _verify(self, info: ObjectInfo, before: KeyedObject) -> str | None:
        """None if the current key reads the object with the size, Content-Type and metadata it had;
        else what differs."""
        try:
            after = await self._inspect(info)
        except FileNotFoundError:
            return "it is gone after the rewrite"
        except OSError as error:
            return f"it cannot be checked: {error}"
        if after.label != CURRENT:
            return f"it reads with {after.label}, not the current key"
        if after.size != before.size:
            return f"its size changed: {before.size} before, {after.size} after"
        for name, what in (("ContentType", "Content-Type"), ("Metadata", "user metadata")):
            if after.info.get(name) != before.info.get(name):
                return (f"its {what} changed: {_shown(before.info.get(name))} before, "
                        f"{_shown(after.info.get(name))} after")
        return None

    async def _read(self, operation: Callable[[], Awaitable[T]]) -> T:
        """A read that tries the configured keys in turn, tried once more if none fits: another run
        (or another rekey of this one's object) may have moved it under the current key between
        the tries, after the current key was tried and before the old one was."""
        try:
            return await operation()
        except UnknownKeyError:
            return await operation()


def _shown(value: object) -> str:
    return redact(repr(value))[:200]
