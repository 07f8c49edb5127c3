"""What the tests share, other than fixtures (those come from the conftest.py files):

    required.py          skip a test when a server is not installed, or fail it when CI requires one
    s3.py                boto3 clients for moto and Ceph RGW, bucket contents, an RGW store config
    files.py             files written for the store to upload
    offload.py           objstore-offload's tests: a dataset, the CLI in-process, cache.db, what is lost
    offload_fixtures.py  their fixtures (a Synapse database, media store, homeserver.yaml), a pytest plugin
    homeserver.py        a real Synapse with our provider, a user on it, its bucket, its metrics
    streaming.py         waiting for a stream's state (a paused client, a connection given back)

The servers themselves (moto, Ceph RGW, Azurite, Synapse, ...) are in the top-level `servers`
package; the provider loaded as Synapse loads it, consumers, streaming helpers, put_media and
read_object are in `synapse_objstore.testing` (shipped with the conformance suite).
"""
