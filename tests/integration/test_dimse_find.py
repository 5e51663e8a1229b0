"""C-FIND against the gateway with real clients (DCMTK findscu and pynetdicom), over real files and
generated ones with Latin-1 and UTF-8 names; every answer is checked against the query service."""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    SecondaryCaptureImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
)

from skypacs.config import Settings
from skypacs.dimse.server import Gateway, GatewayOptions
from skypacs.dimse.status import Status
from skypacs.embedded import EmbeddedArchive
from skypacs.query.matcher import SearchPage
from skypacs.query.model import InformationModel, Level, Query, query_from_qido
from skypacs.services.query import QueryService
from tests.conftest import RunningGateway, dcmtk, dicom_file
from tests.dicom_files import identity, new_uid, scu, store_files

PATIENT_ROOT, STUDY_ROOT = InformationModel.PATIENT_ROOT, InformationModel.STUDY_ROOT
MODELS = {
    PATIENT_ROOT: PatientRootQueryRetrieveInformationModelFind,
    STUDY_ROOT: StudyRootQueryRetrieveInformationModelFind,
}
SET_BY_SCP = {"00080005", "00080052", "00080054"}

# ------------------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class Generated:
    patient_id: str
    name: str
    study: str
    series: tuple[str, ...]
    sops: tuple[str, ...]


def generated_instance(
    path: Path, *, charset: str, name: str, patient_id: str, study: str, series: str, modality: str,
    date: str, private: str | None = None,
) -> str:
    """A small Secondary Capture instance whose name is encoded in ``charset`` (pydicom encodes text
    with the dataset's Specific Character Set when it writes)."""
    sop = new_uid()
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = date, "101500", f"ACC{patient_id}"
    ds.Modality = modality
    ds.ConversionType = "WSD"
    ds.ReferringPhysicianName = "Dr^Who"
    ds.StudyDescription = f"{modality} study"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = name, patient_id, "19700101", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", "1", "1"
    if private is not None:
        block = ds.private_block(0x0011, "SKYPACS TEST", create=True)
        block.add_new(0x01, "LO", private)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return sop


@dataclass
class Archive:
    gateway: RunningGateway
    latin1: Generated
    utf8: Generated
    other_utf8: Generated
    real: list[Path]

    @property
    def port(self) -> int:
        return self.gateway.port

    @property
    def query_service(self) -> QueryService:
        return self.gateway.archive.query_service


def _patient(
    folder: Path, *, charset: str, name: str, patient_id: str, modalities: list[tuple[str, int]], date: str
) -> tuple[Generated, list[Path]]:
    study = new_uid()
    series_uids, sops, paths = [], [], []
    for modality, count in modalities:
        series = new_uid()
        series_uids.append(series)
        for _ in range(count):
            path = folder / f"{new_uid()}.dcm"
            sops.append(generated_instance(
                path, charset=charset, name=name, patient_id=patient_id, study=study, series=series,
                modality=modality, date=date, private="SITE-A" if modality == "CT" else "SITE-B",
            ))
            paths.append(path)
    return Generated(patient_id, name, study, tuple(series_uids), tuple(sops)), paths


@pytest.fixture(scope="module")
def shared_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """One gateway for the module's read-only tests (like conftest's ``make_gateway``, module-wide)."""
    store = EmbeddedArchive(Settings(data_dir=tmp_path_factory.mktemp("find") / "data"))
    gateway = Gateway(
        GatewayOptions(ae_title="SKYPACS", host="127.0.0.1", port=0), store.store_service,
        query_service=store.query_service,
    )
    gateway.start()
    indexer, stop = store.indexer(), threading.Event()
    thread = threading.Thread(target=indexer.run, args=(stop,), kwargs={"idle_sleep": 0.02}, daemon=True)
    thread.start()
    yield RunningGateway(gateway, store, indexer)
    gateway.stop(timeout=5)
    stop.set()
    thread.join(10)


