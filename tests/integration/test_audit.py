"""The audit trail of a running archive: every search, retrieve, store and delete, over DICOMweb and
DIMSE, leaves one record naming who asked, what (UIDs, parameter and key names), and the outcome; never
the token, never a value searched for."""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

from skypacs.audit import AUDIT_LOGGER, token_id
from skypacs.config import Settings
from skypacs.dicomweb import dicomweb_router, multipart
from skypacs.dicomweb.server import DicomWebServer
from skypacs.dimse.retrieve import RetrieveSources
from skypacs.dimse.server import Gateway, GatewayOptions
from skypacs.embedded import EmbeddedArchive
from tests.conftest import RunningGateway
from tests.dicom_files import clone, new_uid, scu, store_files

TOKEN = "audit-test-token-0123456789-abcdefghijklmnop"
PATIENT = "Auditee^Patricia"
BOUNDARY = "audit-boundary"


class Trail:
    """The audit records written while a test runs, caught on the audit logger itself."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog

    def entries(self, action: str | None = None) -> list[dict[str, Any]]:
        found = [json.loads(r.getMessage()) for r in self.caplog.records if r.name == AUDIT_LOGGER]
        return [entry for entry in found if action is None or entry["action"] == action]

    def text(self) -> str:
        return "\n".join(r.getMessage() for r in self.caplog.records if r.name == AUDIT_LOGGER)


@pytest.fixture
def trail(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Iterator[Trail]:
    audit_logger = logging.getLogger(AUDIT_LOGGER)
    monkeypatch.setattr(audit_logger, "propagate", False)  # caught once, as configure_logging sets it
    audit_logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    try:
        yield Trail(caplog)
    finally:
        audit_logger.removeHandler(caplog.handler)


@pytest.fixture
def server(archive: EmbeddedArchive) -> Iterator[DicomWebServer]:
    router = dicomweb_router(archive.query_service, archive.retrieve_service, store_service=archive.store_service,
                             delete_service=archive.delete_service)
    with DicomWebServer(router, port=0, tokens={TOKEN: "write"}) as running:
        yield running


def http(url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None,
         token: str | None = TOKEN) -> int:
    all_headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
    request = urllib.request.Request(url, data=body, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as error:
        error.read()
        return int(error.code)


def test_dicomweb_store_query_retrieve_delete_are_each_one_record(server: DicomWebServer, trail: Trail) -> None:
    study, series, sop = new_uid(), new_uid(), new_uid()
    data = clone("CT_small.dcm", StudyInstanceUID=study, SeriesInstanceUID=series, SOPInstanceUID=sop,
                 PatientName=PATIENT)
    body = b"".join(multipart.multipart_body([multipart.Part("application/dicom", [data])], BOUNDARY))
    stored = http(f"{server.url}/studies", "POST", body,
                  {"Content-Type": f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"'})
    searched = http(f"{server.url}/studies?PatientName={PATIENT.replace('^', '%5E')}&limit=5")
    retrieved = http(f"{server.url}/studies/{study}/series/{series}/instances/{sop}",
                     headers={"Accept": "application/dicom; transfer-syntax=*"})
    deleted = http(f"{server.url}/studies/{study}", "DELETE")
    http(f"{server.url.removesuffix('/dicom-web')}/health", token=None)
    unauthenticated = http(f"{server.url}/studies?PatientID=PID-4711", token=None)

    entries = trail.entries()
    assert [(e["action"], e["what"]["route"]) for e in entries] == [
        ("store", "stow-studies"), ("query", "qido-study"), ("retrieve", "wado-instance"),
        ("delete", "delete-study"), ("query", "qido-study"),
    ]  # the health check is not audited
    store, query, retrieve, delete, refused = entries
    assert store["status"] == stored == 200 and store["outcome"] == "success"
    assert query["what"]["parameters"] == ["PatientName", "limit"] and query["what"]["level"] == "STUDY"
    assert query["status"] == searched == 200
    assert retrieve["status"] == retrieved and retrieve["what"]["SOPInstanceUID"] == sop
    assert retrieve["what"]["StudyInstanceUID"] == study and retrieve["what"]["SeriesInstanceUID"] == series
    assert delete["status"] == deleted and delete["what"] == {"route": "delete-study", "StudyInstanceUID": study,
                                                              "parameters": []}
    assert all(e["who"] == token_id(TOKEN) and e["protocol"] == "DICOMweb" for e in entries[:4])
    assert all(e["address"] == "127.0.0.1" for e in entries)
    assert refused["who"] == "anonymous" and refused["status"] == unauthenticated == 401
    assert refused["outcome"] == "failure" and refused["what"]["parameters"] == ["PatientID"]
    text = trail.text()
    assert TOKEN not in text and "Auditee" not in text and "Patricia" not in text and "PID-4711" not in text


def test_dimse_store_and_find_name_the_calling_ae_and_keys_not_values(
    running_gateway: RunningGateway, tmp_path: Path, trail: Trail
) -> None:
    study, sop = new_uid(), new_uid()
    path = tmp_path / "ct.dcm"
    path.write_bytes(clone("CT_small.dcm", StudyInstanceUID=study, SOPInstanceUID=sop, PatientName=PATIENT))
    assert store_files(running_gateway.port, [path], calling="MODALITY1") == [0]
    running_gateway.wait_indexed(1)

    ae = scu("VIEWER1")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", running_gateway.port, ae_title="SKYPACS")
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.PatientName = PATIENT
    identifier.StudyInstanceUID = ""
    try:
        statuses = [int(status.Status) for status, _ in assoc.send_c_find(identifier,
                                                                          StudyRootQueryRetrieveInformationModelFind)]
    finally:
        assoc.release()
    assert statuses == [0xFF00, 0x0000]

    [store] = trail.entries("store")
    assert store["who"] == "MODALITY1" and store["protocol"] == "DIMSE" and store["address"].startswith("127.0.0.1:")
    assert store["what"]["SOPInstanceUID"] == sop and store["what"]["StudyInstanceUID"] == study
    assert store["status"] == "0x0000" and store["outcome"] == "success"
    [query] = trail.entries("query")
    assert query["who"] == "VIEWER1" and query["what"]["level"] == "STUDY"
    assert query["what"]["keys"] == ["PatientName", "StudyInstanceUID"] and query["what"]["matches"] == 1
    assert query["status"] == "0x0000" and query["outcome"] == "success"
    assert "Auditee" not in trail.text()


def test_a_c_get_is_one_record_with_its_counts(settings: Settings, tmp_path: Path, trail: Trail) -> None:
    archive = EmbeddedArchive(settings)
    gateway = Gateway(GatewayOptions(ae_title="SKYPACS", host="127.0.0.1", port=0), archive.store_service,
                      query_service=archive.query_service,
                      retrieve_sources=RetrieveSources(archive.catalog, archive.store, archive.query_service))
    gateway.start()
    stop = threading.Event()
    indexer = threading.Thread(target=archive.indexer().run, args=(stop,), kwargs={"idle_sleep": 0.02}, daemon=True)
    indexer.start()
    try:
        study, series = new_uid(), new_uid()
        paths = []
        for index in range(2):
            path = tmp_path / f"ct{index}.dcm"
            path.write_bytes(clone("CT_small.dcm", StudyInstanceUID=study, SeriesInstanceUID=series,
                                   SOPInstanceUID=new_uid()))
            paths.append(path)
        assert store_files(gateway.port, paths) == [0, 0]
        RunningGateway(gateway, archive, archive.indexer()).wait_indexed(2)

        ae = scu("GETSCU")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian, pydicom.uid.ImplicitVRLittleEndian])
        assoc = ae.associate("127.0.0.1", gateway.port, ae_title="SKYPACS",
                             ext_neg=[build_role(CTImageStorage, scp_role=True)],
                             evt_handlers=[(evt.EVT_C_STORE, lambda _event: 0)])
        assert assoc.is_established
        request = Dataset()
        request.QueryRetrieveLevel = "STUDY"
        request.StudyInstanceUID = study
        try:
            final = [int(status.Status) for status, _ in assoc.send_c_get(request,
                                                                           StudyRootQueryRetrieveInformationModelGet)][-1]
        finally:
            assoc.release()
    finally:
        gateway.stop(timeout=5)
        stop.set()
        indexer.join(10)
    assert final == 0x0000
    [retrieve] = trail.entries("retrieve")
    assert retrieve["who"] == "GETSCU" and retrieve["status"] == "0x0000" and retrieve["outcome"] == "success"
    assert retrieve["what"] == {"level": "STUDY", "StudyInstanceUID": study, "completed": 2, "failed": 0,
                                "warning": 0}
