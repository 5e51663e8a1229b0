"""The ingest service on the embedded adapters (real filesystem and SQLite, no mocks)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from skypacs.embedded import EmbeddedArchive
from skypacs.errors import BackendError
from skypacs.parsing import parse_bytes
from skypacs.ports import INSTANCE_STORED, ArchiveEvent
from skypacs.services.ingest import IngestService
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
        def put_instance(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise BackendError("disk full")

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