@pytest.fixture(scope="module")
def archive(shared_gateway: RunningGateway, tmp_path_factory: pytest.TempPathFactory) -> Archive:
    """The archive every query runs over: three generated patients (Latin-1 and UTF-8 names, private
    tags) and four real files."""
    folder = tmp_path_factory.mktemp("generated")
    latin1, latin1_files = _patient(
        folder, charset="ISO_IR 100", name="Müller^Hans", patient_id="LATIN1",
        modalities=[("CT", 2), ("MR", 1)], date="20210315",
    )
    utf8, utf8_files = _patient(
        folder, charset="ISO_IR 192", name="Müller^Jörg", patient_id="UTF8-1", modalities=[("MR", 1)],
        date="20220620",
    )
    other, other_files = _patient(
        folder, charset="ISO_IR 192", name="Nguyễn^Văn", patient_id="UTF8-2", modalities=[("US", 1)],
        date="20230101",
    )
    real = [dicom_file(name) for name in ("CT_small.dcm", "MR_small.dcm", "US1_UNCR.dcm", "test-SR.dcm")]
    files = [*latin1_files, *utf8_files, *other_files, *real]
    assert store_files(shared_gateway.port, files) == [0] * len(files)
    shared_gateway.wait_indexed(len(files))
    return Archive(shared_gateway, latin1, utf8, other, real)


# --------------------------------------------------------------------------------------- clients


def c_find(
    port: int, identifier: Dataset, model: InformationModel, *, calling: str = "TESTSCU",
    transfer_syntax: str = ImplicitVRLittleEndian,
) -> list[tuple[int, Dataset | None]]:
    ae = scu(calling)
    ae.add_requested_context(MODELS[model], [transfer_syntax])
    assoc = ae.associate("127.0.0.1", port, ae_title="SKYPACS")
    assert assoc.is_established, "association refused"
    try:
        return [
            (int(status.Status), found)
            for status, found in assoc.send_c_find(identifier, MODELS[model])
            if "Status" in status
        ]
    finally:
        assoc.release()


def identifier(level: str, charset: str | None = "ISO_IR 192", **keys: Any) -> Dataset:
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.QueryRetrieveLevel = level
    with warnings.catch_warnings():  # pydicom validates values, not matching keys: a range is no DA
        warnings.simplefilter("ignore", UserWarning)
        for keyword, value in keys.items():
            if keyword.startswith("x"):  # a tag: x00111001=("LO", "SITE-A")
                ds.add_new(int(keyword[1:], 16), *value)
            else:
                setattr(ds, keyword, value)
    return ds


def findscu(port: int, out: Path, *args: str, calling: str = "FINDSCU") -> tuple[list[Dataset], str]:
    """Run DCMTK findscu, returning the extracted responses (rsp0001.dcm...) and its log."""
    out.mkdir(parents=True, exist_ok=True)
    command = [dcmtk("findscu"), "-v", "-aet", calling, "-aec", "SKYPACS", "-X", "-od", str(out), *args]
    # Bytes out: findscu echoes the request, whose values may be Latin-1.
    result = subprocess.run([*command, "127.0.0.1", str(port)], capture_output=True, timeout=60, check=False)
    responses: list[Dataset] = [pydicom.dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]
    return responses, (result.stderr + result.stdout).decode("utf-8", errors="replace")


def pending(responses: list[tuple[int, Dataset | None]]) -> list[Dataset]:
    assert responses, "no response"
    assert responses[-1] == (Status.SUCCESS, None), f"last status 0x{responses[-1][0]:04X}"
    assert all(status == Status.PENDING for status, _ in responses[:-1])
    return [found for _, found in responses[:-1] if found is not None]


# ------------------------------------------------------------------------------------- comparing


def comparable(document: dict[str, Any], requested: set[str]) -> dict[str, Any]:
    """A response or search result reduced to the requested keys' values (empty = None)."""
    values = {}
    for tag in sorted(requested - SET_BY_SCP):
        element = document.get(tag) or {}
        value = element.get("Value")
        if "InlineBinary" in element:  # a private tag the SCU decoded without knowing its VR (UN)
            value = [base64.b64decode(element["InlineBinary"]).decode().rstrip("\x00 ")]
        if value and element.get("vr") in ("IS", "DS"):
            value = [float(v) for v in value]
        values[tag] = value or None
    return values


