"""ObjectStore on Amazon S3, for the AWS archive.

Content fingerprints. The ObjectStore contract's ``etag`` is the MD5 hex digest of the bytes. S3's own
ETag is that only for single-part objects without SSE-KMS; the archive's bucket is SSE-KMS encrypted,
where S3 documents the ETag as *not* an MD5 digest. So ``put`` computes the MD5 itself, sends it as
``Content-MD5`` (S3 rejects a body that arrives different) and keeps it as the user metadata
``content-md5``, which ``head`` reports and ``move`` carries over (CopyObject copies metadata). For
objects written by other tools (an upload under ``incoming/``), ``head`` falls back to S3's ETag.
``list`` reports S3's ETags: listings carry no user metadata. S3's ETag still guards the conditional
copy and delete of ``move``. ``put`` never uses multipart (S3's 5 GB single-request limit applies).

Encryption. ``put`` and ``move`` ask for SSE-KMS only when a ``kms_key_id`` is given (with an S3 Bucket
Key, which cuts KMS requests to about one per object prefix and time window); otherwise nothing is
requested per object and the bucket's default encryption applies, which is how the CDK stack configures it.

Errors. A missing key (``NoSuchKey``, HTTP 404) is :class:`NotFound`; every other S3 or transport
failure is :class:`BackendError`, which the indexer's queue retries.
"""

from __future__ import annotations

import base64
import hashlib
import io
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from skypacs.errors import BackendError, NotFound, SkyPacsError
from skypacs.ports import ObjectInfo

if TYPE_CHECKING:
    S3Client = Any
    """``mypy_boto3_s3.S3Client`` where the stubs are installed."""

CONTENT_MD5_METADATA = "content-md5"
"""User metadata (``x-amz-meta-content-md5``) holding the MD5 hex digest of the object's bytes."""
SINGLE_REQUEST_LIMIT = 5 * 1024**3
"""S3's limit for one PutObject or CopyObject; above it, writes and copies need multipart."""

_SPOOL_IN_MEMORY = 16 * 1024 * 1024
_READ_CHUNK = 1024 * 1024
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_RANGE_NOT_SATISFIABLE_CODES = frozenset({"InvalidRange", "416"})


