"""Retrieve selection: C-MOVE/C-GET Identifiers validated per the model, and the stored instances they
name, over the embedded catalog and index filled from real files."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from pydicom.dataset import Dataset

from skypacs.embedded import EmbeddedArchive
from skypacs.errors import BackendError, InvalidQuery
from skypacs.parsing import parse_bytes
from skypacs.query.model import InformationModel, Level
from skypacs.services.retrieve_selection import (
    IMAGE_LOOKUP_LIMIT,
    RetrieveRequest,
    retrieve_request_from_identifier,
    select_instances,
)
from tests.dicom_files import clone, new_uid

PATIENT_ROOT, STUDY_ROOT = InformationModel.PATIENT_ROOT, InformationModel.STUDY_ROOT


def identifier(level: str | None, **keys: object) -> Dataset:
    ds = Dataset()
    if level is not None:
        ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


# ------------------------------------------------------------------------------- parsing and validation


def test_study_root_study_level_takes_a_list_of_uids_once_each() -> None:
    request = retrieve_request_from_identifier(
        identifier("STUDY", StudyInstanceUID=["1.2.3", "1.2.4", "1.2.3"]), STUDY_ROOT
    )
    assert request == RetrieveRequest(STUDY_ROOT, Level.STUDY, study_instance_uids=("1.2.3", "1.2.4"))


def test_patient_root_image_level_names_every_parent_once() -> None:
    ds = identifier(
        "IMAGE", PatientID="PAT1", StudyInstanceUID="1.2.3", SeriesInstanceUID="1.2.3.4",
        SOPInstanceUID=["1.2.3.4.5", "1.2.3.4.6"],
    )
    request = retrieve_request_from_identifier(ds, PATIENT_ROOT)
    assert (request.level, request.patient_id) == (Level.IMAGE, "PAT1")
    assert request.study_instance_uids == ("1.2.3",) and request.series_instance_uids == ("1.2.3.4",)
    assert request.sop_instance_uids == ("1.2.3.4.5", "1.2.3.4.6")


def test_patient_level_in_patient_root() -> None:
    request = retrieve_request_from_identifier(identifier("PATIENT", PatientID="PAT1 "), PATIENT_ROOT)
    assert (request.level, request.patient_id, request.study_instance_uids) == (Level.PATIENT, "PAT1", ())


def test_other_attributes_and_empty_lower_keys_are_ignored() -> None:
    ds = identifier(
        "STUDY", StudyInstanceUID="1.2.3", SeriesInstanceUID="", PatientName="Doe^John",
        SpecificCharacterSet="ISO_IR 100", StudyDate="20200101",
    )
    assert retrieve_request_from_identifier(ds, STUDY_ROOT).study_instance_uids == ("1.2.3",)


@pytest.mark.parametrize(
    ("ds", "model", "message"),
    [
        (identifier(None, StudyInstanceUID="1.2.3"), STUDY_ROOT, "needs one QueryRetrieveLevel"),
        (identifier("FOO", StudyInstanceUID="1.2.3"), STUDY_ROOT, "QueryRetrieveLevel 'FOO' is not one of"),
        (identifier("PATIENT", PatientID="P"), STUDY_ROOT, "QueryRetrieveLevel 'PATIENT' is not one of"),
        (identifier("STUDY"), STUDY_ROOT, "StudyInstanceUID is required at STUDY level"),
        (identifier("SERIES", SeriesInstanceUID="1.2.3.4"), STUDY_ROOT, "StudyInstanceUID is required"),
        (identifier("SERIES", StudyInstanceUID="", SeriesInstanceUID="1.2.3.4"), STUDY_ROOT,
         "StudyInstanceUID is required"),
        (identifier("STUDY", StudyInstanceUID="1.2.3"), PATIENT_ROOT, "PatientID is required at STUDY level"),
        (identifier("SERIES", StudyInstanceUID=["1.2.3", "1.2.4"], SeriesInstanceUID="1.2.3.4"), STUDY_ROOT,
         "StudyInstanceUID must be one value, not a list"),
        (identifier("IMAGE", StudyInstanceUID="1.2.3", SeriesInstanceUID="1.2.3.4"), STUDY_ROOT,
         "SOPInstanceUID is required"),
        (identifier("STUDY", StudyInstanceUID="1.2.*"), STUDY_ROOT, "StudyInstanceUID: wildcards are not allowed"),
        (identifier("PATIENT", PatientID="PAT*"), PATIENT_ROOT, "PatientID: wildcards are not allowed"),
        (identifier("PATIENT", PatientID=["A", "B"]), PATIENT_ROOT, "PatientID must be one value"),
        (identifier("STUDY", StudyInstanceUID="1.02.3"), STUDY_ROOT, "is not a valid UID"),
        (identifier("STUDY", StudyInstanceUID="1.2.3", SeriesInstanceUID="1.2.3.4"), STUDY_ROOT,
         "SeriesInstanceUID names a level below the retrieve level STUDY"),
    ],
)
def test_identifiers_that_are_not_a_baseline_retrieve_are_refused(
    ds: Dataset, model: InformationModel, message: str
) -> None:
    with pytest.raises(InvalidQuery, match=message.replace("*", r"\*")) as raised:
        retrieve_request_from_identifier(ds, model)
    assert message.split()[0].rstrip(":") in str(raised.value)[:64]  # what to fix survives the 64-char comment


# ------------------------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class Stored:
    patient_id: str
    study: str
    series: tuple[str, ...]
    sops: dict[str, list[str]]  # series -> SOP Instance UIDs


def _store(archive: EmbeddedArchive, name: str, **changes: str) -> str:
    sop = new_uid()
    data = clone(name, SOPInstanceUID=sop, **changes)
    key = parse_bytes(data).key
    archive.store.put(key, data)
    assert archive.ingest_service.ingest(key).outcome == "stored"
    return sop


def _study(archive: EmbeddedArchive, patient_id: str, sizes: tuple[int, ...]) -> Stored:
    study = new_uid()
    sops: dict[str, list[str]] = {}
    for size in sizes:
        series = new_uid()
        sops[series] = [
            _store(archive, "CT_small.dcm", PatientID=patient_id, StudyInstanceUID=study, SeriesInstanceUID=series)
            for _ in range(size)
        ]
    return Stored(patient_id, study, tuple(sops), sops)


@pytest.fixture
def stored(archive: EmbeddedArchive) -> tuple[Stored, Stored, Stored]:
    """Patient A with two studies (series of 2 and 1; one of 1), patient B with one study."""
    return (_study(archive, "PAT-A", (2, 1)), _study(archive, "PAT-A", (1,)), _study(archive, "PAT-B", (1,)))


def _sops(records: list[object]) -> list[str]:
    return [record.SOPInstanceUID for record in records]  # type: ignore[attr-defined]


def test_study_level_selects_every_instance_of_each_study(
    archive: EmbeddedArchive, stored: tuple[Stored, Stored, Stored]
) -> None:
    first, second, _ = stored
    request = RetrieveRequest(STUDY_ROOT, Level.STUDY, study_instance_uids=(first.study, second.study, "1.2.999"))
    records = select_instances(request, archive.catalog)
    expected = [sop for s in (first, second) for sops in s.sops.values() for sop in sops]
    assert sorted(_sops(records)) == sorted(expected) and len(records) == 4
    assert all(record.key and record.TransferSyntaxUID and not record.metadata for record in records)  # lean


def test_series_level_selects_only_the_named_series(
    archive: EmbeddedArchive, stored: tuple[Stored, Stored, Stored]
) -> None:
    first = stored[0]
    request = RetrieveRequest(
        PATIENT_ROOT, Level.SERIES, patient_id="PAT-A", study_instance_uids=(first.study,),
        series_instance_uids=(first.series[0],),
    )
    assert sorted(_sops(select_instances(request, archive.catalog))) == sorted(first.sops[first.series[0]])


def test_image_level_keeps_the_hierarchy(archive: EmbeddedArchive, stored: tuple[Stored, Stored, Stored]) -> None:
    first, second, _ = stored
    wanted = first.sops[first.series[0]][0]
    elsewhere = second.sops[second.series[0]][0]  # stored, but under another study
    request = RetrieveRequest(
        STUDY_ROOT, Level.IMAGE, study_instance_uids=(first.study,), series_instance_uids=(first.series[0],),
        sop_instance_uids=(wanted, elsewhere, "1.2.999"),
    )
    assert _sops(select_instances(request, archive.catalog)) == [wanted]


def test_image_level_with_many_uids_lists_the_series_once(archive: EmbeddedArchive) -> None:
    study = _study(archive, "PAT-C", (IMAGE_LOOKUP_LIMIT + 2,))
    sops = study.sops[study.series[0]]
    request = RetrieveRequest(
        STUDY_ROOT, Level.IMAGE, study_instance_uids=(study.study,), series_instance_uids=study.series,
        sop_instance_uids=(*sops[1:], "1.2.999"),
    )
    assert _sops(select_instances(request, archive.catalog)) == sops[1:]


def test_patient_root_ignores_instances_of_another_patient(
    archive: EmbeddedArchive, stored: tuple[Stored, Stored, Stored]
) -> None:
    other = stored[2]
    request = RetrieveRequest(PATIENT_ROOT, Level.STUDY, patient_id="PAT-A", study_instance_uids=(other.study,))
    assert select_instances(request, archive.catalog) == []


def test_patient_level_finds_the_studies_through_the_index(
    archive: EmbeddedArchive, stored: tuple[Stored, Stored, Stored]
) -> None:
    first, second, _ = stored
    request = RetrieveRequest(PATIENT_ROOT, Level.PATIENT, patient_id="PAT-A")
    records = select_instances(request, archive.catalog, archive.query_service)
    assert sorted(_sops(records)) == sorted(sop for s in (first, second) for sops in s.sops.values() for sop in sops)
    assert select_instances(RetrieveRequest(PATIENT_ROOT, Level.PATIENT, patient_id="NOBODY"),
                            archive.catalog, archive.query_service) == []


def test_patient_level_without_an_index_is_a_backend_error(archive: EmbeddedArchive) -> None:
    with pytest.raises(BackendError, match="query index"):
        select_instances(RetrieveRequest(PATIENT_ROOT, Level.PATIENT, patient_id="PAT-A"), archive.catalog)
