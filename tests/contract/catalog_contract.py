"""The Catalog contract: every adapter passes this suite, supplying only the ``catalog`` fixture."""

from __future__ import annotations

import random
from dataclasses import replace

from skypacs.keys import instance_key
from skypacs.ports import Catalog, CatalogEntry, InstanceRecord, QuarantineRecord, ReplacementRecord

STUDY, SERIES = "1.2.826.0.1.1", "1.2.826.0.1.1.1"


def record(sop: str, *, study: str = STUDY, series: str = SERIES, etag: str = "e1", patient: str = "P1") -> InstanceRecord:
    return InstanceRecord(
        StudyInstanceUID=study,
        SeriesInstanceUID=series,
        SOPInstanceUID=sop,
        SOPClassUID="1.2.840.10008.5.1.4.1.1.2",
        TransferSyntaxUID="1.2.840.10008.1.2.1",
        PatientID=patient,
        key=instance_key(study, series, sop),
        size=1234,
        etag=etag,
        stored_at="2026-11-25T10:00:00.000000Z",
        metadata={
            "00080018": {"vr": "UI", "Value": [sop]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Müller^Jörg"}]},
            "00100020": {"vr": "LO", "Value": [patient]},
        },
    )


def levels(rec: InstanceRecord, description: str = "CHEST") -> dict[str, dict]:
    return {
        "series": {"0020000E": {"vr": "UI", "Value": [rec.SeriesInstanceUID]}, "00080060": {"vr": "CS", "Value": ["CT"]}},
        "study": {"0020000D": {"vr": "UI", "Value": [rec.StudyInstanceUID]}, "00081030": {"vr": "LO", "Value": [description]}},
        "patient": {"00100020": {"vr": "LO", "Value": [rec.PatientID]}},
    }


def huge_metadata(sop: str, items: int = 7_000) -> dict:
    """A header like a large RT Structure Set's: thousands of sequence items of values that compress
    poorly (~1.4 MB of DICOM JSON, ~480 KB gzip-compressed: more than a DynamoDB item holds)."""
    rng = random.Random(sop)
    contours = [
        {"30060050": {"vr": "DS", "Value": [round(rng.uniform(-250, 250), 2) for _ in range(24)]}}
        for _ in range(items)
    ]
    return {**record(sop).metadata, "30060039": {"vr": "SQ", "Value": contours}}


class CatalogContract:
    def test_a_batch_of_two_studies_is_catalogued_with_its_levels(self, catalog: Catalog) -> None:
        moved = record("1.2.3.999")
        catalog.put_instance(moved, **levels(moved))
        other_study, other_series = "1.2.826.0.1.2", "1.2.826.0.1.2.1"
        batch = [record(f"1.2.3.{n}") for n in range(1, 121)]
        batch += [record(f"1.2.4.{n}", study=other_study, series=other_series, patient="P2") for n in range(1, 31)]
        batch.append(record("1.2.3.999", study=other_study, series=other_series, patient="P2", etag="e2"))
        entries = [CatalogEntry(r, **levels(r, description=r.StudyInstanceUID)) for r in batch]
        assert catalog.put_instances(entries) == {}
        assert len(list(catalog.list_instances(STUDY))) == 120
        assert len(list(catalog.list_instances(other_study, other_series))) == 31
        assert catalog.get_instance("1.2.3.999") == batch[-1]  # moved within the batch: one record
        assert catalog.get_study(other_study) == levels(batch[-1], description=other_study)["study"]
        assert catalog.get_patient("P2") is not None and catalog.get_series(STUDY, SERIES) is not None

    def test_instance_with_a_huge_header_round_trips(self, catalog: Catalog) -> None:
        rec = replace(record("1.2.3.1"), metadata=huge_metadata("1.2.3.1"))
        catalog.put_instance(rec, **levels(rec))
        assert catalog.get_instance("1.2.3.1") == rec
        assert list(catalog.list_instances(STUDY)) == [rec]

    def test_put_then_get_instance_round_trips_metadata(self, catalog: Catalog) -> None:
        rec = record("1.2.3.1")
        catalog.put_instance(rec, **levels(rec))
        got = catalog.get_instance("1.2.3.1")
        assert got == rec
        assert got is not None and got.metadata == rec.metadata

    def test_unknown_instance_is_none(self, catalog: Catalog) -> None:
        assert catalog.get_instance("9.9.9") is None
        assert catalog.get_study("9.9.9") is None
        assert catalog.get_series("9.9.9", "9.9.9.9") is None
        assert catalog.get_patient("nobody") is None

    def test_level_records_are_kept(self, catalog: Catalog) -> None:
        rec = record("1.2.3.1")
        catalog.put_instance(rec, **levels(rec))
        assert catalog.get_study(STUDY) == levels(rec)["study"]
        assert catalog.get_series(STUDY, SERIES) == levels(rec)["series"]
        assert catalog.get_patient("P1") == levels(rec)["patient"]

    def test_upsert_replaces_instance_and_updates_study(self, catalog: Catalog) -> None:
        first = record("1.2.3.1", etag="old")
        catalog.put_instance(first, **levels(first))
        second = record("1.2.3.1", etag="new")
        catalog.put_instance(second, **levels(second, "HEAD"))
        got = catalog.get_instance("1.2.3.1")
        assert got is not None and got.etag == "new"
        study = catalog.get_study(STUDY)
        assert study is not None and study["00081030"]["Value"] == ["HEAD"]
        assert len(list(catalog.list_instances(STUDY))) == 1

    def test_list_instances_by_study_and_series(self, catalog: Catalog) -> None:
        for sop, series in (("1.2.3.1", SERIES), ("1.2.3.2", SERIES), ("1.2.3.3", "1.2.826.0.1.1.2")):
            rec = record(sop, series=series)
            catalog.put_instance(rec, **levels(rec))
        other = record("1.2.3.9", study="1.2.826.0.1.9", series="1.2.826.0.1.9.1")
        catalog.put_instance(other, **levels(other))
        assert sorted(r.SOPInstanceUID for r in catalog.list_instances(STUDY)) == ["1.2.3.1", "1.2.3.2", "1.2.3.3"]
        assert sorted(r.SOPInstanceUID for r in catalog.list_instances(STUDY, SERIES)) == ["1.2.3.1", "1.2.3.2"]
        assert list(catalog.list_instances("7.7.7")) == []

    def test_list_instances_without_metadata_keeps_everything_else(self, catalog: Catalog) -> None:
        rec = record("1.2.3.1")
        catalog.put_instance(rec, **levels(rec))
        (full,) = catalog.list_instances(STUDY)
        (light,) = catalog.list_instances(STUDY, SERIES, with_metadata=False)
        assert full.metadata and light.metadata == {}
        assert light == full  # metadata is not part of a record's equality: everything else is the same

    def test_delete_instance_removes_empty_levels_only(self, catalog: Catalog) -> None:
        a, b = record("1.2.3.1"), record("1.2.3.2", series="1.2.826.0.1.1.2")
        catalog.put_instance(a, **levels(a))
        catalog.put_instance(b, **levels(b))
        catalog.delete_instance("1.2.3.1")
        assert catalog.get_instance("1.2.3.1") is None
        assert catalog.get_series(STUDY, SERIES) is None
        assert catalog.get_study(STUDY) is not None
        catalog.delete_instance("1.2.3.2")
        assert catalog.get_study(STUDY) is None
        catalog.delete_instance("1.2.3.2")  # idempotent

    def test_quarantine_records(self, catalog: Catalog) -> None:
        assert catalog.list_quarantine() == []
        q1 = QuarantineRecord("20261125T1-a", "incoming/x.dcm", "quarantine/20261125T1-a/x.dcm", "cannot-decode", "not DICOM", 10, "2026-11-25T10:00:00Z")
        q2 = QuarantineRecord("20261125T2-b", "incoming/y.dcm", "quarantine/20261125T2-b/y.dcm", "invalid-uid", "bad", 20, "2026-11-25T10:00:01Z")
        catalog.add_quarantine(q2)
        catalog.add_quarantine(q1)
        assert catalog.list_quarantine() == [q1, q2]

    def test_replacement_records(self, catalog: Catalog) -> None:
        r = ReplacementRecord("1.2.3.1", "studies/a.dcm", "e1", "studies/a.dcm", "e2", "2026-11-25T10:00:00Z")
        catalog.add_replacement(r)
        assert catalog.list_replacements() == [r]
