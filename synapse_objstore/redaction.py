"""Keep secrets out of every log line, whichever library writes it.

botocore and aiobotocore log request parameters (the SSE-C key among them) at DEBUG, from
many child loggers. A filter on a logger does not see its children's records, and the
handlers belong to Synapse, so the one place that sees every record is the record factory:
once a secret is registered, each new record whose text contains it is rewritten with the
secret replaced.

Only what is the secret is rewritten, never ordinary text that happens to hold the same
characters. How a secret is found depends on its length:

- MIN_SUBSTRING (16) characters or more: wherever it appears, even inside a longer word (a
  key inside a base64 blob or a URL). Every credential the backends take is this long, and
  no log line holds one by chance: SSE-C keys (32 characters) and the base64 form botocore
  logs (44), secret access keys (40), account keys, SAS and OAuth tokens.
- MIN_TOKEN (4) to 15 characters (a password of some fsspec filesystem, "minioadmin"):
  only where it stands alone, not next to a letter or digit, as a secret does where it is
  logged (`'password': 'hunt3r'`, `user:hunt3r@host`, `key=hunt3r`). The same characters
  inside another word ("passwords", "hunt3rs") are left alone. A secret that is a common
  word is still replaced where that word stands alone: there, nobody can tell it from the
  secret.
- Shorter (1-3 characters): not at all. Such a string is in ordinary text everywhere
  ("retry 1 of 5", "s3", "ok"), so every replacement would hide something else, and a
  secret that short protects nothing (it is guessed at once). A warning, without the
  value, says so when one is registered.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import Any

from synapse_objstore.errors import exception_chain

REDACTED = "<redacted>"
MIN_SUBSTRING = 16
MIN_TOKEN = 4

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()  # replaced wherever they appear, the longest first
_tokens: re.Pattern[str] | None = None  # short secrets, replaced where they stand alone
_token_secrets: frozenset[str] = frozenset()
_installed = False


def register_secrets(values: Iterable[str]) -> None:
    """Redact these strings from every log record made from now on (see the module docstring)."""
    global _secrets, _tokens, _token_secrets, _installed
    new = {value for value in values if value}
    too_short = sorted(len(value) for value in new if len(value) < MIN_TOKEN)
    with _lock:
        # the longest first, so that a secret holding another is replaced whole
        long = set(_secrets) | {value for value in new if len(value) >= MIN_SUBSTRING}
        _secrets = tuple(sorted(long, key=len, reverse=True))
        _token_secrets = _token_secrets | {value for value in new if MIN_TOKEN <= len(value) < MIN_SUBSTRING}
        if _token_secrets:
            alternatives = "|".join(re.escape(value) for value in sorted(_token_secrets, key=len, reverse=True))
            _tokens = re.compile(rf"(?<![0-9A-Za-z])(?:{alternatives})(?![0-9A-Za-z])")
        if (_secrets or _tokens) and not _installed:
            _install_factory()
            _installed = True
    for length in too_short:
        logger.warning("a secret of only %d characters is configured: too short to be told apart from ordinary "
                       "text, it is not redacted from logs; use a longer one", length)


def redact(text: str) -> str:
    """`text` with every registered secret replaced."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    if _tokens is not None:
        text = _tokens.sub(REDACTED, text)
    return text


def _install_factory() -> None:
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if not _secrets and _tokens is None:
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
            if any(redact(str(link)) != str(link) for link in exception_chain(exc)):
                # The traceback would print the secret; keep the type, drop the text.
                record.exc_info = None
                record.msg = f"{record.msg} [{type(exc).__name__}: {REDACTED}]"
        return record

    logging.setLogRecordFactory(factory)
