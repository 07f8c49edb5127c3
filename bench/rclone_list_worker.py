"""List a store the way `objstore-offload reconcile` does (`ObjectStore.list()`, page by page)
and print `OBJECTS BYTES`: the listing side of reconcile, without its database and local work.

    python bench/rclone_list_worker.py STORE_YAML

Run by bench/rclone_bench.py in ours' venv (or with a candidate's checkout first on PYTHONPATH),
as a process of its own, measured from outside like every other command of that benchmark.
"""

from __future__ import annotations

import sys

import yaml

from synapse_objstore.config import parse_store_config
from synapse_objstore.io_loop import run
from synapse_objstore.store import ObjectStore


async def count(store: ObjectStore) -> tuple[int, int]:
    objects = size = 0
    async for info in store.list():
        objects += 1
        size += info.size
    return objects, size


def main() -> None:
    with open(sys.argv[1]) as config:
        store = ObjectStore(parse_store_config(yaml.safe_load(config)))
    try:
        objects, size = run(count(store))
    finally:
        run(store.close())
    print(objects, size)


if __name__ == "__main__":
    main()
