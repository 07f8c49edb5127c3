"""The servers the demo, the tests and the benchmarks run on 127.0.0.1, each started as a child
process (or a thread) and stopped by its own PID, and what they are filled with.

    process.py        start a process, wait for its port, stop it by PID; ServerProcess, their base
    moto.py           moto's S3 server
    ceph_rgw.py       a throwaway Ceph cluster with the RADOS Gateway (S3 with SSE-C)
    azurite.py        Azurite's Blob service (npm package in azurite/)
    gcs_emulator.py   gcp-storage-emulator (GCS's JSON API)
    redis.py          redis-server, over which Synapse's workers replicate
    postgres.py       throwaway databases on the PostgreSQL at 127.0.0.1:5432
    synapse.py        a real Synapse homeserver configured with media storage providers
    synapse_workers.py  Synapse's main process with media_repository workers
    matrix_client.py  a small Matrix client for a Synapse from synapse.py
    media.py          media to upload: an image Synapse makes thumbnails of
    synapse_media.py  a synthetic Synapse database's media tables and media store (for objstore-offload)
    front_proxy.py    an HTTP server in front of moto playing a store that misbehaves

Nothing here imports from tests/ or bench/: both, and demo/, import from here.
"""
