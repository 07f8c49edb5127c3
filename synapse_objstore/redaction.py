"""Keep secrets out of every log line, whichever library writes it.

botocore and aiobotocore log request parameters (the SSE-C key among them) at DEBUG, from
many child loggers. A filter on a logger does not see its children's records, and the
handlers belong to Synapse, so the one place that sees every record is the record factory:
once a secret is registered, each new record whose text contains it is rewritten with the
secret replaced.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

REDACTED = "<redacted>"

_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()
_installed = False


def register_secrets(values: Iterable[str]) -> None:
    """Redact these strings from every log record made from now on."""
    global _secrets, _installed
    new = {value for value in values if value}
    if not new:
        return
    with _lock:
        _secrets = _secrets | new
        if not _installed:
            _install_factory()
            _installed = True


def redact(text: str) -> str:
    """`text` with every registered secret replaced."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _install_factory() -> None:
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if not _secrets:
            return record
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the logging module's to report
            return record
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            if redact(str(exc)) != str(exc):
                # The traceback would print the secret; keep the type, drop the text.
                record.exc_info = None
                record.msg = f"{record.msg} [{type(exc).__name__}: {REDACTED}]"
        return record

    logging.setLogRecordFactory(factory)
