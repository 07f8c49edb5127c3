"""The requests a moto server served, read from its log (servers/moto.py: one line per
request), counted by method and target, for tests that assert what a command costs."""

from __future__ import annotations

import re
from collections import Counter

from servers.moto import MotoServer
from synapse_objstore.owner_marker import OWNER_MARKER

REQUEST = re.compile(r'"(?:\x1b\[\d+m)?(?P<method>[A-Z]+) /(?P<bucket>[^/? ]+)(?P<rest>[^ ]*) '
                     r'HTTP/1.1(?:\x1b\[0m)?" (?P<status>\d+)')


def log_offset(moto: MotoServer) -> int:
    """Where moto's log ends now: pass it as `since` to count only the requests after it."""
    return len(moto.log_path.read_text())


def requests_to(moto: MotoServer, bucket: str, since: int = 0) -> Counter[str]:
    """Requests moto served for `bucket` after offset `since` of its log: 'HEAD object',
    'PUT object', 'GET bucket' (a listing), ...; those about the owner marker as 'HEAD marker',
    'PUT marker', ...; those of a multipart upload as 'PUT multipart', 'POST multipart'."""
    counts: Counter[str] = Counter()
    for match in REQUEST.finditer(moto.log_path.read_text()[since:]):
        if match["bucket"] == bucket:
            rest = match["rest"]
            target = "object" if rest.startswith("/") and len(rest) > 1 and "uploads" not in rest else "bucket"
            if rest.endswith(OWNER_MARKER):
                target = "marker"
            if "uploadId=" in rest or rest.endswith("?uploads"):
                target = "multipart"
            counts[f"{match['method']} {target}"] += 1
    return counts
