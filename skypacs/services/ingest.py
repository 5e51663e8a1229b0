"""Ingest: turn a stored object into catalog records, index entries and an ``InstanceStored`` event.

This is the one ingest path of both deployments: the embedded indexer calls it for each batch of keys
it claims from its queue, the indexer Lambda for each SQS batch of S3 notifications. It is idempotent (DESIGN.md "Keys"): the same SOP
Instance UID with the same bytes is a no-op; with other bytes it is a new version that replaces the
old record and is recorded as a replacement. An object that cannot be ingested is moved to quarantine
with its reason, never dropped. Backend failures propagate so that the caller's queue retries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal, TypeVar

from skypacs.clock import Clock, isoformat, utc_now
from skypacs.errors import DocumentsRejected, InvalidObject, NotFound
from skypacs.levels import PATIENT_TAGS, SERIES_TAGS, STUDY_TAGS
from skypacs.model import subset
from skypacs.parsing import ParsedInstance, parse_stored_object
from skypacs.ports import (
    INSTANCE_STORED,
    ArchiveEvent,
    Catalog,
    CatalogEntry,
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
_In = TypeVar("_In")
_Out = TypeVar("_Out")


@dataclass(frozen=True)
class IngestResult:
    outcome: Outcome
    key: str
    SOPInstanceUID: str | None = None
    reason: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class IngestRequest:
    """One object to ingest. ``etag``/``size`` come with the notification or queue entry when known."""

    key: str
    etag: str | None = None
    size: int | None = None
    redelivered: bool = False
    """A retry of a request that failed before (an SQS receive count above 1, a queue entry's second
    attempt). If it failed after the catalog write, the event may never have gone out: a redelivered
    request finding its instance unchanged announces it again (at least once, never zero times)."""


@dataclass(frozen=True)
class _Staged:
    """An instance parsed, found new or changed, and waiting to be indexed and catalogued."""

    position: int
    parsed: ParsedInstance
    record: InstanceRecord
    previous: InstanceRecord | None


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
        read_workers: int = 1,
    ) -> None:
        """``read_workers`` > 1 reads and parses a batch's objects and looks up their catalog records
        on that many threads: on S3 and DynamoDB a batch is mostly waiting on round trips. Catalog
        writes stay one at a time (instances of one series write the same series and study records)."""
        self.store, self.catalog, self.index, self.events = store, catalog, index, events
        self.extra_sop_classes = extra_sop_classes
        self.clock = clock
        self.read_workers = read_workers
        self._quarantine = Quarantine(store, catalog, clock=clock)

    def ingest(self, key: str, *, etag: str | None = None, size: int | None = None) -> IngestResult:
        """Ingest the object at ``key``; a backend failure raises, for the caller's retry."""
        (result,) = self.ingest_many([IngestRequest(key, etag, size)])
        if isinstance(result, Exception):
            raise result
        return result

    def ingest_parsed(self, parsed: ParsedInstance, info: ObjectInfo) -> IngestResult:
        """Catalog, index and announce an object already parsed by the writer that stored it."""
        (result,) = self._settle([(0, parsed, info)], redelivered=set()).values()
        if isinstance(result, Exception):
            raise result
        return result

    def ingest_many(self, requests: Sequence[IngestRequest]) -> list[IngestResult | Exception]:
        """Ingest a batch (an SQS batch, a queue claim), one result or exception per request, in order.

        The batch is indexed with one ``index_instances`` call, so the series, study and patient
        documents a burst of one series touches are rebuilt once, not once per instance: on OpenSearch
        that is most of ingest's cost. Each object is indexed *before* its catalog record is written:
        a retry after any failure finds no catalog record saying "already ingested" and indexes again
        (indexing is idempotent), so an instance can never stay catalogued but unsearchable. A failure
        fails only what it touched: the batch's index write fails every instance in it, a catalog
        write only its own. Two requests for one SOP Instance UID are settled one after the other, so
        the second is seen as unchanged or as a replacement, as it would be in two batches. When the
        index refuses some documents for what they hold (:class:`DocumentsRejected`), only those fail.
        The catalog records are written with one ``put_instances`` (on DynamoDB: a few transactions
        holding the series' level items once), so a failed catalog write fails the entries written with
        it, not necessarily the whole batch.
        """
        results: dict[int, IngestResult | Exception] = {}
        rounds: list[list[tuple[int, ParsedInstance, ObjectInfo]]] = []
        for position, prepared in enumerate(self._map(self._prepare, requests)):
            if isinstance(prepared, IngestResult | Exception):  # an exception fails only its own object
                results[position] = prepared
                continue
            parsed, _ = prepared
            round_ = next(
                (r for r in rounds if all(p.SOPInstanceUID != parsed.SOPInstanceUID for _, p, _ in r)), None
            )
            if round_ is None:
                round_ = []
                rounds.append(round_)
            round_.append((position, *prepared))
        redelivered = {position for position, request in enumerate(requests) if request.redelivered}
        for round_ in rounds:
            results.update(self._settle(round_, redelivered=redelivered))
        return [results[position] for position in range(len(requests))]

    def _map(self, function: Callable[[_In], _Out], items: Sequence[_In]) -> list[_Out | Exception]:
        """``function`` over ``items`` in order, on ``read_workers`` threads; exceptions returned, not raised."""

        def attempt(item: _In) -> _Out | Exception:
            try:
                return function(item)
            except Exception as exc:  # noqa: BLE001 - one object's failure is its result, not the batch's
                return exc

        if self.read_workers <= 1 or len(items) <= 1:
            return [attempt(item) for item in items]
        with ThreadPoolExecutor(min(self.read_workers, len(items)), thread_name_prefix="ingest-read") as pool:
            return list(pool.map(attempt, items))

    def _prepare(self, request: IngestRequest) -> IngestResult | tuple[ParsedInstance, ObjectInfo]:
        """Parse the object and file it under its canonical key; a result when there is nothing more."""
        key = request.key
        try:
            if request.etag and request.size is not None:
                info = ObjectInfo(key, request.size, request.etag)
            else:
                info = self.store.head(key)
            parsed = parse_stored_object(self.store, key, info.size, extra_sop_classes=self.extra_sop_classes)
        except NotFound:
            logger.info("object %s is gone before ingest; nothing to do", key)
            return IngestResult("missing", key)
        except InvalidObject as exc:
            return self.quarantine(key, exc.reason, str(exc))
        if key != parsed.key:
            # Dropped somewhere else (an upload prefix, a hand copy): file it under its canonical key.
            info = self.store.move(key, parsed.key)
        return parsed, info

    def _settle(
        self, batch: list[tuple[int, ParsedInstance, ObjectInfo]], *, redelivered: set[int]
    ) -> dict[int, IngestResult | Exception]:
        """Index, catalog and announce instances of distinct SOP Instance UIDs (see ``ingest_many``)."""
        results: dict[int, IngestResult | Exception] = {}
        announcements: list[tuple[int, ArchiveEvent]] = []
        staged: list[_Staged] = []
        lookups = self._map(self.catalog.get_instance, [parsed.SOPInstanceUID for _, parsed, _ in batch])
        for (position, parsed, info), previous in zip(batch, lookups, strict=True):
            if isinstance(previous, Exception):
                results[position] = previous
                continue
            if previous is not None and previous.etag == info.etag and previous.key == info.key:
                results[position] = IngestResult("unchanged", info.key, parsed.SOPInstanceUID)
                if position in redelivered:
                    announcements.append((position, self._event(parsed, previous, "stored", redelivered=True)))
                continue
            staged.append(_Staged(position, parsed, self._record(parsed, info), previous))
        if self.index is not None and staged:
            try:
                self.index.index_instances([item.record for item in staged])
            except DocumentsRejected as exc:  # the others were indexed: only these fail
                refused = exc.rejected
                for item in staged:
                    uid = item.parsed.SOPInstanceUID
                    if uid in refused:
                        results[item.position] = DocumentsRejected(
                            f"the query index refused SOP Instance {uid}: {refused[uid]}", {uid: refused[uid]}
                        )
                staged = [item for item in staged if item.parsed.SOPInstanceUID not in refused]
            except Exception as exc:  # noqa: BLE001 - the batch's new instances fail; the caller retries them
                results |= {item.position: exc for item in staged}
                staged = []
        entries = [
            CatalogEntry(
                item.record,
                series=subset(item.parsed.metadata, SERIES_TAGS),
                study=subset(item.parsed.metadata, STUDY_TAGS),
                patient=subset(item.parsed.metadata, PATIENT_TAGS),
            )
            for item in staged
        ]
        try:
            failures = self.catalog.put_instances(entries) if entries else {}
        except Exception as exc:  # noqa: BLE001 - the batch's instances fail; the caller retries them
            failures = dict.fromkeys(range(len(entries)), exc)
        for n, item in enumerate(staged):
            if n in failures:
                results[item.position] = failures[n]
                continue
            try:
                result = self._catalogued(item)
            except Exception as exc:  # noqa: BLE001 - fails this instance only; the caller retries it
                results[item.position] = exc
                continue
            results[item.position] = result
            announcements.append((item.position, self._event(item.parsed, item.record, result.outcome)))
        self._announce(announcements, results)
        return results

    def _announce(
        self, announcements: list[tuple[int, ArchiveEvent]], results: dict[int, IngestResult | Exception]
    ) -> None:
        """Publish the batch's events together (PutEvents takes 10 a call); an event that does not go out
        fails its instance, whose redelivery announces it again."""
        if self.events is None or not announcements:
            return
        try:
            failures = self.events.publish_many([event for _, event in announcements])
        except Exception as exc:  # noqa: BLE001 - every event of the batch failed; each instance is retried
            failures = dict.fromkeys(range(len(announcements)), exc)
        for n, error in failures.items():
            results[announcements[n][0]] = error

    def _record(self, parsed: ParsedInstance, info: ObjectInfo) -> InstanceRecord:
        return InstanceRecord(
            StudyInstanceUID=parsed.StudyInstanceUID,
            SeriesInstanceUID=parsed.SeriesInstanceUID,
            SOPInstanceUID=parsed.SOPInstanceUID,
            SOPClassUID=parsed.SOPClassUID,
            TransferSyntaxUID=parsed.TransferSyntaxUID,
            PatientID=parsed.PatientID,
            key=info.key,
            size=info.size,
            etag=info.etag,
            stored_at=isoformat(self.clock()),
            metadata=parsed.metadata,
        )

    def _catalogued(self, item: _Staged) -> IngestResult:
        """After the catalog write (the "ingested" mark): record a replacement, keep a superseded object."""
        parsed, record, previous = item.parsed, item.record, item.previous
        outcome: Outcome = "stored"
        if previous is not None:
            outcome = "replaced"
            self.catalog.add_replacement(
                ReplacementRecord(
                    SOPInstanceUID=parsed.SOPInstanceUID,
                    previous_key=previous.key,
                    previous_etag=previous.etag,
                    key=record.key,
                    etag=record.etag,
                    replaced_at=record.stored_at,
                )
            )
            if previous.key != record.key:
                # Same SOP Instance UID filed under another study or series: keep the old object
                # (it may be a different image with a colliding UID) where the consistency report finds it.
                self.quarantine(previous.key, "superseded", f"SOPInstanceUID re-stored under {record.key}")
            logger.warning("instance %s replaced by a new version at %s", parsed.SOPInstanceUID, record.key)
        return IngestResult(outcome, record.key, parsed.SOPInstanceUID)

    @staticmethod
    def _event(
        parsed: ParsedInstance, record: InstanceRecord, outcome: Outcome, *, redelivered: bool = False
    ) -> ArchiveEvent:
        """``InstanceStored``. Plugins must be idempotent: EventBridge delivers at least once, and a
        redelivered ingest announces again (``"redelivered": true``)."""
        detail: dict[str, object] = {
            "StudyInstanceUID": parsed.StudyInstanceUID,
            "SeriesInstanceUID": parsed.SeriesInstanceUID,
            "SOPInstanceUID": parsed.SOPInstanceUID,
            "SOPClassUID": parsed.SOPClassUID,
            "key": record.key,
            "size": record.size,
            "outcome": outcome,
        }
        if redelivered:
            detail["redelivered"] = True
        return ArchiveEvent(INSTANCE_STORED, detail)

    def quarantine(self, key: str, reason: str, message: str) -> IngestResult:
        record = self._quarantine.move(key, reason, message)
        if record is None:
            return IngestResult("missing", key)
        return IngestResult("quarantined", record.quarantine_key, reason=reason, message=message)