def expected_answers(
    service: QueryService, model: InformationModel, level: str, request: Dataset
) -> list[dict[str, Any]]:
    """What the query service answers for the equivalent query, built from QIDO-style parameters."""
    params = [
        (f"{int(element.tag):08X}", _raw(element))
        for element in request
        if element.keyword not in ("SpecificCharacterSet", "QueryRetrieveLevel")
    ]
    requested = {f"{int(tag):08X}" for tag in request.keys()}  # noqa: SIM118 - a Dataset iterates elements
    query = replace(
        query_from_qido(Level(level), params), include=frozenset(requested), limit=10_000, model=model
    )
    page = service.search(query)
    assert not page.truncated
    return [comparable(item, requested) for item in page.items]


def _raw(element: Any) -> str:
    if element.VM > 1:
        return "\\".join(map(str, element.value))
    return str(element.value or "")


def answers(found: list[Dataset], request: Dataset) -> list[dict[str, Any]]:
    requested = {f"{int(tag):08X}" for tag in request.keys()}  # noqa: SIM118 - a Dataset iterates elements
    return [comparable(ds.to_json_dict(), requested) for ds in found]


# ----------------------------------------------------------------------------------------- tests


def test_findscu_study_root_wildcard_name_returns_computed_study_attributes(
    archive: Archive, tmp_path: Path
) -> None:
    found, log = findscu(
        archive.port, tmp_path / "rsp", "-S",
        "-k", "SpecificCharacterSet=ISO_IR 192", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientName=mül*",
        "-k", "PatientID", "-k", "StudyInstanceUID", "-k", "StudyDate", "-k", "ModalitiesInStudy",
        "-k", "NumberOfStudyRelatedInstances", "-k", "NumberOfStudyRelatedSeries", "-k", "RetrieveAETitle",
    )
    assert len(found) == 2, log
    by_patient = {ds.PatientID: ds for ds in found}
    assert set(by_patient) == {"LATIN1", "UTF8-1"}
    latin1 = by_patient["LATIN1"]
    assert str(latin1.PatientName) == "Müller^Hans" and str(by_patient["UTF8-1"].PatientName) == "Müller^Jörg"
    assert list(latin1.ModalitiesInStudy) == ["CT", "MR"]
    assert int(latin1.NumberOfStudyRelatedInstances) == 3 and int(latin1.NumberOfStudyRelatedSeries) == 2
    assert int(by_patient["UTF8-1"].NumberOfStudyRelatedInstances) == 1
    assert latin1.StudyInstanceUID == archive.latin1.study and latin1.StudyDate == "20210315"
    for ds in found:
        assert ds.SpecificCharacterSet == "ISO_IR 192" and ds.QueryRetrieveLevel == "STUDY"
        assert ds.RetrieveAETitle == "SKYPACS"
        # Only what was asked for (plus the character set and the level).
        assert {e.keyword for e in ds} <= {
            "SpecificCharacterSet", "QueryRetrieveLevel", "PatientName", "PatientID", "StudyInstanceUID",
            "StudyDate", "ModalitiesInStudy", "NumberOfStudyRelatedInstances", "NumberOfStudyRelatedSeries",
            "RetrieveAETitle",
        }


def test_findscu_latin1_query(archive: Archive, tmp_path: Path) -> None:
    # The name goes on the wire as Latin-1 bytes; the gateway decodes it with the identifier's charset.
    name = os.fsdecode("PatientName=MÜLLER^HANS".encode("latin-1"))
    found, log = findscu(
        archive.port, tmp_path / "rsp", "-S", "-k", "SpecificCharacterSet=ISO_IR 100",
        "-k", "QueryRetrieveLevel=STUDY", "-k", name, "-k", "StudyInstanceUID",
    )
    assert [ds.StudyInstanceUID for ds in found] == [archive.latin1.study], log
    assert str(found[0].PatientName) == "Müller^Hans"


