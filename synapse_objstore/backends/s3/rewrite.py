"""Rewriting an object under the current SSE-C key (key rotation, `objstore-offload rekey`).

In the store itself when it can: CopyObject of the object onto itself, with the copy-source
SSE-C headers of the key it is under, the current key (from the filesystem) for the copy, and
its own metadata, Content-Type and storage class. A store that answers that copy with 501 (Ceph
RGW 16 for every SSE-C source) gets a rewrite through this host instead: a GET with the old
key streamed into a PUT, or into a multipart upload above multipart_threshold, with the current
key, holding at most the upload's memory limit, writing nothing to local disk. Either way the
object is replaced at once (CopyObject, PutObject and CompleteMultipartUpload are atomic): a
rewrite stopped midway leaves the object as it was. CopyObject takes at most 5 GiB: a larger
object is copied in parts (UploadPartCopy), or, where the store cannot, rewritten through this host.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import s3fs

from synapse_objstore.asyncfs import AsyncFs
from synapse_objstore.backends.base import (
    UNENCRYPTED,
    KeyedObject,
    KeyLabel,
    ObjectStream,
    RewriteResult,
    metadata_from,
)
from synapse_objstore.backends.s3.keys import SseKey, call_with_key, http_status
from synapse_objstore.backends.s3.s3fs_private import call_s3
from synapse_objstore.backends.s3.settings import S3Settings
from synapse_objstore.backends.s3.streaming import S3BodyStream
from synapse_objstore.backends.s3.uploads import MultipartUpload
from synapse_objstore.errors import ObjectChangedError
from synapse_objstore.upload_memory import UploadMemory

logger = logging.getLogger(__name__)

# The largest object one CopyObject copies (S3's limit); a larger one is copied in parts of
# COPY_PART_SIZE (UploadPartCopy takes 5 MiB to 5 GiB per part, 10,000 parts).
MAX_COPY_SIZE = 5 * 1024**3
COPY_PART_SIZE = 1024**3
# What a store that cannot copy parts with these SSE-C headers answers an UploadPartCopy.
PART_COPY_REFUSALS = frozenset({400, 501})
# What a HEAD says of an object that a copy with MetadataDirective REPLACE must repeat.
KEPT_HEADERS = ("ContentType", "CacheControl", "ContentDisposition", "ContentEncoding", "ContentLanguage", "Expires")


class Rewriter:
    """The rewrites of one store. Made on the I/O loop (its memory limit waits on that loop)."""

    def __init__(self, settings: S3Settings, keys: tuple[SseKey, ...], describe: str) -> None:
        self.settings, self._describe = settings, describe
        self._keys = {key.label: key for key in keys}
        self._memory = UploadMemory(int(settings.upload_memory_limit))
        # Whether to try a copy in the store, for an SSE-C source (True) and an unencrypted one
        # (False): until the store shows it cannot (501, or a copy it did not encrypt)
        self._copies = {True: True, False: True}

    def source_key(self, label: KeyLabel) -> SseKey:
        if label == UNENCRYPTED:
            return SseKey(UNENCRYPTED, None)
        if label not in self._keys:
            raise ValueError(f"no configured SSE-C key is labelled {label!r} (known: {', '.join(self._keys)})")
        return self._keys[label]

    async def rewrite(self, fs: AsyncFs, remote_path: str, source: KeyedObject) -> RewriteResult:
        """Rewrite the object at `remote_path`, which `source` (`key_of`'s HEAD) found under
        another key, under the current key: server-side if the store can, else through this
        host (see the module). Only the version that HEAD saw is rewritten: the copy and the
        GET are pinned to its ETag, so an object replaced since fails (412) rather than be
        rewritten from its new content with the old one's metadata."""
        s3: s3fs.S3FileSystem = fs.fs
        bucket, key, _ = s3.split_path(remote_path)
        old = self.source_key(source.label)
        head = {"ContentLength": source.size, **source.info}
        size = int(head["ContentLength"])
        encrypted_source = old.key is not None
        if size > MAX_COPY_SIZE and self._copies[encrypted_source]:
            try:
                await self._multipart_copy(s3, bucket, key, old, head)
                return RewriteResult(server_side=True, bytes_moved=0)
            except _NotCopied as refused:
                self._cannot_copy(encrypted_source, str(refused))
        elif self._copies[encrypted_source]:
            try:
                reply = await call_s3(s3, "copy_object", Bucket=bucket, Key=key,
                                      CopySource={"Bucket": bucket, "Key": key}, **_pinned(head), **_kept(head),
                                      **old.copy_source_args())
            except OSError as error:
                if http_status(error) != 501:
                    raise
                self._cannot_copy(encrypted_source, "CopyObject answered 501 Not Implemented")
            else:
                if self.settings.sse_customer_key is None or reply.get("SSECustomerKeyMD5"):
                    return RewriteResult(server_side=True, bytes_moved=0)
                # Ceph RGW 16 answers 200 to a copy of an unencrypted object with SSE-C headers
                # and leaves the copy unencrypted: the rewrite below encrypts it
                self._cannot_copy(encrypted_source, "CopyObject ignored the SSE-C key: the copy is not encrypted")
        return await self._rewrite_through_host(fs, bucket, key, old, head)

    async def _multipart_copy(self, s3: s3fs.S3FileSystem, bucket: str, key: str, old: SseKey,
                              head: dict[str, Any]) -> None:
        """An object above CopyObject's limit copied onto itself in parts (UploadPartCopy, each
        with the copy-source SSE-C headers), pinned to the ETag the HEAD saw. _NotCopied, with
        the upload aborted, when the store cannot (501) or leaves the parts unencrypted."""
        size = int(head["ContentLength"])
        create_args = {name: value for name, value in _kept(head).items() if name != "MetadataDirective"}
        started = await call_s3(s3, "create_multipart_upload", Bucket=bucket, Key=key, **create_args)
        upload_id = started["UploadId"]
        pinned = _pinned(head)
        try:
            parts = []
            for number, start in enumerate(range(0, size, COPY_PART_SIZE), start=1):
                end = min(start + COPY_PART_SIZE, size) - 1
                try:
                    reply = await call_s3(
                        s3, "upload_part_copy", Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number,
                        CopySource={"Bucket": bucket, "Key": key}, CopySourceRange=f"bytes={start}-{end}",
                        **pinned, **old.copy_source_args())
                except OSError as error:
                    # Ceph RGW 16 answers 400 InvalidArgument ("The calculated MD5 hash of the key
                    # did not match") to a part copy from one SSE-C key to another
                    status = http_status(error)
                    if status in PART_COPY_REFUSALS:
                        raise _NotCopied(f"UploadPartCopy answered {status}: {error}") from error
                    raise
                if self.settings.sse_customer_key is not None and not reply.get("SSECustomerKeyMD5"):
                    raise _NotCopied("UploadPartCopy ignored the SSE-C key: the copy is not encrypted")
                parts.append({"PartNumber": number, "ETag": reply["CopyPartResult"]["ETag"]})
            await call_s3(s3, "complete_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id,
                          MultipartUpload={"Parts": parts})
        except BaseException:
            await asyncio.shield(_abort(s3, bucket, key, upload_id))
            raise

    def _cannot_copy(self, encrypted_source: bool, why: str) -> None:
        self._copies[encrypted_source] = False
        logger.warning(
            "%s cannot rewrite %s objects under the current SSE-C key in the store (%s): each is rewritten "
            "through this host instead, downloading and uploading every byte",
            self._describe, "SSE-C" if encrypted_source else "unencrypted", why)

    async def _rewrite_through_host(
        self, fs: AsyncFs, bucket: str, key: str, old: SseKey, head: dict[str, Any]
    ) -> RewriteResult:
        s3: s3fs.S3FileSystem = fs.fs
        size = int(head["ContentLength"])
        condition = {"IfMatch": head["ETag"]} if head.get("ETag") else {}  # the version the HEAD saw
        reply = await call_with_key(s3, old, "get_object", Bucket=bucket, Key=key, **condition)
        stream = S3BodyStream(s3, bucket, key, reply, self.settings.read_timeout, old)
        try:
            kept = {name: value for name, value in _kept(head).items() if name != "MetadataDirective"}
            digest = ContentCheck(f"s3://{bucket}/{key}", metadata_from(None, head.get("Metadata")).sha256)
            if size < self.settings.multipart_threshold:
                async with self._memory.hold(size):
                    body = await read_exactly(stream, size)
                    md5 = await fs.in_thread(digest.take_all, body)
                    await call_s3(s3, "put_object", Bucket=bucket, Key=key, Body=body, ContentMD5=md5, **kept)
            else:
                still_there = functools.partial(call_with_key, s3, old, "head_object", Bucket=bucket, Key=key,
                                                **condition)
                await StreamedMultipartUpload(fs, stream, size, self.settings, self._memory, bucket, key,
                                              kept, digest, still_there).run()
        finally:
            await stream.close()
        return RewriteResult(server_side=False, bytes_moved=size)


class _NotCopied(Exception):
    """The store cannot make this copy itself; the message says why."""


async def _abort(s3: s3fs.S3FileSystem, bucket: str, key: str, upload_id: str) -> None:
    try:
        await call_s3(s3, "abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)
    except Exception as error:  # the copy failed already; report, and let that error stand
        logger.warning("could not abort multipart copy of s3://%s/%s: %s", bucket, key, error)


def _pinned(head: dict[str, Any]) -> dict[str, Any]:
    """A copy's condition: its source is still the version the HEAD saw."""
    return {"CopySourceIfMatch": head["ETag"]} if head.get("ETag") else {}


class ContentCheck:
    """The sha256 of the bytes a rewrite through this host read, checked against the object's
    sha256 metadata (where it has one) before the rewrite replaces the object: the old key's
    GET has no checksum to check under SSE-C, and the metadata is copied unchanged, so without
    this a body damaged on its way would be stored under the current key with a sha256 that
    vouches for it."""

    def __init__(self, name: str, expected_sha256: str | None) -> None:
        self._name, self._expected = name, expected_sha256
        self._sha256 = hashlib.sha256()

    def take(self, data: bytes) -> str:
        """Count `data` (the next bytes, in order); its base64 MD5, for the request's Content-MD5."""
        self._sha256.update(data)
        return base64.b64encode(hashlib.md5(data).digest()).decode()

    def take_all(self, data: bytes) -> str:
        """`take` for the whole content: checked at once."""
        md5 = self.take(data)
        self.check()
        return md5

    def check(self) -> None:
        """OSError if the bytes read are not those the sha256 metadata names."""
        if self._expected is not None and self._sha256.hexdigest() != self._expected:
            raise OSError(f"{self._name}: the bytes read with the old key are not those its sha256 metadata names "
                          f"({self._sha256.hexdigest()} read, {self._expected} recorded); not rewritten")


def _kept(head: dict[str, Any]) -> dict[str, Any]:
    """The arguments that keep an object's metadata, headers and storage class across a rewrite."""
    kept: dict[str, Any] = {name: head[name] for name in KEPT_HEADERS if head.get(name) is not None}
    return {"MetadataDirective": "REPLACE", "Metadata": head.get("Metadata", {}),
            "StorageClass": head.get("StorageClass", "STANDARD"), **kept}


async def read_exactly(stream: ObjectStream, length: int) -> bytes:
    """The next `length` bytes of `stream`; an error if it ends before."""
    pieces, got = [], 0
    while got < length:
        piece = await stream.read(length - got)
        if not piece:
            raise OSError(f"the object ended after {got} of the {length} bytes expected")
        pieces.append(piece)
        got += len(piece)
    return b"".join(pieces)


class StreamedMultipartUpload(MultipartUpload):
    """A multipart upload whose parts are read, in order, from an open object rather than a
    local file (the part loop reads parts in order, one at a time)."""

    def __init__(self, fs: AsyncFs, stream: ObjectStream, size: int, settings: S3Settings,
                 memory: UploadMemory, bucket: str, key: str, create_args: dict[str, Any],
                 digest: ContentCheck, still_there: Callable[[], Awaitable[Any]]) -> None:
        super().__init__(fs, f"s3://{bucket}/{key}", size, settings, memory, bucket, key,
                         create_args=create_args)
        self._stream, self._digest, self._still_there = stream, digest, still_there
        self._md5s: dict[int, str] = {}  # offset -> the part's Content-MD5, taken as it was read

    async def read_part(self, offset: int, length: int) -> bytes:
        """The next part of the stream, hashed here: parts are read in order, one at a time,
        though sent several at once."""
        data = await read_exactly(self._stream, length)
        self._md5s[offset] = await self.fs.in_thread(self._digest.take, data)
        return data

    async def send_part(self, number: int, offset: int, data: bytes) -> dict[str, Any]:
        return await self.send_part_with_md5(number, data, self._md5s.pop(offset))

    async def finish(self, receipts: list[dict[str, Any]]) -> str | None:
        """Complete the upload, unless the bytes read are not those the sha256 metadata names, or
        the object was deleted (Synapse purged the media) or replaced while its parts went up,
        which for a large object takes minutes: completing would bring it back. (A delete in the
        moments between this check and the completion still would: no store here has a
        conditional completion; `reconcile --apply` removes such an object as an orphan.) The
        upload is aborted on failure."""
        self._digest.check()
        try:
            await self._still_there()
        except (FileNotFoundError, OSError) as error:
            if isinstance(error, FileNotFoundError) or http_status(error) == 412:
                raise ObjectChangedError(f"s3://{self.bucket}/{self.key} was deleted or replaced while it was "
                                         "rewritten: not written back") from error
            raise
        return await super().finish(receipts)

    async def check_unchanged(self) -> None:
        """The stream's GET is pinned to one ETag (`S3BodyStream`): it cannot change."""
