"""A cache.db records the offload of one media store: media workers on several hosts, each with
a disk of its own, keep a cache.db each, and a run given another host's cache.db is refused.

`upload` takes a media without files in its media store for offloaded (on another host, its
files are simply elsewhere), so a shared cache.db would have one host's run mark the other
host's media done, and the other host would never offload them.
"""

from __future__ import annotations

import json
from pathlib import Path

from servers.synapse_media import SynapseMedia
from tests.support.offload import Dataset, Offload


def test_a_cache_db_of_another_media_store_is_refused(offload: Offload, homeserver_yaml: Path,
                                                      synapse: SynapseMedia, dataset: Dataset, tmp_path: Path) -> None:
    config = ["--config", str(homeserver_yaml)]
    host_a = tmp_path / "host_a_media"  # a worker's disk that holds none of these media
    host_a.mkdir()
    host_b = str(synapse.media_store)  # the other worker's disk, which holds them
    offload(*config, "update", str(host_a), "30d")
    on_a = json.loads(offload("--json", *config, "upload", str(host_a)).stdout)
    assert on_a["files_failed"] == 0 and on_a["files_uploaded"] == 0  # nothing here: no failure

    refused = offload(*config, "upload", "--delete", host_b, expect=2)
    assert f"records the offload of the media store {host_a}, not of this run's {host_b}" in refused.output
    assert "--cache-db" in refused.output
    assert synapse.local_files() >= set(dataset.old)  # nothing taken for done, nothing deleted

    # Host B with a cache.db of its own offloads its media
    own = ["--cache-db", str(tmp_path / "host_b.db")]
    offload(*config, *own, "update", host_b, "30d")
    on_b = json.loads(offload("--json", *config, *own, "upload", "--delete", host_b).stdout)
    assert on_b["files_uploaded"] == len(dataset.old) and on_b["files_failed"] == 0
    assert not synapse.local_files() & set(dataset.old)


def test_a_media_store_that_moved_is_recorded_once_told(offload: Offload, homeserver_yaml: Path,
                                                        synapse: SynapseMedia, dataset: Dataset,
                                                        tmp_path: Path) -> None:
    config = ["--config", str(homeserver_yaml)]
    old_place = tmp_path / "old_place"
    old_place.mkdir()
    offload(*config, "upload", "--dry-run", str(synapse.media_store))  # a dry run records nothing
    offload(*config, "update", str(old_place), "30d")
    offload(*config, "check-deleted", str(old_place))
    for command in ("check-deleted", "upload", "restore"):
        assert "--media-store-moved" in offload(*config, command, str(synapse.media_store), expect=2).output

    offload("--media-store-moved", *config, "check-deleted", str(synapse.media_store))
    offload(*config, "upload", str(synapse.media_store))
    assert "records the offload of the media store" in offload(*config, "update", str(old_place), "30d",
                                                               expect=2).output


def test_another_hosts_media_store_at_the_same_path_is_refused(offload: Offload, homeserver_yaml: Path,
                                                               synapse: SynapseMedia, dataset: Dataset,
                                                               tmp_path: Path) -> None:
    """Media workers on several hosts keep their media at the same path (/var/lib/synapse/media on
    each, as every container image does): a cache.db shared between them (on NFS) or copied from
    another host must be told apart by the media store itself, not by its path alone."""
    config = ["--config", str(homeserver_yaml)]
    media = synapse.media_store
    host_b = tmp_path / "host_b_disk"
    media.rename(host_b)  # host B's disk, with the media, is elsewhere
    media.mkdir()  # host A: the same path, a disk of its own that holds none of these media
    offload(*config, "update", str(media), "30d")
    on_a = json.loads(offload("--json", *config, "upload", str(media)).stdout)
    assert on_a["files_failed"] == 0 and on_a["files_uploaded"] == 0

    media.rename(tmp_path / "host_a_disk")
    host_b.rename(media)  # host B runs with the shared cache.db, its disk at the same path
    refused = offload(*config, "upload", "--delete", str(media), expect=2)
    assert "--cache-db" in refused.output and "another" in refused.output
    assert synapse.local_files() >= set(dataset.old)  # nothing taken for done, nothing deleted

    own = ["--cache-db", str(tmp_path / "host_b.db")]  # with a cache.db of its own, host B offloads
    offload(*config, *own, "update", str(media), "30d")
    on_b = json.loads(offload("--json", *config, *own, "upload", "--delete", str(media)).stdout)
    assert on_b["files_uploaded"] == len(dataset.old) and on_b["files_failed"] == 0

    # Host B's disk not mounted: an empty directory at its path is no media store of this cache.db
    media.rename(tmp_path / "host_b_disk")
    media.mkdir()
    offload(*config, *own, "update", str(media), "30d", expect=2)
    assert "without its .objstore-media-store-id" in offload(*config, *own, "upload", str(media), expect=2).output