def test_findscu_patient_root_every_level(archive: Archive, tmp_path: Path) -> None:
    latin1 = archive.latin1
    patients, log = findscu(
        archive.port, tmp_path / "patient", "-P", "-k", "QueryRetrieveLevel=PATIENT",
        "-k", "PatientID=LATIN1",
        "-k", "PatientName", "-k", "NumberOfPatientRelatedStudies", "-k", "NumberOfPatientRelatedInstances",
    )
    assert len(patients) == 1, log
    assert str(patients[0].PatientName) == "Müller^Hans"
    assert int(patients[0].NumberOfPatientRelatedStudies) == 1
    assert int(patients[0].NumberOfPatientRelatedInstances) == 3
    studies, log = findscu(
        archive.port, tmp_path / "study", "-P", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=LATIN1",
        "-k", "StudyInstanceUID", "-k", "StudyDate=20210101-20211231",
    )
    assert [ds.StudyInstanceUID for ds in studies] == [latin1.study], log
    series, log = findscu(
        archive.port, tmp_path / "series", "-P", "-k", "QueryRetrieveLevel=SERIES", "-k", "PatientID=LATIN1",
        "-k", f"StudyInstanceUID={latin1.study}", "-k", "SeriesInstanceUID", "-k", "Modality",
        "-k", "NumberOfSeriesRelatedInstances",
    )
    counts = sorted((ds.Modality, int(ds.NumberOfSeriesRelatedInstances)) for ds in series)
    assert counts == [("CT", 2), ("MR", 1)]
    assert {ds.SeriesInstanceUID for ds in series} == set(latin1.series)
    images, log = findscu(
        archive.port, tmp_path / "image", "-P", "-k", "QueryRetrieveLevel=IMAGE", "-k", "PatientID=LATIN1",
        "-k", f"StudyInstanceUID={latin1.study}", "-k", f"SeriesInstanceUID={latin1.series[0]}",
        "-k", "SOPInstanceUID", "-k", "SOPClassUID", "-k", "InstanceNumber",
    )
    assert {ds.SOPInstanceUID for ds in images} == set(latin1.sops[:2]), log
    assert all(ds.SOPClassUID == SecondaryCaptureImageStorage for ds in images)


def test_findscu_invalid_identifier_gets_a900(archive: Archive, tmp_path: Path) -> None:
    found, log = findscu(
        archive.port, tmp_path / "rsp", "-P", "-k", "QueryRetrieveLevel=IMAGE", "-k", "PatientID=LATIN1",
        "-k", f"StudyInstanceUID={archive.latin1.study}", "-k", "SOPInstanceUID",
    )
    assert found == []
    assert "Error: DataSetDoesNotMatchSOPClass" in log, log  # DCMTK's name for 0xA900


PYNETDICOM_CASES: list[tuple[InformationModel, str, Callable[[Archive], dict[str, Any]], int]] = [
    (PATIENT_ROOT, "PATIENT",
     lambda a: {"PatientID": "", "PatientName": "M*ller*", "PatientBirthDate": "",
                "NumberOfPatientRelatedStudies": "", "NumberOfPatientRelatedSeries": ""}, 2),
    (PATIENT_ROOT, "STUDY",
     lambda a: {"PatientID": "LATIN1", "StudyInstanceUID": "", "StudyDate": "2021-", "AccessionNumber": "",
                "ModalitiesInStudy": "", "NumberOfStudyRelatedInstances": ""}, 1),
    (PATIENT_ROOT, "SERIES",
     lambda a: {"PatientID": "LATIN1", "StudyInstanceUID": a.latin1.study, "SeriesInstanceUID": "",
                "Modality": "MR", "NumberOfSeriesRelatedInstances": ""}, 1),
    (PATIENT_ROOT, "IMAGE",
     lambda a: {"PatientID": "LATIN1", "StudyInstanceUID": a.latin1.study,
                "SeriesInstanceUID": a.latin1.series[0], "SOPInstanceUID": "", "InstanceNumber": ""}, 2),
    (STUDY_ROOT, "STUDY",
     lambda a: {"StudyInstanceUID": "", "PatientName": "", "PatientID": "", "StudyDate": "20040101-20041231",
                "ModalitiesInStudy": "", "NumberOfStudyRelatedInstances": "", "StudyDescription": ""}, 3),
    (STUDY_ROOT, "STUDY",
     lambda a: {"StudyInstanceUID": "", "PatientName": "", "ModalitiesInStudy": "MR",
                "NumberOfStudyRelatedSeries": ""}, 3),
    (STUDY_ROOT, "SERIES",
     lambda a: {"StudyInstanceUID": a.latin1.study, "SeriesInstanceUID": "", "Modality": "",
                "SeriesNumber": "", "NumberOfSeriesRelatedInstances": ""}, 2),
    (STUDY_ROOT, "IMAGE",
     lambda a: {"StudyInstanceUID": a.latin1.study, "SeriesInstanceUID": a.latin1.series[0],
                "SOPInstanceUID": "", "SOPClassUID": "", "PatientName": ""}, 2),
    # A list of SOP Instance UIDs at the query level (List of UID matching, PS3.4 C.2.2.2.2).
    (STUDY_ROOT, "IMAGE",
     lambda a: {"StudyInstanceUID": a.latin1.study, "SeriesInstanceUID": a.latin1.series[0],
                "SOPInstanceUID": list(a.latin1.sops[:2])}, 2),
]


