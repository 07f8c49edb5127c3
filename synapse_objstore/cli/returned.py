"""Offloaded media whose files are back on local disk.

Synapse brings files of an offloaded media back to local disk while it serves that media:
it downloads the original again to make a thumbnail of a size it does not have yet
(synapse-s3-storage-provider issue #63) and writes the new thumbnail there too; a remote
media it cannot fetch from the store is downloaded again from its server. cache.db still
marks such a media offloaded (`known_deleted`), so nothing would free those files again.
check-deleted finds them and marks them not deleted (and remembers them in
`objstore_returned`): `write` lists them and `upload --delete` frees them again, after it
has verified each file against the store. A file that differs from the store's copy is
never uploaded over it (see offload.py).

Which offloaded media are looked at. Serving a media moves its `last_access_ts` in
Synapse's database (downloads and thumbnails alike). With Synapse's database at hand,
check-deleted looks only at the offloaded media accessed since its last look (less
RECHECK_MARGIN, for clocks that differ), one directory lookup for the original and one for
the thumbnails each: a nightly run costs as many lookups as offloaded media were used that
day, not as many as were ever offloaded. The first run, `--full`, or a run without Synapse's
database looks at every offloaded media instead (16,000-20,000 media a second on a local
disk, with a warm cache): run `check-deleted --full` after putting files back by hand, or if
Synapse stopped before it wrote the access times of the last minute.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from synapse_objstore.cli.cache_db import CacheDb, check_synced
from synapse_objstore.cli.synapse_db import SynapseDb
from synapse_objstore.media import Media

RECHECK_MARGIN_MS = 3600 * 1000
BATCH = 1000  # media marked not deleted per transaction
# media_accessed_between takes an end: one no timestamp reaches.
END_OF_TIME_MS = 2**62


@dataclass
class Returned:
    looked_at: int = 0
    media: int = 0
    files: int = 0


def find_returned(cache: CacheDb, base_path: str, synapse_db: SynapseDb | None, full: bool, dry_run: bool,
                  fail: Callable[[str, str], None], announce: Callable[[str], None], progress: Callable[[], object]
                  ) -> Returned:
    """Mark the offloaded media that have files on local disk again not deleted (see above)."""
    started_ms = int(time.time() * 1000)
    since_ms = cache.rechecked_since(synapse_db.description) if synapse_db is not None else 0
    if full or since_ms == 0:
        announce(f"Looking for every offloaded media ({cache.count(True)}) back on local disk")
        candidates = cache.iter_media(True)
    else:
        assert synapse_db is not None
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since_ms / 1000))
        announce(f"Looking for offloaded media back on local disk among those used since {since}")
        candidates = _accessed_since(cache, synapse_db, since_ms)
    found = Returned()
    batch: list[Media] = []
    for media in candidates:
        found.looked_at += 1
        progress()
        try:
            files = media.local_files(base_path)
        except ValueError as error:
            fail(media.describe(), str(error))
            continue
        if files:
            found.media += 1
            found.files += len(files)
            batch.append(media)
        if len(batch) >= BATCH and not dry_run:
            cache.mark_returned(batch)
            batch = []
    if not dry_run:
        cache.mark_returned(batch)
        if synapse_db is not None:
            cache.set_rechecked_since(synapse_db.description, started_ms - RECHECK_MARGIN_MS)
    return found


def _accessed_since(cache: CacheDb, synapse_db: SynapseDb, since_ms: int) -> Iterator[Media]:
    """The offloaded media that Synapse's database says were accessed (or created) since then."""
    for media_type, rows in synapse_db.media_accessed_between(since_ms, END_OF_TIME_MS):
        good, _ = check_synced(media_type, rows)  # bad rows: update-db reports them
        yield from cache.offloaded_among(media_type, good)
