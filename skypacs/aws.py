"""Composition root of the AWS archive: the adapters a Lambda function (or the gateway task) runs on.

Only this module reads the environment (names in :mod:`skypacs.config`):

- ``SKYPACS_BUCKET``: the S3 bucket of the objects (required);
- ``SKYPACS_CATALOG_TABLE``: the DynamoDB table of the catalog (required);
- ``SKYPACS_EVENT_BUS``: the EventBridge bus for plugin events (optional: without it nothing is published);
- ``SKYPACS_EXTRA_SOP_CLASSES``: private storage SOP classes to accept, as in the embedded mode;
- ``SKYPACS_OPENSEARCH_ENDPOINT``: the OpenSearch domain of the QueryIndex (optional: without it
  ingest catalogs only, and the DICOMweb query routes answer 503); ``SKYPACS_OPENSEARCH_PREFIX``;
- ``SKYPACS_STREAMING_URL`` and ``SKYPACS_URL_SIGNING_KEY`` or ``SKYPACS_URL_SIGNING_SECRET_ARN``: the
  large-retrieval path of the Lambda API.

boto3 clients are made on first use and kept for the life of the container (:func:`archive` caches
one :class:`AwsArchive` per process), so warm invocations reuse their connections. Tests inject clients
(or a whole archive with :func:`set_archive`) instead of relying on the environment.

The OpenSearch client signs with the Lambda's own credentials (SigV4) in ``AWS_REGION``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from skypacs.adapters.dynamodb_catalog import DynamoDbCatalog
from skypacs.adapters.eventbridge import EventBridgeEventBus
from skypacs.adapters.opensearch_index import OpenSearchQueryIndex, opensearch_client
from skypacs.adapters.s3 import S3ObjectStore
from skypacs.config import (
    ENV_BUCKET,
    ENV_CATALOG_TABLE,
    ENV_CORS_ORIGINS,
    ENV_EVENT_BUS,
    ENV_EXTRA_SOP_CLASSES,
    ENV_OPENSEARCH_ENDPOINT,
    ENV_OPENSEARCH_PREFIX,
    ENV_STREAMING_URL,
    ENV_URL_SIGNING_KEY,
    ENV_URL_SIGNING_SECRET_ARN,
    parse_origins,
)
from skypacs.errors import BackendError
from skypacs.services.delete import DeleteService
from skypacs.services.ingest import IngestService
from skypacs.services.quarantine import Quarantine
from skypacs.services.query import QueryService
from skypacs.services.retrieve import RetrieveService
from skypacs.services.store import StoreService
from skypacs.services.uploads import UploadService

if TYPE_CHECKING:
    from skypacs.dimse.server import Gateway, GatewayOptions

INGEST_READ_WORKERS = 8
"""Threads reading an SQS batch's objects from S3 and their catalog records from DynamoDB (botocore's
connection pool holds 10 per client)."""


CLIENT_RETRIES = {"mode": "standard", "max_attempts": 5}
"""botocore's standard retry mode: throttling and transient errors back off and retry in the SDK."""


def _client(service: str) -> Any:
    import boto3
    from botocore.config import Config

    # SigV4 for S3 also in presigned upload URLs: SSE-KMS objects refuse anything else.
    extra: dict[str, Any] = {"signature_version": "s3v4"} if service == "s3" else {}
    return boto3.client(service, config=Config(retries=dict(CLIENT_RETRIES), **extra))


