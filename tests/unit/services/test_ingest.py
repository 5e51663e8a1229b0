"""The ingest service on the embedded adapters (real filesystem and SQLite, no mocks)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from skypacs.adapters.sqlite_index import SqliteQueryIndex
from skypacs.embedded import EmbeddedArchive
from skypacs.errors import BackendError, DocumentsRejected
from skypacs.parsing import parse_bytes
from skypacs.ports import INSTANCE_STORED, ArchiveEvent, InstanceRecord
from skypacs.query.model import Level, query_from_qido
from skypacs.services.ingest import IngestRequest, IngestResult, IngestService
from tests.conftest import dicom_file
from tests.dicom_files import clone, new_uid


@pytest.fixture
def events(archive: EmbeddedArchive) -> list[ArchiveEvent]:
    received: list[ArchiveEvent] = []
    archive.events.subscribe(received.append)
    return received


def put(archive: EmbeddedArchive, data: bytes, key: str | None = None) -> str:
    key = key or parse_bytes(data).key
    archive.store.put(key, data)
    return key


def test_stored_instance_is_cataloged_indexed_and_announced(archive: EmbeddedArchive, events: list[ArchiveEvent]) -> None:
    data = dicom_file("CT_small.dcm").read_bytes()
    key = put(archive, data)
    result = archive.ingest_service.ingest(key)
    assert result.outcome == "stored"
    parsed = parse_bytes(data)
    record = archive.catalog.get_instance(parsed.SOPInstanceUID)
    assert record is not None and record.key == key and record.size == len(data)
    assert record.PatientID == "1CT1"
    study = archive.catalog.get_study(parsed.StudyInstanceUID)
    assert study is not None and study["00100010"]["Value"][0]["Alphabetic"] == "CompressedSamples^CT1"
    assert "00280010" not in study  # Rows is not a study attribute
    series = archive.catalog.get_series(parsed.StudyInstanceUID, parsed.SeriesInstanceUID)
    assert series is not None and series["00080060"]["Value"] == ["CT"]
    assert archive.catalog.get_patient("1CT1") is not None
    assert archive.index.get_document(parsed.SOPInstanceUID) == record.metadata
    (event,) = events
    assert event.type == INSTANCE_STORED and event.detail["outcome"] == "stored"
    assert event.detail["SOPInstanceUID"] == parsed.SOPInstanceUID
    assert "PatientName" not in str(event.detail) and "CompressedSamples" not in str(event.detail)


def test_same_bytes_again_is_a_no_op(archive: EmbeddedArchive, events: list[ArchiveEvent]) -> None:
    key = put(archive, dicom_file("CT_small.dcm").read_bytes())
    archive.ingest_service.ingest(key)
    assert archive.ingest_service.ingest(key).outcome == "unchanged"
    assert len(events) == 1 and archive.catalog.list_replacements() == []


def test_new_bytes_replace_and_are_recorded(archive: EmbeddedArchive, events: list[ArchiveEvent]) -> None:
    key = put(archive, dicom_file("CT_small.dcm").read_bytes())
    archive.ingest_service.ingest(key)
    put(archive, clone("CT_small.dcm", StudyDescription="AMENDED"))
    result = archive.ingest_service.ingest(key)
    assert result.outcome == "replaced"
    (replacement,) = archive.catalog.list_replacements()
    assert replacement.previous_key == replacement.key == key
    assert replacement.previous_etag != replacement.etag
    assert events[-1].detail["outcome"] == "replaced"


def test_same_instance_under_another_study_supersedes_and_keeps_the_old_object(archive: EmbeddedArchive) -> None:
    original = dicom_file("CT_small.dcm").read_bytes()
    old_key = put(archive, original)
    archive.ingest_service.ingest(old_key)
    new_key = put(archive, clone("CT_small.dcm", StudyInstanceUID=new_uid()))
    assert archive.ingest_service.ingest(new_key).outcome == "replaced"
    record = archive.catalog.get_instance(parse_bytes(original).SOPInstanceUID)
    assert record is not None and record.key == new_key
    (kept,) = archive.catalog.list_quarantine()
    assert kept.reason == "superseded" and kept.original_key == old_key
    with archive.store.open(kept.quarantine_key) as f:
        assert f.read() == original


def test_object_outside_its_canonical_key_is_filed_there(archive: EmbeddedArchive) -> None:
    data = dicom_file("MR_small.dcm").read_bytes()
    put(archive, data, key="incoming/upload-1.dcm")
    result = archive.ingest_service.ingest("incoming/upload-1.dcm")
    assert result.outcome == "stored" and result.key == parse_bytes(data).key
    assert list(archive.store.list("incoming/")) == []
    assert archive.store.head(result.key).size == len(data)


def test_unparseable_object_goes_to_quarantine_with_its_reason(archive: EmbeddedArchive) -> None:
    put(archive, b"not dicom at all", key="incoming/junk.dcm")
    result = archive.ingest_service.ingest("incoming/junk.dcm")
    assert result.outcome == "quarantined" and result.reason == "cannot-decode"
    (record,) = archive.catalog.list_quarantine()
    assert record.original_key == "incoming/junk.dcm" and record.size == 16
    with archive.store.open(record.quarantine_key) as f:
        assert f.read() == b"not dicom at all"
    assert archive.catalog.count_instances() == 0


def test_missing_object_is_reported_not_raised(archive: EmbeddedArchive) -> None:
    assert archive.ingest_service.ingest("studies/1/series/2/instances/3.dcm").outcome == "missing"


def test_backend_failure_propagates_for_retry(archive: EmbeddedArchive) -> None:
    class FailingCatalog(type(archive.catalog)):  # type: ignore[misc]
        def put_instances(self, entries):  # type: ignore[no-untyped-def]
            return dict.fromkeys(range(len(entries)), BackendError("disk full"))

    catalog = FailingCatalog(archive.data_dir / "other.sqlite")
    service = IngestService(archive.store, catalog, None, None)
    key = put(archive, dicom_file("CT_small.dcm").read_bytes())
    with pytest.raises(BackendError):
        service.ingest(key)
    assert archive.store.head(key).size > 0  # the object is untouched, ready for the retry


def test_stored_at_comes_from_the_injected_clock(archive: EmbeddedArchive) -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    service = IngestService(archive.store, archive.catalog, None, None, clock=lambda: moment)
    key = put(archive, dicom_file("CT_small.dcm").read_bytes())
    service.ingest(key)
    record = archive.catalog.get_instance(parse_bytes(dicom_file("CT_small.dcm").read_bytes()).SOPInstanceUID)
    assert record is not None and record.stored_at == "2026-01-02T03:04:05.678901Z"


# ------------------------------------------------------------------------------------------ batches


class CountingIndex(SqliteQueryIndex):
    """The real SQLite index, counting its batch writes and failing them while ``failing`` is set."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.batches: list[int] = []
        self.failing = False

    def index_instances(self, records: Sequence[InstanceRecord]) -> None:
        if self.failing:
            raise BackendError("index unavailable")
        self.batches.append(len(records))
        super().index_instances(records)


