"""Direct uploads: the large-upload path of the AWS deployment.

API Gateway takes request bodies of at most 10 MB (and Lambda 6 MB), so STOW-RS through the Lambda API
cannot carry a large multi-frame object or a whole study. Instead of a second upload protocol, a client
asks for upload URLs (``POST /uploads``) and PUTs each Part 10 file straight to S3 under ``incoming/``:
S3 notifies the indexer exactly as for the gateway's objects, and the one ingest (validation, catalog,
index, events, quarantine of bad objects with their reason) takes it from there. Nothing new can go
wrong in between: an upload that is never made leaves nothing behind, a bad object is quarantined as
any other, and a retried PUT of the same bytes is a duplicate that ingest settles.

The URLs are presigned S3 PUTs (the API Lambda's credentials, valid ``expires_seconds``) for keys the
service names: a random id per upload, so clients cannot overwrite each other's uploads or reach any
key outside ``incoming/``. S3 caps one PUT at 5 GB; SOP instances beyond that are not a practical case.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from skypacs.errors import InvalidQuery
from skypacs.keys import incoming_key

UPLOAD_PREFIX = "uploads/"
DEFAULT_EXPIRES_SECONDS = 900
MAX_UPLOADS_PER_REQUEST = 1000
SINGLE_PUT_LIMIT = 5 * 1024**3


@dataclass(frozen=True)
class Upload:
    id: str
    key: str
    url: str
    expires_seconds: int


Presigner = Callable[[str, int], str]
"""``(key, expires_seconds) -> URL`` for one PUT of a ``application/dicom`` object at ``key``."""


class UploadService:
    def __init__(self, presign: Presigner, *, expires_seconds: int = DEFAULT_EXPIRES_SECONDS) -> None:
        self._presign = presign
        self.expires_seconds = expires_seconds

    def create(self, count: int = 1) -> list[Upload]:
        """``count`` fresh upload URLs, one per Part 10 file."""
        if not 1 <= count <= MAX_UPLOADS_PER_REQUEST:
            raise InvalidQuery(f"count must be between 1 and {MAX_UPLOADS_PER_REQUEST}, got {count}")
        uploads = []
        for _ in range(count):
            upload_id = secrets.token_hex(16)
            key = incoming_key(UPLOAD_PREFIX + upload_id)
            uploads.append(Upload(upload_id, key, self._presign(key, self.expires_seconds),
                                  self.expires_seconds))
        return uploads
