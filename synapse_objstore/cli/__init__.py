"""objstore-offload: move Synapse media that has not been accessed for a while to an object store.

Imported before anything else of the CLI (a package's `__init__` runs before its modules), so
the two settings of the process below apply before any library is loaded or thread started.
They change no behaviour, only what the process costs; see `lean_process`.
"""

from synapse_objstore.cli.process import lean_process

lean_process()
