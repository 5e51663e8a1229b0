"""Per-AE DIMSE permissions against a running gateway, with pynetdicom SCUs: what each calling AE may
do, the 0x0124 "Refused: Not Authorized" it gets otherwise, and that a refused store stores nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, StoragePresentationContexts, build_role, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from skypacs.config import Settings
from skypacs.dimse.permissions import Permissions
from skypacs.dimse.retrieve import RetrieveSources
from skypacs.dimse.server import Gateway, GatewayOptions
from skypacs.embedded import EmbeddedArchive
from tests.conftest import RunningGateway, dicom_file
from tests.dicom_files import new_uid, scu

NOT_AUTHORIZED = 0x0124
PERMISSIONS = {"CT01": ["store"], "READER": ["find"], "WORKSTATION": ["find", "move", "get"], "*": []}


@dataclass
class Running:
    gateway: RunningGateway
    study: str


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    archive = EmbeddedArchive(Settings(data_dir=tmp_path_factory.mktemp("permissions") / "data"))
    gateway = Gateway(
        GatewayOptions(ae_title="SKYPACS", host="127.0.0.1", port=0, destinations={"READER": ("127.0.0.1", 9)},
                       permissions=Permissions.from_config(PERMISSIONS)),
        archive.store_service,
        query_service=archive.query_service,
        retrieve_sources=RetrieveSources(archive.catalog, archive.store, archive.query_service),
    )
    gateway.start()
    stop = threading.Event()
    indexer = archive.indexer()
    thread = threading.Thread(target=indexer.run, args=(stop,), kwargs={"idle_sleep": 0.02}, daemon=True)
    thread.start()
    try:
        study = new_uid()
        assert _store("CT01", gateway.port, study).Status == 0
        running = RunningGateway(gateway, archive, indexer)
        running.wait_indexed(1)
        yield Running(running, study)
    finally:
        gateway.stop(timeout=5)
        stop.set()
        thread.join(10)


def _ct(study: str) -> Dataset:
    ds = pydicom.dcmread(dicom_file("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, new_uid(), new_uid()
    return ds


def _store(calling: str, port: int, study: str) -> Dataset:
    ae = scu(calling)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="SKYPACS")
    assert assoc.is_established
    try:
        return assoc.send_c_store(_ct(study))
    finally:
        assoc.release()


def _study_query(study: str) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study
    return query


def _find(calling: str, port: int, study: str) -> list[tuple[Dataset, Dataset | None]]:
    ae = scu(calling)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="SKYPACS")
    assert assoc.is_established
    try:
        return list(assoc.send_c_find(_study_query(study), StudyRootQueryRetrieveInformationModelFind))
    finally:
        assoc.release()


def _get(calling: str, port: int, study: str) -> tuple[list[Dataset], list[str]]:
    received: list[str] = []

    def handle_store(event: evt.Event) -> int:
        received.append(str(cast(C_STORE, event.request).AffectedSOPInstanceUID))
        return 0

    ae = scu(calling)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="SKYPACS", ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, handle_store)])
    assert assoc.is_established
    try:
        statuses = [status for status, _ in assoc.send_c_get(_study_query(study),
                                                             StudyRootQueryRetrieveInformationModelGet)]
    finally:
        assoc.release()
    return statuses, received


def _move(calling: str, port: int, study: str) -> list[Dataset]:
    ae = scu(calling)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", port, ae_title="SKYPACS")
    assert assoc.is_established
    try:
        return [status for status, _ in assoc.send_c_move(_study_query(study), "READER",
                                                           StudyRootQueryRetrieveInformationModelMove)]
    finally:
        assoc.release()


def test_an_ae_allowed_only_find_cannot_store_and_nothing_is_stored(running: Running) -> None:
    archive = running.gateway.archive
    before = archive.catalog.count_instances(), archive.queue.counts().pending
    status = _store("READER", running.gateway.port, running.study)
    assert status.Status == NOT_AUTHORIZED
    assert "not permitted to store" in status.ErrorComment
    running.gateway.wait_queue_empty()
    assert (archive.catalog.count_instances(), archive.queue.counts().pending) == before
    assert len(list(Path(archive.settings.data_dir).rglob("*.dcm"))) == before[0]


def test_an_ae_allowed_find_finds(running: Running) -> None:
    responses = _find("READER", running.gateway.port, running.study)
    assert [int(status.Status) for status, _ in responses] == [0xFF00, 0x0000]
    assert responses[0][1] is not None and responses[0][1].StudyInstanceUID == running.study


def test_an_ae_allowed_only_store_cannot_find(running: Running) -> None:
    responses = _find("CT01", running.gateway.port, running.study)
    assert len(responses) == 1
    status, identifier = responses[0]
    assert status.Status == NOT_AUTHORIZED and identifier is None
    assert "not permitted to find" in status.ErrorComment


def test_an_ae_allowed_only_find_cannot_get_and_receives_nothing(running: Running) -> None:
    statuses, received = _get("READER", running.gateway.port, running.study)
    assert [int(status.Status) for status in statuses] == [NOT_AUTHORIZED]
    assert "not permitted to get" in statuses[0].ErrorComment
    assert "NumberOfCompletedSuboperations" not in statuses[0]
    assert received == []


def test_an_ae_allowed_get_gets(running: Running) -> None:
    statuses, received = _get("WORKSTATION", running.gateway.port, running.study)
    assert int(statuses[-1].Status) == 0x0000
    assert len(received) == 1


def test_an_ae_allowed_only_find_cannot_move(running: Running) -> None:
    statuses = _move("READER", running.gateway.port, running.study)
    assert [int(status.Status) for status in statuses] == [NOT_AUTHORIZED]
    assert "not permitted to move" in statuses[0].ErrorComment


def test_an_ae_without_an_entry_gets_the_empty_star_entry_but_may_echo(running: Running) -> None:
    assert _store("STRANGER", running.gateway.port, running.study).Status == NOT_AUTHORIZED
    assert _find("STRANGER", running.gateway.port, running.study)[0][0].Status == NOT_AUTHORIZED
    ae: AE = scu("STRANGER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", running.gateway.port, ae_title="SKYPACS")
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0
    finally:
        assoc.release()


def test_storage_contexts_are_unchanged_for_every_ae(running: Running) -> None:
    """Permissions act on requests, not on association negotiation: a refused AE still associates."""
    ae = scu("READER")
    ae.requested_contexts = StoragePresentationContexts[:10]
    assoc = ae.associate("127.0.0.1", running.gateway.port, ae_title="SKYPACS")
    assert assoc.is_established
    assoc.release()
