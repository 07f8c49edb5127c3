"""SSE-C key rotation on reads: which keys a read tries, in which order, and what answer moves
it to the next one.

A read (HEAD or GET) is sent first exactly as without rotation: through the filesystem, whose
`s3_additional_kwargs` hold the current key. Only an answer that says the key did not fit
(400 or 403) sends it again with the next key: the previous keys in order, then no key when
`previously_unencrypted`. A 404 is final at once (a missing object costs one request), and a
timeout or 5xx is raised as it is (another key would not help). The later attempts go through
the raw aiobotocore client (public: `set_session()`), because s3fs merges a call's arguments
over the filesystem's and so cannot leave the current key out of one call.

Which key an object is under is told by the reply, not by the success alone: Ceph RGW serves
an unencrypted object to a request that carries a key, without `SSECustomerKeyMD5` in the
reply; such an object is "unencrypted" whatever key was sent.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import s3fs
from botocore.exceptions import ClientError

from synapse_objstore.backends.base import CURRENT, UNENCRYPTED, KeyLabel
from synapse_objstore.backends.s3.s3fs_private import call_s3, translate_error
from synapse_objstore.backends.s3.settings import S3Settings
from synapse_objstore.errors import UnknownKeyError

# What an S3 store answers to a read whose SSE-C key does not fit the object (no key for an
# SSE-C object, a wrong one, or, on AWS, a key for an unencrypted object).
KEY_MISMATCH_STATUSES = frozenset({400, 403})
# Error codes of a 403 that refuses this host's credentials, whatever key was sent: another key
# would get the same answer. (A HEAD's reply has no body, hence no code: only its status.)
CREDENTIAL_ERROR_CODES = frozenset({
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired",
    "InvalidSecurity", "AccountProblem", "AllAccessDisabled", "RequestTimeTooSkewed",
})


@dataclass(frozen=True)
class SseKey:
    """One key reads may use: its label, and the key (None: no SSE-C)."""

    label: KeyLabel
    key: str | None
    algorithm: str = "AES256"

    def request_args(self) -> dict[str, str]:
        """The SSE-C arguments of a HeadObject, GetObject, PutObject, ... with this key."""
        return {} if self.key is None else {"SSECustomerKey": self.key, "SSECustomerAlgorithm": self.algorithm}

    def copy_source_args(self) -> dict[str, str]:
        """The arguments of a CopyObject or UploadPartCopy whose source is under this key."""
        if self.key is None:
            return {}
        return {"CopySourceSSECustomerKey": self.key, "CopySourceSSECustomerAlgorithm": self.algorithm}

    def __repr__(self) -> str:  # never the key
        return f"SseKey({self.label!r})"


# The current key as the filesystem sends it (calls with it go through the filesystem).
THE_CURRENT_KEY = SseKey(CURRENT, None)


def fingerprint(key: str) -> str:
    """How a key may be named where its label is not enough: "key md5 1a2b3c4d" (the first
    8 hex digits of the MD5 that S3 itself sends as SSECustomerKeyMD5), never the key."""
    return f"key md5 {hashlib.md5(key.encode()).hexdigest()[:8]}"


def read_keys(settings: S3Settings) -> tuple[SseKey, ...]:
    """The keys reads try, in order: the current one (no key when SSE-C is off), the
    previous ones, then no key if objects written without SSE-C may remain."""
    algorithm = settings.sse_customer_algo
    current = settings.sse_customer_key.get_secret_value() if settings.sse_customer_key is not None else None
    keys = [SseKey(CURRENT, current, algorithm)]
    keys += [SseKey(KeyLabel(f"previous-{n}"), secret.get_secret_value(), algorithm)
             for n, secret in enumerate(settings.previous_sse_customer_keys, start=1)]
    if settings.previously_unencrypted:
        keys.append(SseKey(UNENCRYPTED, None, algorithm))
    return tuple(keys)


def object_label(sent: SseKey, reply: dict[str, Any]) -> KeyLabel:
    """The key the object is under, from the key that read it and the reply: a reply without
    SSECustomerKeyMD5 to a request with a key is an unencrypted object (Ceph RGW)."""
    if sent.key is not None and not reply.get("SSECustomerKeyMD5"):
        return UNENCRYPTED
    if sent.key is None and sent.label == CURRENT:
        return CURRENT  # SSE-C is off: an unencrypted object is under the current "key"
    return sent.label


async def call_with_key(s3: s3fs.S3FileSystem, key: SseKey, method: str, **kwargs: Any) -> dict[str, Any]:
    """One call with `key`: the current key through the filesystem (as every call without
    rotation), any other on the raw client, with exactly this key or none."""
    if key.label == CURRENT:
        return await call_s3(s3, method, **kwargs)
    client = await s3.set_session()
    try:
        reply: dict[str, Any] = await getattr(client, method)(**kwargs, **key.request_args())
    except ClientError as error:
        raise translate_error(error) from error
    return reply


async def read_with_keys(
    s3: s3fs.S3FileSystem, keys: tuple[SseKey, ...], method: str, **kwargs: Any
) -> tuple[dict[str, Any], SseKey]:
    """`method` (head_object, get_object) with each key in turn until one fits: the reply and
    the key that read it. FileNotFoundError at the first 404; UnknownKeyError when no key fits
    (with one key to try, that key's own error, as without rotation)."""
    first_error: OSError | None = None
    statuses: set[int | None] = set()
    for key in keys:
        try:
            return await call_with_key(s3, key, method, **kwargs), key
        except FileNotFoundError:
            raise
        except OSError as error:
            if not key_did_not_fit(error) or len(keys) == 1:
                raise
            first_error = first_error or error
            statuses.add(http_status(error))
    tried = ", ".join(key.label for key in keys)
    raise UnknownKeyError(
        f"no configured SSE-C key reads s3://{kwargs.get('Bucket')}/{kwargs.get('Key')} (tried {tried}): it was "
        "written with a key missing from sse_customer_key and previous_sse_customer_keys"
        + ("" if keys[-1].label == UNENCRYPTED else ", or without SSE-C (see previously_unencrypted)")
        + ("; or the store refuses this host's credentials or access to the object: every try was answered "
           "403 Forbidden" if statuses == {403} else "")
    ) from first_error


def key_did_not_fit(error: BaseException) -> bool:
    """Whether the store's answer says the SSE-C key sent does not fit the object (rather than
    refusing the credentials, or anything else)."""
    return http_status(error) in KEY_MISMATCH_STATUSES and error_code(error) not in CREDENTIAL_ERROR_CODES


def error_code(error: BaseException) -> str | None:
    """The S3 error code ("AccessDenied", "SignatureDoesNotMatch", ...) behind an error s3fs
    translated; a HEAD's has none (botocore gives its status as the code)."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ClientError):
            code = cause.response.get("Error", {}).get("Code")
            return str(code) if code else None
        cause = cause.__cause__
    return None


def http_status(error: BaseException) -> int | None:
    """The HTTP status of the S3 reply behind an error s3fs translated, if there was one."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ClientError):
            status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return int(status) if status else None
        cause = cause.__cause__
    return None
