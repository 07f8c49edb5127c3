"""The objstore-offload process's own settings (synapse_objstore/cli/process.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from synapse_objstore.cli.main import Context
from synapse_objstore.config import parse_store_config

MiB = 1024 * 1024


def fresh(code: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def test_the_cli_loads_no_pyopenssl_nor_cryptography() -> None:
    """botocore takes its fallback SSLContext, the standard library's, and the CLI's S3 calls
    work as before (the CLI tests); pyOpenSSL and cryptography stay out of its memory."""
    out = fresh("import sys, synapse_objstore.cli.main, synapse_objstore.backends.s3.backend, "
                "botocore.httpsession as h, ssl; "
                "print(h.SSLContext is ssl.SSLContext, 'cryptography' in sys.modules, 'OpenSSL' in sys.modules)")
    assert out == "True False False"


ARENA_CALLS = ("import unittest.mock as m, ctypes\n"
               "with m.patch.object(ctypes, 'CDLL') as cdll:\n"
               "    import synapse_objstore.cli\n"
               "print(cdll.return_value.mallopt.call_args_list)")


MALLOC_VARIABLES = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_")


def test_the_cli_limits_malloc_arenas_and_fixes_its_mmap_threshold() -> None:
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_VARIABLES}
    assert fresh(ARENA_CALLS, env) == "[call(-8, 2), call(-3, 262144)]"


def test_an_admins_malloc_settings_are_left_alone() -> None:
    assert fresh(ARENA_CALLS, {**os.environ, "MALLOC_ARENA_MAX": "4", "MALLOC_MMAP_THRESHOLD_": "65536"}) == "[]"


# After an 8 MiB block (a multipart part) is freed, glibc would carve the next large blocks (file
# buffers) from its heap; objects made meanwhile (a request's, a reply's) sit above them, and
# the room of the buffers, once freed, stays resident: RSS that holds nothing.
FREED_BUFFERS = ("import re, synapse_objstore.cli\n"
                 "def rss(): return int(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
                 "part = bytes(8 << 20); del part\n"
                 "before = rss()\n"
                 "buffers = [bytearray(1 << 20) for _ in range(12)]\n"
                 "objects = [b'x' * 100 for _ in range(1000)]\n"
                 "del buffers\n"
                 "print(rss() - before)")


def test_freed_file_buffers_are_given_back_to_the_system() -> None:
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_VARIABLES}
    kept_kib = int(fresh(FREED_BUFFERS, env))
    assert kept_kib < 2048, f"{kept_kib} KiB of freed buffers still resident"


def test_psycopg2_is_loaded_only_to_connect_to_postgres() -> None:
    """A run on SQLite, or without Synapse's database, does without psycopg2 (4-5 MiB of RSS)."""
    out = fresh("import sys, synapse_objstore.cli.main, synapse_objstore.cli.offload, synapse_objstore.cli.restore, "
                "synapse_objstore.cli.audit, synapse_objstore.cli.migrate, synapse_objstore.cli.reconcile; "
                "print('psycopg2' in sys.modules)")
    assert out == "False"


@pytest.mark.parametrize(("block", "expected"), [
    ({"bucket": "media"}, 16 * MiB),  # two 8 MiB parts in flight
    ({"bucket": "media", "upload_memory_limit": "48MiB"}, 48 * MiB),  # a config's own stays
    ({"backend": "fsspec", "url": "file:///srv/media"}, None),  # no such setting
], ids=["s3", "s3-config", "fsspec"])
def test_batch_commands_hold_less_file_content_than_the_provider(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: dict[str, Any], expected: int | None,
) -> None:
    """The parts an upload holds are the peak of a batch run's memory: the batch commands'
    store holds 16 MiB of them, the provider's (Synapse's) default stays 32 MiB."""
    if "upload_memory_limit" not in block and expected is not None:
        assert parse_store_config(block).settings.upload_memory_limit == 32 * MiB  # type: ignore[attr-defined]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "store.yaml").write_text(yaml.safe_dump(block))
    context = Context(cache_db_path="cache.db", progress=False, as_json=False, config_paths=())
    assert getattr(context.store("store.yaml").backend.settings, "upload_memory_limit", None) == expected