@pytest.mark.parametrize(
    ("model", "level", "keys", "count"), PYNETDICOM_CASES,
    ids=[f"{m.value}-{lvl}-{i}" for i, (m, lvl, _, _) in enumerate(PYNETDICOM_CASES)],
)
def test_pynetdicom_find_equals_query_service(
    archive: Archive,
    model: InformationModel,
    level: str,
    keys: Callable[[Archive], dict[str, Any]],
    count: int,
) -> None:
    request = identifier(level, **keys(archive))
    found = pending(c_find(archive.port, request, model))
    assert len(found) == count
    assert answers(found, request) == expected_answers(archive.query_service, model, level, request)
    for ds in found:
        assert ds.QueryRetrieveLevel == level and ds.SpecificCharacterSet == "ISO_IR 192"


@pytest.mark.parametrize(
    "syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian], ids=["implicit", "explicit"]
)
def test_private_tag_match(archive: Archive, syntax: str) -> None:
    # Under implicit VR the gateway cannot know the private tag's VR (UN): it matches its bytes as text.
    latin1 = archive.latin1
    ct, mr = latin1.series
    request = identifier(
        "IMAGE", StudyInstanceUID=latin1.study, SeriesInstanceUID=ct, SOPInstanceUID="",
        x00110010=("LO", "SKYPACS TEST"), x00111001=("LO", "SITE-A"),
    )
    found = pending(c_find(archive.port, request, STUDY_ROOT, transfer_syntax=syntax))
    assert {ds.SOPInstanceUID for ds in found} == set(latin1.sops[:2])
    assert all(ds[0x00111001].value in ("SITE-A", b"SITE-A") for ds in found)
    assert answers(found, request) == expected_answers(
        archive.query_service, STUDY_ROOT, "IMAGE", request
    )
    request.SeriesInstanceUID = mr  # its instance is SITE-B
    assert pending(c_find(archive.port, request, STUDY_ROOT, transfer_syntax=syntax)) == []
    request[0x00111001].value = "SITE-?"
    (found_mr,) = pending(c_find(archive.port, request, STUDY_ROOT, transfer_syntax=syntax))
    assert found_mr.SOPInstanceUID == latin1.sops[2]


def test_real_file_private_tag_match(archive: Archive) -> None:
    study, series, sop, _ = identity(dicom_file("CT_small.dcm"))
    request = identifier(
        "IMAGE", StudyInstanceUID=study, SeriesInstanceUID=series, SOPInstanceUID="",
        x00090010=("LO", "GEMS_IDEN_01"), x00091002=("SH", "CT0?"),
    )
    found = pending(c_find(archive.port, request, STUDY_ROOT, transfer_syntax=ExplicitVRLittleEndian))
    assert [ds.SOPInstanceUID for ds in found] == [sop]
    request[0x00091002].value = "MR01"
    assert pending(c_find(archive.port, request, STUDY_ROOT)) == []


