"""The objstore-offload process's own settings (synapse_objstore/cli/process.py)."""

from __future__ import annotations

import os
import subprocess
import sys


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


def test_the_cli_limits_malloc_arenas() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    assert fresh(ARENA_CALLS, env) == "[call(-8, 2)]"


def test_an_admins_malloc_arena_max_is_left_alone() -> None:
    assert fresh(ARENA_CALLS, {**os.environ, "MALLOC_ARENA_MAX": "4"}) == "[]"


def test_psycopg2_is_loaded_only_to_connect_to_postgres() -> None:
    """A run on SQLite, or without Synapse's database, does without psycopg2 (4-5 MiB of RSS)."""
    out = fresh("import sys, synapse_objstore.cli.main, synapse_objstore.cli.offload, synapse_objstore.cli.restore, "
                "synapse_objstore.cli.audit, synapse_objstore.cli.migrate, synapse_objstore.cli.reconcile; "
                "print('psycopg2' in sys.modules)")
    assert out == "False"
