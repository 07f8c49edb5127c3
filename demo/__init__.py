"""The README's demo (`python -m demo`), and the harness it shares with the end-to-end tests.

The harness (a child process helper, a real Synapse, a small Matrix client) lives here rather
than under tests/ because the demo must run without the test suite, while the tests may import
from here: `tests/servers/synapse.py` re-exports it and adds what only tests need (PostgreSQL).
"""