class S3ObjectStore:
    def __init__(self, bucket: str, *, client: S3Client | None = None, kms_key_id: str | None = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("s3")
        self.bucket = bucket
        self.client = client
        self._encryption: dict[str, Any] = (
            {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id, "BucketKeyEnabled": True}
            if kms_key_id
            else {}
        )

    def put(self, key: str, data: bytes | BinaryIO) -> ObjectInfo:
        if isinstance(data, (bytes, bytearray, memoryview)):
            body = bytes(data)
            return self._put(key, body, len(body), hashlib.md5(body, usedforsecurity=False))
        if _is_seekable(data):
            start = data.tell()
            digest = hashlib.md5(usedforsecurity=False)
            while chunk := data.read(_READ_CHUNK):
                digest.update(chunk)
            size = data.tell() - start
            data.seek(start)
            return self._put(key, data, size, digest)
        # botocore needs a length and a rewindable body (it retries): spool a one-way stream first.
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as spool:
            digest = hashlib.md5(usedforsecurity=False)
            while chunk := data.read(_READ_CHUNK):
                spool.write(chunk)
                digest.update(chunk)
            size = spool.tell()
            spool.seek(0)
            return self._put(key, spool, size, digest)  # type: ignore[arg-type]

    def _put(self, key: str, body: bytes | BinaryIO, size: int, digest: Any) -> ObjectInfo:
        if size > SINGLE_REQUEST_LIMIT:
            raise BackendError(f"object {key} has {size} bytes, more than S3's 5 GB single-request limit")
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentLength=size,
                ContentMD5=base64.b64encode(digest.digest()).decode("ascii"),
                ContentType="application/dicom",
                Metadata={CONTENT_MD5_METADATA: digest.hexdigest()},
                **self._encryption,
            )
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"cannot write object {key}") from exc
        return ObjectInfo(key=key, size=size, etag=digest.hexdigest())

    def open(self, key: str) -> BinaryIO:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"cannot read object {key}") from exc
        return io.BufferedReader(_BodyReader(response["Body"], key), buffer_size=_READ_CHUNK)

    def read_range(self, key: str, start: int, length: int) -> bytes:
        if start < 0 or length < 0:
            raise ValueError(f"invalid range start={start} length={length}")
        if length == 0:
            self.head(key)  # same NotFound as any other read of a missing key
            return b""
        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=key, Range=f"bytes={start}-{start + length - 1}"
            )
            with response["Body"] as body:
                data: bytes = body.read()
        except ClientError as exc:
            if _code(exc) in _RANGE_NOT_SATISFIABLE_CODES:
                return b""  # start at or past the end of the object (HTTP 416)
            raise _translate(exc, f"cannot read object {key}") from exc
        except BotoCoreError as exc:
            raise _translate(exc, f"cannot read object {key}") from exc
        return data

    def head(self, key: str) -> ObjectInfo:
        return self._head(key)[0]

    def _head(self, key: str) -> tuple[ObjectInfo, str]:
        """The object's info (content MD5 as etag) and S3's own ETag (for conditional requests)."""
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"cannot read object {key}") from exc
        s3_etag = _etag(response["ETag"])
        content_md5 = response.get("Metadata", {}).get(CONTENT_MD5_METADATA) or s3_etag
        return ObjectInfo(key=key, size=int(response["ContentLength"]), etag=content_md5), s3_etag

    def presigned_put_url(self, key: str, expires_seconds: int) -> str:
        """A URL that lets its holder PUT one ``application/dicom`` object at ``key`` until it expires,
        with this store's credentials (SigV4: the client must be configured with ``s3v4``, which
        SSE-KMS buckets require). The bucket's default encryption applies to what is uploaded."""
        try:
            return str(self.client.generate_presigned_url(
                "put_object",
                Params={"Bucket": self.bucket, "Key": key, "ContentType": "application/dicom"},
                ExpiresIn=expires_seconds,
                HttpMethod="PUT",
            ))
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"cannot sign an upload URL for {key}") from exc

    def delete(self, key: str) -> None:
        # S3 answers 204 for a missing key too: deleting is idempotent without a check.
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"cannot delete object {key}") from exc

    def move(self, source_key: str, target_key: str) -> ObjectInfo:
        """Copy, then delete the source if it is still the object that was copied.

        Both steps are conditional on the source's S3 ETag: a source overwritten between the two (a new
        upload under the same name) is neither copied half-changed nor deleted; its own notification
        ingests it. Up to 5 GB the copy is one CopyObject; beyond, the managed transfer copies in parts.
        Either way the user metadata, and so the content MD5, goes with the object.
        """
        source, s3_etag = self._head(source_key)
        try:
            if source.size <= SINGLE_REQUEST_LIMIT:
                self.client.copy_object(
                    Bucket=self.bucket,
                    Key=target_key,
                    CopySource={"Bucket": self.bucket, "Key": source_key},
                    CopySourceIfMatch=f'"{s3_etag}"',
                    **self._encryption,
                )
                target = ObjectInfo(target_key, source.size, source.etag)
            else:
                self.client.copy(
                    {"Bucket": self.bucket, "Key": source_key},
                    self.bucket,
                    target_key,
                    ExtraArgs={"CopySourceIfMatch": f'"{s3_etag}"', **self._encryption},
                    Config=TransferConfig(multipart_threshold=SINGLE_REQUEST_LIMIT + 1),
                )
                target = self.head(target_key)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"cannot copy object {source_key} to {target_key}") from exc
        try:
            self.client.delete_object(Bucket=self.bucket, Key=source_key, IfMatch=f'"{s3_etag}"')
        except ClientError as exc:
            if _code(exc) not in ("PreconditionFailed", "412"):
                raise _translate(exc, f"cannot delete object {source_key} after copying it") from exc
            # Overwritten since the copy: keep the newer object, it is not ours to remove.
        except BotoCoreError as exc:
            raise _translate(exc, f"cannot delete object {source_key} after copying it") from exc
        return target

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in key order (S3 lists UTF-8 binary order).

        The etags are S3's (a listing has no user metadata): use :meth:`head` for the content MD5."""
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", ()):
                    yield ObjectInfo(key=item["Key"], size=int(item["Size"]), etag=_etag(item["ETag"]))
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"cannot list objects under {prefix!r}") from exc


class _BodyReader(io.RawIOBase):
    """A botocore ``StreamingBody`` as a raw binary stream, with its errors translated."""

    def __init__(self, body: Any, key: str) -> None:
        super().__init__()
        self._body, self._key = body, key
        self.name = key

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        try:
            chunk = self._body.read(len(view))
        except (BotoCoreError, OSError) as exc:
            raise BackendError(f"cannot read object {self._key}: {exc}") from exc
        view[: len(chunk)] = chunk
        return len(chunk)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


def _is_seekable(stream: BinaryIO) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, OSError):
        return False


def _etag(value: str) -> str:
    return value.strip('"')


def _code(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    if not code:
        code = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return code


def _translate(exc: ClientError | BotoCoreError, message: str) -> SkyPacsError:
    if isinstance(exc, ClientError):
        code = _code(exc)
        if code in _NOT_FOUND_CODES:
            return NotFound(f"{message}: no such object")
        return BackendError(f"{message}: {code}")
    return BackendError(f"{message}: {type(exc).__name__}")