def test_latin1_and_utf8_identifiers_find_the_same(archive: Archive) -> None:
    for charset in ("ISO_IR 100", "ISO_IR 192", None):
        name = "müller^hans" if charset else "M?ller^Hans"  # no charset: the default repertoire is ASCII
        request = identifier("STUDY", charset=charset, PatientName=name, StudyInstanceUID="", PatientID="")
        found = pending(c_find(archive.port, request, STUDY_ROOT))
        assert [(ds.PatientID, str(ds.PatientName)) for ds in found] == [("LATIN1", "Müller^Hans")], charset
    request = identifier("PATIENT", PatientName="Nguyễn*", PatientID="")
    found = pending(c_find(archive.port, request, PATIENT_ROOT))
    assert [(ds.PatientID, str(ds.PatientName)) for ds in found] == [("UTF8-2", "Nguyễn^Văn")]


def test_requested_keys_without_values_come_back_empty(archive: Archive) -> None:
    request = identifier(
        "STUDY", StudyInstanceUID=archive.utf8.study, IssuerOfPatientID="", PatientComments=""
    )
    (found,) = pending(c_find(archive.port, request, STUDY_ROOT))
    assert found.StudyInstanceUID == archive.utf8.study
    assert found.IssuerOfPatientID == "" and found.PatientComments == ""
    assert "PatientName" not in found  # not asked for