def test_a_batch_is_indexed_in_one_write_with_one_result_per_object_in_order(
    archive: EmbeddedArchive, events: list[ArchiveEvent]
) -> None:
    index = CountingIndex(archive.data_dir / "counted.sqlite")
    service = IngestService(archive.store, archive.catalog, index, archive.events)
    series = [clone("CT_small.dcm", SOPInstanceUID=new_uid()) for _ in range(5)]
    keys = [put(archive, data) for data in series]
    archive.store.put("incoming/junk.dcm", b"not dicom at all")
    requests = [IngestRequest(key) for key in keys[:3]]
    requests += [IngestRequest("incoming/junk.dcm"), IngestRequest("studies/1/series/2/instances/3.dcm")]
    requests += [IngestRequest(key) for key in keys[3:]]
    results = service.ingest_many(requests)
    outcomes = [r.outcome for r in results if isinstance(r, IngestResult)]
    assert outcomes == ["stored"] * 3 + ["quarantined", "missing"] + ["stored"] * 2
    assert index.batches == [5]  # the series' documents rebuilt once, not five times
    (series_answer,) = index.search(query_from_qido(Level.SERIES, [])).items
    assert series_answer["00201209"]["Value"] == [5]  # NumberOfSeriesRelatedInstances
    assert archive.catalog.count_instances() == 5 and len(events) == 5


def test_the_same_instance_twice_in_a_batch_is_settled_in_order(
    archive: EmbeddedArchive, events: list[ArchiveEvent]
) -> None:
    key = put(archive, dicom_file("CT_small.dcm").read_bytes())
    first = archive.ingest_service.ingest_many([IngestRequest(key), IngestRequest(key)])
    assert [r.outcome for r in first if isinstance(r, IngestResult)] == ["stored", "unchanged"]
    upload = clone("CT_small.dcm", StudyDescription="AMENDED")
    archive.store.put("incoming/amended.dcm", upload)
    second = archive.ingest_service.ingest_many([IngestRequest(key), IngestRequest("incoming/amended.dcm")])
    assert [r.outcome for r in second if isinstance(r, IngestResult)] == ["unchanged", "replaced"]
    assert len(archive.catalog.list_replacements()) == 1 and len(events) == 2


