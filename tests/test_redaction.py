"""Log redaction replaces the secrets, and only them: a short secret never rewrites other text."""

from __future__ import annotations

import base64
import logging

import pytest

from synapse_objstore import redaction
from synapse_objstore.config import parse_store_config
from synapse_objstore.errors import ConfigError
from synapse_objstore.redaction import REDACTED, register_secrets

SSE_C_KEY = "0123456789abcdefghijABCDEFGHIJ+/"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.fixture(autouse=True)
def fresh_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """No secret registered before, and those registered here forgotten after (they are process-wide)."""
    monkeypatch.setattr(redaction, "_secrets", type(redaction._secrets)())
    monkeypatch.setattr(redaction, "_token_secrets", frozenset(), raising=False)
    monkeypatch.setattr(redaction, "_tokens", None, raising=False)


def logged(caplog: pytest.LogCaptureFixture, message: str, *args: object) -> str:
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="botocore.endpoint"):
        logging.getLogger("botocore.endpoint").debug(message, *args)
    return caplog.records[-1].getMessage()


def test_real_credentials_are_redacted_wherever_they_appear(caplog: pytest.LogCaptureFixture) -> None:
    key_b64 = base64.b64encode(SSE_C_KEY.encode()).decode()
    register_secrets([SSE_C_KEY, key_b64, SECRET_KEY])
    params = {"SSECustomerKey": key_b64, "Body": f"x{SSE_C_KEY}y", "Auth": f"secret={SECRET_KEY}&"}
    text = logged(caplog, "Making request with params: %r", params)
    assert SSE_C_KEY not in text and key_b64 not in text and SECRET_KEY not in text
    assert text.count(REDACTED) == 3 and "x<redacted>y" in text  # even inside a longer word


def test_short_secrets_never_rewrite_other_text(caplog: pytest.LogCaptureFixture) -> None:
    register_secrets(["1", "ok", "test", "hunt3r", "minioadmin"])
    for text in ("retry 1 of 5 ok", "running tests in testbed", "hunt3rs and hunt3r2", "minioadmins", "s3://b/1/ok"):
        assert logged(caplog, text) == text
    # where such a secret stands alone, as a logged parameter does, it goes
    assert logged(caplog, "%r", {"password": "hunt3r", "user": "minioadmin"}) == \
        "{'password': '<redacted>', 'user': '<redacted>'}"
    assert logged(caplog, "sftp://me:test@host/") == "sftp://me:<redacted>@host/"


def test_a_secret_too_short_to_redact_is_warned_about_without_its_value(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="synapse_objstore.redaction"):
        register_secrets(["x7"])
    assert "a secret of only 2 characters is configured" in caplog.text and "x7" not in caplog.text


def test_a_secret_holding_another_is_replaced_whole(caplog: pytest.LogCaptureFixture) -> None:
    register_secrets(["abcdefghijklmnop", "abcdefghijklmnopqrstuvwxyz"])
    assert logged(caplog, "k=abcdefghijklmnopqrstuvwxyz;") == "k=<redacted>;"


def test_a_secret_in_the_cause_of_a_logged_exception_stays_out(caplog: pytest.LogCaptureFixture) -> None:
    """The traceback prints every exception of the chain, not only the one logged."""
    register_secrets([SECRET_KEY])
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="synapse_objstore.test"):
        try:
            try:
                raise ValueError(f"signature for {SECRET_KEY} refused")
            except ValueError as error:
                raise RuntimeError("upload failed") from error
        except RuntimeError:
            logging.getLogger("synapse_objstore.test").exception("storing failed")
    assert SECRET_KEY not in caplog.text
    assert "[RuntimeError: <redacted>]" in caplog.text


def test_a_password_in_an_fsspec_url_is_in_no_repr_or_description() -> None:
    backend = parse_store_config({"backend": "fsspec", "url": "http://media:Hunter2Hunter2@127.0.0.1:1/media",
                                  "prefix": "hs/"})
    assert backend.describe() == "http://media:***@127.0.0.1:1/media/hs/"
    assert "Hunter2Hunter2" not in repr(backend.settings)
    assert "Hunter2Hunter2" in set(backend.settings.secret_values())  # so log lines are redacted too


def test_a_user_or_password_in_the_s3_endpoint_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError, match="'endpoint_url': must not hold a user or password") as refused:
        parse_store_config({"bucket": "media", "endpoint_url": "https://media:Hunter2Hunter2@s3.example.com"})
    assert "Hunter2Hunter2" not in str(refused.value)
