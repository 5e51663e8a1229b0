"""The retrieve service on a real embedded archive: streams what was stored, notices damage, resolves
bulk data paths, and gives metadata with absolute BulkDataURIs."""

from __future__ import annotations

import logging
from dataclasses import replace

import pydicom
import pytest

from skypacs.embedded import EmbeddedArchive
from skypacs.errors import DamagedObject, InvalidQuery, NotFound
from skypacs.ports import InstanceRecord
from skypacs.services.retrieve import RetrieveService, instance_metadata, parse_tag_path
from tests.conftest import dicom_file


def _store(archive: EmbeddedArchive, name: str) -> InstanceRecord:
    data = dicom_file(name).read_bytes()
    receipt = archive.store_service.store_part10(data)
    archive.indexer().drain_once()
    record = archive.catalog.get_instance(receipt.identity.SOPInstanceUID)
    assert record is not None
    return record


@pytest.fixture
def service(archive: EmbeddedArchive) -> RetrieveService:
    return archive.retrieve_service


def test_stream_gives_the_stored_bytes(archive: EmbeddedArchive, service: RetrieveService) -> None:
    record = _store(archive, "CT_small.dcm")
    assert b"".join(service.stream(record, chunk_size=1000)) == dicom_file("CT_small.dcm").read_bytes()


def test_instances_and_instance_are_404_for_unknown_or_mismatched_uids(
    archive: EmbeddedArchive, service: RetrieveService
) -> None:
    record = _store(archive, "CT_small.dcm")
    assert [r.SOPInstanceUID for r in service.instances(record.StudyInstanceUID)] == [record.SOPInstanceUID]
    with pytest.raises(NotFound):
        service.instances("1.2.3")
    with pytest.raises(NotFound):
        service.instances(record.StudyInstanceUID, "1.2.3")
    with pytest.raises(NotFound):  # the instance exists, but not in that series
        service.instance(record.StudyInstanceUID, "1.2.3", record.SOPInstanceUID)


@pytest.mark.parametrize("damage", ["shorter", "longer", "missing"])
def test_damage_is_detected_and_logged_with_the_instance(
    archive: EmbeddedArchive, service: RetrieveService, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    record = _store(archive, "CT_small.dcm")
    path = archive.store.local_path(record.key)
    if damage == "missing":
        path.unlink()
    else:
        data = path.read_bytes()
        path.write_bytes(data[:-100] if damage == "shorter" else data + b"\0" * 100)
    with caplog.at_level(logging.ERROR), pytest.raises(DamagedObject):
        b"".join(service.stream(record))
    assert record.SOPInstanceUID in caplog.text and record.key in caplog.text


def test_metadata_has_absolute_bulk_data_uris_and_the_stored_syntax() -> None:
    record = InstanceRecord(
        "1.1", "1.2", "1.3", "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.4.50", "P", "k", 1, "e", "t",
        metadata={
            "00280010": {"vr": "US", "Value": [2]},
            "00091010": {"vr": "OB", "BulkDataURI": "bulkdata/00091010"},
            "00081111": {"vr": "SQ", "Value": [{"00091011": {"vr": "OB", "BulkDataURI": "bulkdata/00081111/1/00091011"}}]},
        },
    )
    metadata = instance_metadata(record, "http://h/dicom-web")
    base = "http://h/dicom-web/studies/1.1/series/1.2/instances/1.3/bulkdata/"
    assert metadata["00091010"]["BulkDataURI"] == base + "00091010"
    assert metadata["00081111"]["Value"][0]["00091011"]["BulkDataURI"] == base + "00081111.1.00091011"
    assert metadata["7FE00010"] == {"vr": "OB", "BulkDataURI": base + "7FE00010"}
    assert metadata["00083002"]["Value"] == ["1.2.840.10008.1.2.4.50"]
    assert list(metadata) == sorted(metadata)
    assert record.metadata["00091010"]["BulkDataURI"] == "bulkdata/00091010"  # the record is untouched
    no_pixels = instance_metadata(replace(record, metadata={}), "http://h")
    assert "7FE00010" not in no_pixels


def test_tag_paths() -> None:
    assert parse_tag_path("7FE00010") == [0x7FE00010]
    assert parse_tag_path("54000100.1.54001010") == [0x54000100, 1, 0x54001010]
    assert parse_tag_path("54000100/1/54001010") == [0x54000100, 1, 0x54001010]
    for bad in ("", "5400", "54000100.1", "54000100.0.54001010", "zzzzzzzz", "54000100.x.54001010"):
        with pytest.raises(InvalidQuery):
            parse_tag_path(bad)


def test_bulk_value_of_a_nested_attribute(archive: EmbeddedArchive, service: RetrieveService) -> None:
    record = _store(archive, "waveform_ecg.dcm")
    value = service.bulk_value(record, "54000100.1.54001010")
    assert value == pydicom.dcmread(dicom_file("waveform_ecg.dcm")).WaveformSequence[0].WaveformData
    with pytest.raises(NotFound):
        service.bulk_value(record, "54000100.9.54001010")
    with pytest.raises(InvalidQuery, match="frames"):
        service.bulk_value(record, "7FE00010")
