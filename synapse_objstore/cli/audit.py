"""`verify`: is every media that cache.db says is offloaded really in the store, at the right size?

Files this tool offloaded have a row in `objstore_files` with the size verified then. Media
offloaded by s3_media_upload have none: their original is checked against the size in
Synapse's database when one is configured, else for existence only.

Where the object carries a sha256 as metadata and the sha256 of the file is known (recorded
when it was offloaded, or, for an original, recorded by Synapse 1.128+), the two must be the
same: an object whose metadata names other content is a corrupted copy.

The store is listed once (listing_index.py) rather than asked about each file with a HEAD.
Where the listing's ETag is the MD5 of the content (S3 without SSE-C, a single PUT) and the
MD5 the file had when it was offloaded is recorded, the two equal prove the content; two
different ones mean other content (a corrupted copy) or an ETag that is no MD5 (a bucket
encrypting with SSE-KMS), which look alike, so the object is read back and its MD5 decides.
An equal ETag proves the content, which the size and sha256
metadata of a HEAD only vouch for. A file the listing lacks, or lists with another size, and
one whose ETag proves nothing (SSE-C, multipart) while a sha256 is known, are asked about with
a HEAD, and judged on it as before.

A file found good is counted only once a second listing, at the end of the run, shows it still
there, with the same size (and the same ETag, where a listing was what found it good): an
object deleted or replaced while the run went on is not called verified. A file that second
listing lacks or shows changed is asked about with a HEAD, and judged on it, as one the first
listing lacked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from synapse_objstore.checksums import MULTIPART_ETAG
from synapse_objstore.cli.cache_db import CacheDb
from synapse_objstore.cli.each import each
from synapse_objstore.cli.journal import Journal
from synapse_objstore.cli.listing_index import Counted, ListingIndex
from synapse_objstore.cli.report import Summary
from synapse_objstore.cli.store_watch import watched
from synapse_objstore.cli.synapse_db import SynapseDb
from synapse_objstore.errors import MediaPathError
from synapse_objstore.health import preflight
from synapse_objstore.media import Media
from synapse_objstore.store import ObjectInfo, ObjectStore
from synapse_objstore.verification import RemoteChecker

# (media path, size, sha256, MD5, the ETags it has as a multipart object) of a file of a media,
# as far as they are known
Expected = tuple[str, int | None, str | None, str | None, frozenset[str]]
VERIFIED = "verified"
READ_BACK = "read back"


class Auditor:
    def __init__(self, store: ObjectStore, cache: CacheDb, synapse_db: SynapseDb | None, jobs: int,
                 summary: Summary, progress: Any) -> None:
        self.store = store
        self.synapse_db = synapse_db
        self.jobs = jobs
        self.summary = summary
        self.progress = progress
        self.journal = Journal(cache)
        self.checker = RemoteChecker(store)
        self.etag_is_md5 = self.checker.etag_is_md5
        # A store that gives no checksums may be SSE-C, whose listing needs no key: only a HEAD
        # with the configured keys shows that one of them reads the object.
        self.listing_may_verify = self.checker.scheme.gives_checksums
        self.index: ListingIndex | None = None

    async def run(self) -> None:
        await preflight(self.store)
        await watched(self._audit(), self.store)

    async def _audit(self) -> None:
        self.index = await ListingIndex.of(self.store)
        try:
            # one media's (or file's) bug must not end the audit
            await each(self._offloaded(), self._media, self.jobs, (Exception,),
                       lambda row, error: self._bug(row[1].describe(), error), lambda: self.progress.update(1))
            await self.index.relist(self.store)
            files, size = self.index.confirmed()
            self.summary.add(files_verified=files, bytes_verified=size)
            await each(self.index.unconfirmed(), self._check_again, self.jobs, (Exception,),
                       lambda counted, error: self._bug(counted.path, error))
        finally:
            self.index.close()

    def _bug(self, path: str, error: Exception) -> None:
        self.summary.fail(path, f"{type(error).__name__}: {error}")

    async def _offloaded(self) -> AsyncIterator[tuple[int, Media]]:
        """Each offloaded media, with its rowid in cache.db."""
        after = -1
        while page := await self.journal.call(self.journal.cache.media_page, True, after):
            after = page[-1][0]
            for row in page:
                yield row

    def _lookups(self, media: Media) -> tuple[list[Expected], list[ObjectInfo | None]]:
        """Each file of the media, with what is known of it, and the listing's entry for each.
        Blocking: one worker thread does every lookup of a media."""
        expected = self._expected(media)
        assert self.index is not None
        return expected, [self.index.get(path) for path, *_ in expected]

    def _expected(self, media: Media) -> list[Expected]:
        cache = self.journal.cache
        records = cache.files_of(media)
        synapse_sha256 = self._synapse_sha256(media)
        if records:
            return [(r.path, r.size, synapse_sha256 if r.path == media.file_path else r.sha256, r.md5,
                     r.multipart_etags) for r in records]
        size = None
        if self.synapse_db is not None:
            size = self.synapse_db.media_length(media.origin, media.media_id)
        return [(media.file_path, size, synapse_sha256, None, frozenset())]

    def _synapse_sha256(self, media: Media) -> str | None:
        """The sha256 Synapse recorded for the original: as update-db copied it, else from its database."""
        info = self.journal.cache.media_info(media.origin, media.media_id)
        if info is None and self.synapse_db is not None:
            row = self.synapse_db.media_info(media.origin, media.media_id)
            return row[1].lower() if row is not None and row[1] else None
        return info.sha256.lower() if info is not None and info.sha256 else None

    def _judged_by_listing(self, listed: ObjectInfo | None, size: int | None, sha256: str | None,
                           md5: str | None, multipart: frozenset[str]) -> str | None:
        """What the listing alone proves of a file: VERIFIED (listed, its size, and its content
        proved by an MD5 ETag equal to the recorded MD5, or a multipart ETag the file has, or no
        sha256 to compare); READ_BACK: the object's content is to decide (an ETag other than the
        file's: other content, or an ETag that is no MD5, as SSE-KMS gives, look alike); None: a
        HEAD is to decide."""
        if listed is None or (size is not None and listed.size != size):
            return None
        etag = (listed.etag or "").strip('"').lower()
        if self.etag_is_md5 and md5 is not None and len(etag) == 32:
            return VERIFIED if etag == md5.lower() else READ_BACK
        if self.etag_is_md5 and md5 is not None and multipart and MULTIPART_ETAG.match(etag):
            # sha256 metadata travels with a copy of other content; the multipart ETag does not
            return VERIFIED if etag in multipart else READ_BACK
        if not self.listing_may_verify:
            return None
        return VERIFIED if sha256 is None or not self.store.backend.keeps_metadata else None

    async def _media(self, row: tuple[int, Media]) -> None:
        rowid, media = row
        self.summary.add(media=1)
        expected, listed = await self.journal.call(self._lookups, media)
        assert self.index is not None
        for file, found in zip(expected, listed, strict=True):
            good = await self._check(file, found, str(rowid))
            if good is not None:
                await self.index.counted(good)

    async def _check_again(self, counted: Counted) -> None:
        """Judge a file the second listing did not confirm on a HEAD's answer; count it if it is good."""
        file = await self.journal.call(self._expected_file, int(counted.note), counted.path)
        if file is None:  # cache.db changed under the run (verify holds its lock: by hand)
            self.summary.fail(counted.path, "no longer offloaded in cache.db")
            return
        try:
            info = await self.store.info(counted.path)
        except (OSError, MediaPathError) as error:
            self.summary.fail(counted.path, error)
            return
        good = await self._check(file, info, counted.note, asked=True)
        if good is not None:
            self.summary.add(files_verified=1, bytes_verified=good.size)

    def _expected_file(self, rowid: int, media_path: str) -> Expected | None:
        """What is known of the file at `media_path` of the offloaded media at `rowid` of cache.db. Blocking."""
        page = self.journal.cache.media_page(True, rowid - 1, 1)
        if not page or page[0][0] != rowid:
            return None
        return next((file for file in self._expected(page[0][1]) if file[0] == media_path), None)

    async def _check(self, file: Expected, found: ObjectInfo | None, note: str, asked: bool = False) -> Counted | None:
        """Judge a file on `found`: its entry in the listing (None: not listed), or, `asked`, a
        HEAD's answer; what that does not prove is read back, or asked about with a HEAD (unless
        `found` is one). A failure goes to the summary; a file found good is returned, as it
        was found, for the second listing to confirm (`note`: its media's rowid in cache.db,
        to look it up again)."""
        media_path, size, sha256, md5, multipart = file
        judged = self._judged_by_listing(found, size, sha256, md5, multipart)
        if judged == VERIFIED:
            assert found is not None
            return Counted(media_path, found.size, None if asked else found.etag, note)
        if judged == READ_BACK:
            assert md5 is not None and found is not None
            good = await self._read_back(media_path, md5)
            return Counted(media_path, found.size, None if asked else found.etag, note) if good else None
        info = found
        if not asked:
            try:
                info = await self.store.info(media_path)
            except (OSError, MediaPathError) as error:
                self.summary.fail(media_path, error)
                return None
        if info is None:
            self._missing(media_path)
        elif size is not None and info.size != size:
            self.summary.fail(media_path, f"remote size {info.size} != expected {size}")
        elif sha256 is not None and info.sha256 is not None and info.sha256 != sha256:
            self.summary.fail(media_path, f"corrupted copy: the object's sha256 metadata {info.sha256} is not "
                                          f"the content's sha256 {sha256}")
        else:
            return Counted(media_path, info.size, None, note)
        return None

    async def _read_back(self, media_path: str, md5: str) -> bool:
        """Judge a file by the MD5 of its object's content, read back: True if it is the file's."""
        try:
            remote = await self.checker.remote_md5(media_path)
        except (OSError, MediaPathError) as error:
            self.summary.fail(media_path, error)
            return False
        if remote is None:
            self._missing(media_path)
        elif remote != md5.lower():
            self.summary.fail(media_path, f"corrupted copy: the MD5 of the object's content, {remote}, is not the MD5 "
                                          f"of the file offloaded, {md5.lower()}")
        else:
            return True
        return False

    def _missing(self, media_path: str) -> None:
        self.summary.add(files_missing=1)
        self.summary.fail(media_path, f"missing from {self.store.backend.describe()}")