def test_an_index_failure_fails_the_batch_and_the_retry_makes_it_searchable(archive: EmbeddedArchive) -> None:
    """Indexing comes before the catalog record, so a retry never mistakes a half-done ingest for done."""
    index = CountingIndex(archive.data_dir / "flaky.sqlite")
    service = IngestService(archive.store, archive.catalog, index, archive.events)
    keys = [put(archive, clone("CT_small.dcm", SOPInstanceUID=new_uid())) for _ in range(3)]
    index.failing = True
    results = service.ingest_many([IngestRequest(key) for key in keys])
    assert all(isinstance(r, BackendError) for r in results)
    assert archive.catalog.count_instances() == 0
    index.failing = False
    assert [r.outcome for r in service.ingest_many([IngestRequest(k) for k in keys])] == ["stored"] * 3  # type: ignore[union-attr]
    assert len(index.search(query_from_qido(Level.IMAGE, [])).items) == 3


def test_a_catalog_failure_fails_only_its_own_object(archive: EmbeddedArchive) -> None:
    refused = clone("CT_small.dcm", SOPInstanceUID=new_uid())
    refused_uid = parse_bytes(refused).SOPInstanceUID

    class PickyCatalog(type(archive.catalog)):  # type: ignore[misc]
        """Refuses one instance's record and writes the others (as DynamoDB does when only the
        transaction holding that instance fails)."""

        def put_instances(self, entries):  # type: ignore[no-untyped-def]
            kept = [n for n, entry in enumerate(entries) if entry.record.SOPInstanceUID != refused_uid]
            failures = super().put_instances([entries[n] for n in kept])
            refused = {n: BackendError("throttled") for n in range(len(entries)) if n not in kept}
            return refused | {kept[n]: exc for n, exc in failures.items()}

    catalog = PickyCatalog(archive.data_dir / "picky.sqlite")
    service = IngestService(archive.store, catalog, archive.index, archive.events)
    keys = [put(archive, dicom_file("CT_small.dcm").read_bytes()), put(archive, refused)]
    stored, failed = service.ingest_many([IngestRequest(key) for key in keys])
    assert isinstance(stored, IngestResult) and stored.outcome == "stored"
    assert isinstance(failed, BackendError)
    assert catalog.count_instances() == 1


def test_a_document_the_index_refuses_fails_alone(archive: EmbeddedArchive) -> None:
    """The index took the rest of the batch: they are catalogued; the refused one is retried later."""
    keys = [put(archive, clone("CT_small.dcm", SOPInstanceUID=new_uid())) for _ in range(3)]
    refused_uid = parse_bytes(archive.store.open(keys[1]).read()).SOPInstanceUID

    class Refusing(SqliteQueryIndex):
        def index_instances(self, records: Sequence[InstanceRecord]) -> None:
            super().index_instances([r for r in records if r.SOPInstanceUID != refused_uid])
            if any(r.SOPInstanceUID == refused_uid for r in records):
                raise DocumentsRejected("refused 1 of 3", {refused_uid: "illegal_argument_exception"})

    service = IngestService(archive.store, archive.catalog, Refusing(archive.data_dir / "r.sqlite"), archive.events)
    first, refused, third = service.ingest_many([IngestRequest(key) for key in keys])
    assert isinstance(first, IngestResult) and isinstance(third, IngestResult)
    assert isinstance(refused, DocumentsRejected) and refused.rejected == {refused_uid: "illegal_argument_exception"}
    assert archive.catalog.count_instances() == 2 and archive.catalog.get_instance(refused_uid) is None


def test_an_event_lost_after_the_catalog_write_is_announced_by_the_redelivery(archive: EmbeddedArchive) -> None:
    """The catalog says "ingested" before the event goes out: a retry must not stop at "unchanged"."""
    received: list[ArchiveEvent] = []

    class FlakyBus(type(archive.events)):  # type: ignore[misc]
        failing = True

        def publish(self, event: ArchiveEvent) -> None:
            if self.failing:
                raise BackendError("event bus throttled")
            received.append(event)

    bus = FlakyBus()
    service = IngestService(archive.store, archive.catalog, archive.index, bus)
    key = put(archive, dicom_file("CT_small.dcm").read_bytes())
    (failed,) = service.ingest_many([IngestRequest(key)])
    assert isinstance(failed, BackendError) and archive.catalog.count_instances() == 1
    bus.failing = False
    assert [r.outcome for r in service.ingest_many([IngestRequest(key)])] == ["unchanged"]  # type: ignore[union-attr]
    assert received == []  # a new delivery of the same bytes is a no-op, as before
    assert [r.outcome for r in service.ingest_many([IngestRequest(key, redelivered=True)])] == ["unchanged"]  # type: ignore[union-attr]
    (event,) = received
    assert event.type == INSTANCE_STORED and event.detail["redelivered"] is True
    assert event.detail["SOPInstanceUID"] == parse_bytes(dicom_file("CT_small.dcm").read_bytes()).SOPInstanceUID
