"""objstore-offload: move Synapse media that has not been accessed for a while to an object store."""