@pytest.mark.parametrize(
    ("model", "keys", "comment"),
    [
        (STUDY_ROOT, {"PatientName": "*"}, "QueryRetrieveLevel"),
        (STUDY_ROOT, {"QueryRetrieveLevel": "PATIENT", "PatientID": ""}, "QueryRetrieveLevel"),
        (PATIENT_ROOT, {"QueryRetrieveLevel": "IMAGE", "PatientID": "LATIN1", "StudyInstanceUID": "1.2.3",
                        "SOPInstanceUID": ""}, "SeriesInstanceUID"),
        (PATIENT_ROOT, {"QueryRetrieveLevel": "STUDY", "PatientID": "LAT*"}, "PatientID"),
        (STUDY_ROOT, {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": ["1.2.3", "1.2.4"]},
         "StudyInstanceUID"),
    ],
    ids=["no-level", "patient-level-in-study-root", "image-without-series", "wildcard-id", "uid-list"],
)
def test_invalid_identifier_gets_a900_with_a_comment(
    archive: Archive, model: InformationModel, keys: dict[str, Any], comment: str
) -> None:
    request = Dataset()
    for keyword, value in keys.items():
        setattr(request, keyword, value)
    ae = scu()
    ae.add_requested_context(MODELS[model])
    assoc = ae.associate("127.0.0.1", archive.port, ae_title="SKYPACS")
    try:
        ((status, found),) = list(assoc.send_c_find(request, MODELS[model]))
        assert status.Status == Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS and found is None
        assert comment in status.ErrorComment
        # The association stays usable.
        valid = identifier("PATIENT" if model == PATIENT_ROOT else "STUDY", PatientID="UTF8-1")
        answered = pending([(int(s.Status), ds) for s, ds in assoc.send_c_find(valid, MODELS[model])])
        assert [ds.PatientID for ds in answered] == ["UTF8-1"]
    finally:
        assoc.release()


class SlowItems(list[Any]):
    """Search results handed out slowly, so that a C-CANCEL arrives while matches are still going out."""

    def __iter__(self) -> Iterator[Any]:
        for item in super().__iter__():
            time.sleep(0.02)
            yield item


class SlowQueryService(QueryService):
    def search(self, query: Query) -> SearchPage:
        page = super().search(query)
        return SearchPage(SlowItems(page.items * 40), page.truncated)


@pytest.fixture
def slow_gateway(archive: Archive) -> Iterator[Gateway]:
    store = archive.gateway.archive
    gateway = Gateway(
        GatewayOptions(ae_title="SKYPACS", host="127.0.0.1", port=0), store.store_service,
        query_service=SlowQueryService(store.index),
    )
    gateway.start()
    yield gateway
    gateway.stop(timeout=5)


def test_c_cancel_stops_the_stream(slow_gateway: Gateway) -> None:
    ae = scu()
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", slow_gateway.port, ae_title="SKYPACS")
    assert assoc.is_established
    statuses = []
    try:
        request = identifier("STUDY", StudyInstanceUID="", PatientID="")
        model = StudyRootQueryRetrieveInformationModelFind
        for status, _found in assoc.send_c_find(request, model, msg_id=7):
            statuses.append(int(status.Status))
            if len(statuses) == 1:
                assoc.send_c_cancel(7, query_model=StudyRootQueryRetrieveInformationModelFind)
    finally:
        assoc.release()
    # 7 studies x 40 = 280 matches: the cancel stops them within a few.
    assert statuses[0] == Status.PENDING
    assert statuses[-1] == Status.CANCEL
    assert all(status == Status.PENDING for status in statuses[:-1])
    assert len(statuses) < 20


def test_findscu_cancel(slow_gateway: Gateway, tmp_path: Path) -> None:
    found, log = findscu(
        slow_gateway.port, tmp_path / "rsp", "-S", "--cancel", "1", "-k", "QueryRetrieveLevel=STUDY",
        "-k", "StudyInstanceUID",
    )
    assert 1 <= len(found) < 20, log
    assert "Cancel" in log, log


def test_calling_ae_not_on_the_allow_list_is_rejected(
    make_gateway: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    gateway = make_gateway(allowed_aes=frozenset({"VIEWER"}))
    _, log = findscu(
        gateway.port, tmp_path / "denied", "-S", "-k", "QueryRetrieveLevel=STUDY", calling="INTRUDER"
    )
    assert "rejected" in log.lower(), log
    ae = scu("INTRUDER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", gateway.port, ae_title="SKYPACS")
    assert assoc.is_rejected
    assert pending(c_find(gateway.port, identifier("STUDY", StudyInstanceUID=""), STUDY_ROOT,
                          calling="VIEWER")) == []


def test_find_is_offered_only_with_a_query_service(archive: Archive) -> None:
    store = archive.gateway.archive
    gateway = Gateway(GatewayOptions(ae_title="SKYPACS", host="127.0.0.1", port=0), store.store_service)
    gateway.start()
    try:
        ae = scu()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        ae.add_requested_context("1.2.840.10008.1.1")
        assoc = ae.associate("127.0.0.1", gateway.port, ae_title="SKYPACS")
        assert assoc.is_established
        try:
            accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
            assert str(StudyRootQueryRetrieveInformationModelFind) not in accepted
        finally:
            assoc.release()
    finally:
        gateway.stop(timeout=5)


def test_no_patient_data_in_the_logs(
    archive: Archive, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As `skypacs serve` configures pynetdicom (skypacs.logs): identifiers are never logged.
    monkeypatch.setattr(pynetdicom_config, "LOG_REQUEST_IDENTIFIERS", False)
    monkeypatch.setattr(pynetdicom_config, "LOG_RESPONSE_IDENTIFIERS", False)
    with caplog.at_level(logging.DEBUG):
        found = pending(c_find(archive.port, identifier("STUDY", PatientName="Müller*", PatientID="",
                                                        StudyInstanceUID=""), STUDY_ROOT))
        bad = c_find(archive.port, identifier("SERIES", PatientName="Müller*", StudyInstanceUID="1.2.*"),
                     STUDY_ROOT)
    assert len(found) == 2 and bad[0][0] == Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    assert "Müller" not in caplog.text and "LATIN1" not in caplog.text and "UTF8-1" not in caplog.text
    assert "C-FIND from TESTSCU" in caplog.text


def test_backend_failure_is_a700(archive: Archive) -> None:
    class Broken(QueryService):
        def search(self, query: Query) -> SearchPage:
            raise OSError("disk on fire")

    gateway = Gateway(
        GatewayOptions(ae_title="SKYPACS", host="127.0.0.1", port=0), archive.gateway.archive.store_service,
        query_service=Broken(archive.gateway.archive.index),
    )
    gateway.start()
    try:
        responses = c_find(gateway.port, identifier("STUDY", StudyInstanceUID=""), STUDY_ROOT)
        assert responses == [(Status.OUT_OF_RESOURCES, None)]
    finally:
        gateway.stop(timeout=5)


def test_many_concurrent_finds(archive: Archive) -> None:
    results: list[int] = []

    def run() -> None:
        found = pending(c_find(archive.port, identifier("STUDY", StudyInstanceUID="", PatientID=""),
                               STUDY_ROOT))
        results.append(len(found))

    threads = [threading.Thread(target=run) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == [7] * 6
