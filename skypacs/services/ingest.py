"""Ingest: turn a stored object into catalog records, index entries and an ``InstanceStored`` event.

This is the one ingest path of both deployments: the embedded indexer calls it for each key from its
queue, the indexer Lambda for each S3 notification. It is idempotent (DESIGN.md "Keys"): the same SOP
Instance UID with the same bytes is a no-op; with other bytes it is a new version that replaces the
old record and is recorded as a replacement. An object that cannot be ingested is moved to quarantine
with its reason, never dropped. Backend failures propagate so that the caller's queue retries.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from skypacs.clock import Clock, isoformat, utc_now
from skypacs.errors import InvalidObject, NotFound
from skypacs.levels import PATIENT_TAGS, SERIES_TAGS, STUDY_TAGS
from skypacs.model import subset
from skypacs.parsing import ParsedInstance, parse_stored_object
from skypacs.ports import (
    INSTANCE_STORED,
    ArchiveEvent,
    Catalog,
    EventBus,
    InstanceRecord,
    ObjectInfo,
    ObjectStore,
    QueryIndex,
    ReplacementRecord,
)
from skypacs.services.quarantine import Quarantine

logger = logging.getLogger(__name__)

Outcome = Literal["stored", "unchanged", "replaced", "quarantined", "missing"]


@dataclass(frozen=True)
class IngestResult:
    outcome: Outcome
    key: str
    SOPInstanceUID: str | None = None
    reason: str | None = None
    message: str | None = None


class IngestService:
    def __init__(
        self,
        store: ObjectStore,
        catalog: Catalog,
        index: QueryIndex | None,
        events: EventBus | None,
        *,
        extra_sop_classes: frozenset[str] = frozenset(),
        clock: Clock = utc_now,
    ) -> None:
        self.store, self.catalog, self.index, self.events = store, catalog, index, events
        self.extra_sop_classes = extra_sop_classes
        self.clock = clock
        self._quarantine = Quarantine(store, catalog, clock=clock)

    def ingest(self, key: str, *, etag: str | None = None, size: int | None = None) -> IngestResult:
        """Ingest the object at ``key``. ``etag``/``size`` come with the notification when known."""
        try:
            info = ObjectInfo(key, size, etag) if etag and size is not None else self.store.head(key)
            parsed = parse_stored_object(self.store, key, info.size, extra_sop_classes=self.extra_sop_classes)
        except NotFound:
            logger.info("object %s is gone before ingest; nothing to do", key)
            return IngestResult("missing", key)
        except InvalidObject as exc:
            return self.quarantine(key, exc.reason, str(exc))
        if key != parsed.key:
            # Dropped somewhere else (an upload prefix, a hand copy): file it under its canonical key.
            info = self.store.move(key, parsed.key)
        return self.ingest_parsed(parsed, info)

    def ingest_parsed(self, parsed: ParsedInstance, info: ObjectInfo) -> IngestResult:
        """Catalog, index and announce an object already parsed by the writer that stored it."""
        previous = self.catalog.get_instance(parsed.SOPInstanceUID)
        if previous is not None and previous.etag == info.etag and previous.key == info.key:
            return IngestResult("unchanged", info.key, parsed.SOPInstanceUID)
        now = isoformat(self.clock())
        record = InstanceRecord(
            StudyInstanceUID=parsed.StudyInstanceUID,
            SeriesInstanceUID=parsed.SeriesInstanceUID,
            SOPInstanceUID=parsed.SOPInstanceUID,
            SOPClassUID=parsed.SOPClassUID,
            TransferSyntaxUID=parsed.TransferSyntaxUID,
            PatientID=parsed.PatientID,
            key=info.key,
            size=info.size,
            etag=info.etag,
            stored_at=now,
            metadata=parsed.metadata,
        )
        self.catalog.put_instance(
            record,
            series=subset(parsed.metadata, SERIES_TAGS),
            study=subset(parsed.metadata, STUDY_TAGS),
            patient=subset(parsed.metadata, PATIENT_TAGS),
        )
        if self.index is not None:
            self.index.index_instance(record)
        outcome: Outcome = "stored"
        if previous is not None:
            outcome = "replaced"
            self.catalog.add_replacement(
                ReplacementRecord(
                    SOPInstanceUID=parsed.SOPInstanceUID,
                    previous_key=previous.key,
                    previous_etag=previous.etag,
                    key=info.key,
                    etag=info.etag,
                    replaced_at=now,
                )
            )
            if previous.key != info.key:
                # Same SOP Instance UID filed under another study or series: keep the old object
                # (it may be a different image with a colliding UID) where the consistency report finds it.
                self.quarantine(previous.key, "superseded", f"SOPInstanceUID re-stored under {info.key}")
            logger.warning("instance %s replaced by a new version at %s", parsed.SOPInstanceUID, info.key)
        if self.events is not None:
            self.events.publish(
                ArchiveEvent(
                    INSTANCE_STORED,
                    {
                        "StudyInstanceUID": parsed.StudyInstanceUID,
                        "SeriesInstanceUID": parsed.SeriesInstanceUID,
                        "SOPInstanceUID": parsed.SOPInstanceUID,
                        "SOPClassUID": parsed.SOPClassUID,
                        "key": info.key,
                        "size": info.size,
                        "outcome": outcome,
                    },
                )
            )
        return IngestResult(outcome, info.key, parsed.SOPInstanceUID)

    def quarantine(self, key: str, reason: str, message: str) -> IngestResult:
        record = self._quarantine.move(key, reason, message)
        if record is None:
            return IngestResult("missing", key)
        return IngestResult("quarantined", record.quarantine_key, reason=reason, message=message)
