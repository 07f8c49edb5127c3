"""CacheDb.media_infos: what the upload reads with each page of media, one query for the page."""

from __future__ import annotations

from pathlib import Path

from synapse_objstore.cli.cache_db import CacheDb


def test_media_infos_is_media_info_of_each_media_of_a_page(tmp_path: Path) -> None:
    cache = CacheDb(str(tmp_path / "cache.db"))
    cache.add_media([("", "local1", "local1", "local"), ("", "local2", "local2", "local"),
                     ("example.com", "remote1", "fs1", "remote"), ("example.org", "remote1", "fs2", "remote")])
    with cache._conn:
        cache._conn.executemany("INSERT INTO objstore_media_info VALUES (?, ?, ?, ?)",
                                [("", "local1", "image/png", "ab" * 32), ("example.com", "remote1", "image/gif", None),
                                 ("example.net", "remote1", "text/plain", "cd" * 32)])
    page = [media for _, media in cache.media_page(False, -1)]
    infos = cache.media_infos(page)
    assert infos == {(m.origin, m.media_id): cache.media_info(m.origin, m.media_id) for m in page}
    assert [info is not None for info in infos.values()] == [True, False, True, False]
    assert cache.media_infos([]) == {}
    cache.close()
