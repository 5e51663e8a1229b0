"""The indexer Lambda: S3 "object created" notifications, delivered through SQS, into ingest.

S3 -> SQS -> this function, with ``ReportBatchItemFailures`` on the event source mapping and a
dead-letter queue behind the SQS queue (DESIGN.md "Limits that shape the AWS design"): a record whose
ingest fails is reported in ``batchItemFailures`` and comes back after the visibility timeout; the others
are deleted from the queue. Ingest is idempotent, so a redelivered record is a no-op. The whole batch
goes through one ``IngestService.ingest_many``: its instances are indexed in one OpenSearch ``_bulk``
and the series, study and patient documents they touch are rebuilt once per batch, not per instance.

A message body is one of:

- an S3 event notification, ``{"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
  "s3": {"bucket": {"name": ...}, "object": {"key": ..., "size": ..., "eTag": ...}}}]}``; S3 URL-encodes
  the key there (form encoding: a space is ``+``);
- the ``s3:TestEvent`` S3 sends when the notification is configured: acknowledged, nothing to do;
- an EventBridge ``Object Created`` event from ``aws.s3`` (when the bucket notifies EventBridge and a rule
  targets the queue); its key is taken as it is.

Only keys under ``studies/`` and ``incoming/`` are ingested. Everything else is acknowledged and skipped,
above all ``quarantine/``: moving a refused object there creates an object too, which must not come
back to ingest. Outcome ``quarantined`` is a success: the object is kept, with its reason.

Logs are Powertools JSON lines carrying each record's SQS message id, and name keys, outcomes and
reasons only, never metadata.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from skypacs import aws
from skypacs.keys import INCOMING_PREFIX, STUDIES_PREFIX
from skypacs.services.ingest import IngestRequest

INGESTED_PREFIXES = (STUDIES_PREFIX, INCOMING_PREFIX)

logger = Logger(service="skypacs-indexer")
_logging_configured = False


@dataclass(frozen=True)
class CreatedObject:
    bucket: str
    key: str
    size: int | None
    etag: str | None


class UnrecognisedMessage(ValueError):
    """A message this function does not understand: it fails, so it ends in the dead-letter queue."""


def created_objects(body: Mapping[str, Any]) -> list[CreatedObject]:
    """The objects an SQS message body announces as created (none for a test event or other events)."""
    if body.get("Event") == "s3:TestEvent":
        return []
    if isinstance(body.get("Records"), list):
        created = []
        for record in body["Records"]:
            if record.get("eventSource") != "aws:s3":
                raise UnrecognisedMessage(f"record from {record.get('eventSource')!r}, expected aws:s3")
            if not str(record.get("eventName", "")).startswith("ObjectCreated:"):
                continue
            s3 = record["s3"]
            obj = s3["object"]
            created.append(
                CreatedObject(
                    s3["bucket"]["name"], unquote_plus(obj["key"]), obj.get("size"), obj.get("eTag")
                )
            )
        return created
    if body.get("source") == "aws.s3" and isinstance(body.get("detail"), Mapping):
        if body.get("detail-type") != "Object Created":
            return []
        detail = body["detail"]
        obj = detail["object"]
        return [CreatedObject(detail["bucket"]["name"], obj["key"], obj.get("size"), obj.get("etag"))]
    raise UnrecognisedMessage("neither an S3 notification nor an EventBridge S3 event")


def _requests(record: Mapping[str, Any], bucket: str) -> list[IngestRequest]:
    """What one SQS message asks to ingest; raises for a message that must go to the dead-letter queue."""
    requests = []
    receives = str((record.get("attributes") or {}).get("ApproximateReceiveCount", "1"))
    redelivered = receives.isdigit() and int(receives) > 1
    for obj in created_objects(json.loads(record["body"])):
        if obj.bucket != bucket:
            raise UnrecognisedMessage(f"notification for bucket {obj.bucket}, this archive uses {bucket}")
        if not obj.key.startswith(INGESTED_PREFIXES):
            logger.info("skipped", extra={"key": obj.key, "outcome": "skipped", "message_id": record["messageId"]})
            continue
        # The notification's eTag is S3's, not the content MD5 under SSE-KMS (see skypacs.adapters.s3):
        # let ingest HEAD the object for the fingerprint it compares.
        requests.append(IngestRequest(obj.key, redelivered=redelivered))
    return requests


def ingest_batch(event: Mapping[str, Any]) -> PartialItemFailureResponse:
    """Ingest every object the batch's messages announce in one ``ingest_many`` call (one index write
    for the batch); a message fails when any of its objects failed."""
    archive = aws.archive()
    failed: dict[str, None] = {}
    requests: list[IngestRequest] = []
    owners: list[str] = []
    for record in event["Records"]:
        message_id = record["messageId"]
        try:
            found = _requests(record, archive.store.bucket)
        except Exception as exc:
            logger.exception("unrecognised message", extra={"message_id": message_id, "error": type(exc).__name__})
            failed[message_id] = None
            continue
        requests += found
        owners += [message_id] * len(found)
    results = archive.ingest_service.ingest_many(requests) if requests else []
    for request, message_id, result in zip(requests, owners, results, strict=True):
        if isinstance(result, Exception):
            logger.error(
                "ingest failed",
                extra={"key": request.key, "message_id": message_id, "error": type(result).__name__},
                exc_info=result,
            )
            failed[message_id] = None
            continue
        logger.info(
            "ingested",
            extra={
                "key": request.key,
                "message_id": message_id,
                "outcome": result.outcome,
                "reason": result.reason,
                "stored_key": result.key,
            },
        )
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}


def _configure_logging() -> None:
    """Send the core's ``logging`` records through the Powertools JSON handler (once per container)."""
    global _logging_configured
    if not _logging_configured:
        copy_config_to_registered_loggers(source_logger=logger, include={"skypacs"})
        _logging_configured = True


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    _configure_logging()
    return ingest_batch(event)