@dataclass
class AwsArchive:
    """The AWS adapters wired into the core services; clients are created lazily, once."""

    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    s3_client: Any = None
    dynamodb_client: Any = None
    events_client: Any = None
    opensearch_client: Any = None
    secrets_client: Any = None

    def _required(self, name: str) -> str:
        value = self.environ.get(name, "").strip()
        if not value:
            raise RuntimeError(f"environment variable {name} is not set")
        return value

    @cached_property
    def store(self) -> S3ObjectStore:
        return S3ObjectStore(self._required(ENV_BUCKET), client=self.s3_client or _client("s3"))

    @cached_property
    def catalog(self) -> DynamoDbCatalog:
        return DynamoDbCatalog(
            self._required(ENV_CATALOG_TABLE),
            client=self.dynamodb_client or _client("dynamodb"),
            overflow=self.store,  # oversized instance metadata, under catalog/metadata/
        )

    @cached_property
    def events(self) -> EventBridgeEventBus | None:
        bus = self.environ.get(ENV_EVENT_BUS, "").strip()
        if not bus:
            return None
        return EventBridgeEventBus(bus, client=self.events_client or _client("events"))

    @cached_property
    def extra_sop_classes(self) -> frozenset[str]:
        value = self.environ.get(ENV_EXTRA_SOP_CLASSES, "")
        return frozenset(part.strip() for part in value.split(",") if part.strip())

    @cached_property
    def index(self) -> OpenSearchQueryIndex | None:
        endpoint = self.environ.get(ENV_OPENSEARCH_ENDPOINT, "").strip()
        if not endpoint:
            return None
        client = self.opensearch_client or opensearch_client(
            endpoint, region=self.environ.get("AWS_REGION") or self.environ.get("AWS_DEFAULT_REGION")
        )
        prefix = self.environ.get(ENV_OPENSEARCH_PREFIX, "").strip() or "skypacs"
        return OpenSearchQueryIndex(client, prefix=prefix, create_indices=False)

    @cached_property
    def query_service(self) -> QueryService:
        if self.index is None:
            raise BackendError(f"no query index is configured ({ENV_OPENSEARCH_ENDPOINT} is not set)")
        return QueryService(self.index)

    @property
    def streaming_url(self) -> str | None:
        """The streaming service's DICOMweb root (large-retrieval path), if deployed."""
        return self.environ.get(ENV_STREAMING_URL, "").strip() or None

    @cached_property
    def cors_origins(self) -> tuple[str, ...]:
        """Browser origins allowed to call the Lambda API (``SKYPACS_CORS_ORIGINS``)."""
        return parse_origins(self.environ.get(ENV_CORS_ORIGINS, ""))

    @cached_property
    def url_signing_key(self) -> bytes | None:
        """The key signing redirects to the streaming service: ``SKYPACS_URL_SIGNING_KEY``, or the
        secret named by ``SKYPACS_URL_SIGNING_SECRET_ARN`` (read once per container)."""
        value = self.environ.get(ENV_URL_SIGNING_KEY, "")
        if value:
            return value.encode("utf-8")
        arn = self.environ.get(ENV_URL_SIGNING_SECRET_ARN, "").strip()
        if not arn:
            return None
        client = self.secrets_client or _client("secretsmanager")
        try:
            secret = client.get_secret_value(SecretId=arn)["SecretString"]
        except Exception as exc:  # botocore's errors, whatever the cause: the service is unavailable
            raise BackendError("cannot read the URL signing secret") from exc
        return str(secret).encode("utf-8")

    @cached_property
    def upload_service(self) -> UploadService:
        """Presigned PUTs into ``incoming/``: the large-upload path (skypacs/services/uploads.py)."""
        store = self.store
        return UploadService(store.presigned_put_url)

    @cached_property
    def delete_service(self) -> DeleteService:
        """Deletes on AWS: S3 versioning keeps deleted objects recoverable (infra/constructs/storage.py)."""
        return DeleteService(self.catalog, self.store, self.index, self.events)

    @cached_property
    def retrieve_service(self) -> RetrieveService:
        return RetrieveService(self.catalog, self.store)

    @cached_property
    def ingest_service(self) -> IngestService:
        return IngestService(
            self.store,
            self.catalog,
            self.index,
            self.events,
            extra_sop_classes=self.extra_sop_classes,
            read_workers=INGEST_READ_WORKERS,
        )

    @cached_property
    def store_service(self) -> StoreService:
        """The gateway's intake: S3 notifies the indexer, so no notifier; refused transfers are kept
        under ``quarantine/`` with a catalog record (the task role may PutItem on the table)."""
        return StoreService(
            self.store,
            quarantine=Quarantine(self.store, self.catalog),
            extra_sop_classes=self.extra_sop_classes,
        )


    def gateway(self, options: GatewayOptions) -> Gateway:
        """The DIMSE gateway task (``skypacs gateway``): C-STORE into S3 (the indexer Lambda takes it from
        there), C-MOVE/C-GET from the catalog and the bucket, and C-FIND from the OpenSearch index when
        one is configured (without it, PATIENT-level retrieves and C-FIND are not offered)."""
        from skypacs.dimse.retrieve import RetrieveSources
        from skypacs.dimse.server import Gateway

        query_service = self.query_service if self.index is not None else None
        return Gateway(options, self.store_service, query_service=query_service,
                       retrieve_sources=RetrieveSources(self.catalog, self.store, query_service=query_service))


_archive: AwsArchive | None = None
_lock = threading.Lock()


def archive() -> AwsArchive:
    """The archive of this process (Lambda container), built from the environment on first use."""
    global _archive
    with _lock:
        if _archive is None:
            _archive = AwsArchive()
        return _archive


def set_archive(value: AwsArchive | None) -> None:
    """Replace the process's archive (tests); ``None`` rebuilds it from the environment on next use."""
    global _archive
    with _lock:
        _archive = value
