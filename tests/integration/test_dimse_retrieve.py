"""C-MOVE and C-GET against the gateway with real clients: DCMTK movescu/getscu into DCMTK storescp,
and pynetdicom SCUs and storage SCPs where the exact statuses, counts and received bytes matter."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import boto3
import numpy as np
import pydicom
import pytest
from moto import mock_aws
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import pixel_array
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, build_role, evt
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode, split_dataset
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from skypacs.adapters.dynamodb_catalog import create_catalog_table
from skypacs.aws import AwsArchive
from skypacs.config import ENV_BUCKET, ENV_CATALOG_TABLE, Settings
from skypacs.dimse.retrieve import RetrieveSources, dataset_offset, encode_store_command
from skypacs.dimse.server import Gateway, GatewayOptions
from skypacs.embedded import EmbeddedArchive
from skypacs.errors import BackendError
from skypacs.parsing import parse_bytes
from skypacs.ports import ObjectInfo, ObjectStore
from tests.conftest import RunningGateway, dcmtk, dicom_file
from tests.dicom_files import clone, identity, new_uid, scu, split_part10, store_files
from tests.integration.test_serve import Server

PENDING = {0xFF00, 0xFF01}
MOVE = {"P": PatientRootQueryRetrieveInformationModelMove, "S": StudyRootQueryRetrieveInformationModelMove}
GET = {"P": PatientRootQueryRetrieveInformationModelGet, "S": StudyRootQueryRetrieveInformationModelGet}
COMPRESSED = {"jpeg": "SC_rgb_jpeg_dcmtk.dcm", "j2k": "JPEG2000.dcm", "rle": "emri_small_RLE.dcm"}
US_MULTIFRAME = "color3d_jpeg_baseline.dcm"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}  # DCMTK leaves Nagle's algorithm on unless told


def run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [dcmtk(tool), *args], capture_output=True, text=True, timeout=30, env=DCMTK_ENV, check=False
    )
    result.stdout += result.stderr
    return result


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ------------------------------------------------------------------------------------ storage SCPs


class StoreScp:
    """DCMTK storescp writing what it receives, bit-preserving, into a folder emptied per test."""

    def __init__(self, folder: Path, ae_title: str, *options: str) -> None:
        self.folder, self.ae_title, self.options = folder, ae_title, options
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [dcmtk("storescp"), "-aet", self.ae_title, "+B", "-od", str(self.folder), *self.options, str(self.port)]
        self.process = subprocess.Popen(command, env=DCMTK_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        raise RuntimeError("storescp did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)

    def clear(self) -> None:
        for path in self.folder.iterdir():
            path.unlink()

    def received(self) -> dict[str, Path]:
        """SOP Instance UID -> file, for every object received since the last clear()."""
        return {identity(path)[2]: path for path in self.folder.iterdir() if path.is_file()}


@dataclass
class CaptureScp:
    """A pynetdicom storage SCP that keeps the dataset bytes exactly as they arrived, and the transfer
    syntax of their context; ``delay`` slows each C-STORE (to C-CANCEL a retrieve in flight)."""

    ae_title: str
    transfer_syntaxes: list[str]
    delay: float = 0.0
    received: dict[str, tuple[str, bytes]] = field(default_factory=dict)

    def start(self) -> None:
        ae = AE(ae_title=self.ae_title)
        for context in StoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, self.transfer_syntaxes)
        ae.add_supported_context("1.2.840.10008.5.1.4.1.1.4.1", self.transfer_syntaxes)  # Enhanced MR
        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)])
        self.port = int(self.server.server_address[1])

    def _store(self, event: Any) -> int:
        time.sleep(self.delay)
        syntax = str(event.context.transfer_syntax)
        self.received[str(event.request.AffectedSOPInstanceUID)] = (syntax, event.request.DataSet.getvalue())
        return 0

    def stop(self) -> None:
        self.server.shutdown()


# ------------------------------------------------------------------------------------------ archive


@dataclass
class Study:
    patient_id: str
    uid: str
    series: dict[str, list[str]]  # Series Instance UID -> SOP Instance UIDs

    @property
    def sops(self) -> list[str]:
        return [sop for sops in self.series.values() for sop in sops]


@dataclass
class Original:
    path: Path
    study: str
    series: str
    sop: str


@dataclass
class Archive:
    gateway: RunningGateway
    dcmtk: StoreScp  # uncompressed only (storescp's default)
    dcmtk_all: StoreScp  # storescp +xa: every syntax DCMTK knows
    capture_all: CaptureScp
    capture_jpeg: CaptureScp  # accepts JPEG Baseline only
    slow: CaptureScp
    first: Study  # patient RETRIEVE-A: CT series of 3, MR series of 2
    second: Study  # patient RETRIEVE-A: one CT
    other: Study  # patient RETRIEVE-B: one CT
    compressed: dict[str, Original]
    us: Original

    @property
    def port(self) -> int:
        return self.gateway.port


def _study(folder: Path, patient_id: str, series: list[tuple[str, int]]) -> tuple[Study, list[Path]]:
    study = Study(patient_id, new_uid(), {})
    paths = []
    for name, count in series:
        series_uid = new_uid()
        study.series[series_uid] = []
        for _ in range(count):
            sop = new_uid()
            path = folder / f"{sop}.dcm"
            path.write_bytes(clone(name, PatientID=patient_id, StudyInstanceUID=study.uid,
                                   SeriesInstanceUID=series_uid, SOPInstanceUID=sop))
            study.series[series_uid].append(sop)
            paths.append(path)
    return study, paths


def _original(name: str) -> Original:
    path = dicom_file(name)
    study, series, sop, _ = identity(path)
    return Original(path, study, series, sop)


def start_gateway(
    archive: EmbeddedArchive, *, destinations: dict[str, tuple[str, int]] | None = None,
    sources: RetrieveSources | None = None, indexer: bool = True, **options: Any,
) -> tuple[Gateway, threading.Event, threading.Thread]:
    """A gateway with C-MOVE/C-GET (and its indexer on a thread), like conftest's ``make_gateway``."""
    gateway = Gateway(
        GatewayOptions(ae_title="SKYPACS", host="127.0.0.1", port=0, destinations=destinations or {}, **options),
        archive.store_service,
        query_service=archive.query_service,
        retrieve_sources=sources or RetrieveSources(archive.catalog, archive.store, archive.query_service),
    )
    gateway.start()
    stop = threading.Event()
    if indexer:
        thread = threading.Thread(target=archive.indexer().run, args=(stop,), kwargs={"idle_sleep": 0.02}, daemon=True)
    else:
        thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()
    return gateway, stop, thread


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    root = tmp_path_factory.mktemp("retrieve")
    dcmtk_plain = StoreScp(root / "dcmtk", "DCMTK")
    dcmtk_all = StoreScp(root / "dcmtk-all", "DCMTKALL", "+xa")
    capture_all = CaptureScp("CAPTURE", list(ALL_TRANSFER_SYNTAXES))
    capture_jpeg = CaptureScp("JPEGONLY", [JPEGBaseline8Bit])
    slow = CaptureScp("SLOW", [ExplicitVRLittleEndian, ImplicitVRLittleEndian], delay=0.1)
    scps: list[Any] = [dcmtk_plain, dcmtk_all, capture_all, capture_jpeg, slow]
    for scp in scps:
        scp.start()
    store = EmbeddedArchive(Settings(data_dir=root / "data"))
    destinations = {scp.ae_title: ("127.0.0.1", scp.port) for scp in scps}
    gateway, stop, thread = start_gateway(store, destinations=destinations)
    running = RunningGateway(gateway, store, store.indexer())
    try:
        folder = root / "in"
        folder.mkdir()
        first, first_files = _study(folder, "RETRIEVE-A", [("CT_small.dcm", 3), ("MR_small.dcm", 2)])
        second, second_files = _study(folder, "RETRIEVE-A", [("CT_small.dcm", 1)])
        other, other_files = _study(folder, "RETRIEVE-B", [("CT_small.dcm", 1)])
        compressed = {kind: _original(name) for kind, name in COMPRESSED.items()}
        us = _original(US_MULTIFRAME)
        files = [*first_files, *second_files, *other_files, *(o.path for o in compressed.values()), us.path]
        assert set(store_files(gateway.port, files)) == {0}
        running.wait_indexed(len(files))
        yield Archive(running, dcmtk_plain, dcmtk_all, capture_all, capture_jpeg, slow, first, second, other,
                      compressed, us)
    finally:
        gateway.stop(timeout=5)
        stop.set()
        thread.join(10)
        for scp in scps:
            scp.stop()


@pytest.fixture(autouse=True)
def empty_destinations(request: pytest.FixtureRequest) -> None:
    if "archive" in request.fixturenames:
        shop: Archive = request.getfixturevalue("archive")
        for scp in (shop.dcmtk, shop.dcmtk_all):
            scp.clear()
        for capture in (shop.capture_all, shop.capture_jpeg, shop.slow):
            capture.received.clear()


# ------------------------------------------------------------------------------------------ helpers


def keys(level: str, **values: object) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def dcmtk_keys(ds: Dataset) -> list[str]:
    args = []
    for element in ds:
        value = element.value if isinstance(element.value, str) else "\\".join(element.value)
        args += ["-k", f"{element.keyword}={value}"]
    return args


@dataclass
class Outcome:
    responses: list[Dataset]

    @property
    def final(self) -> Dataset:
        return self.responses[-1]

    @property
    def status(self) -> int:
        return int(self.final.Status)

    @property
    def pending(self) -> list[Dataset]:
        return [r for r in self.responses if int(r.Status) in PENDING]

    def count(self, what: str) -> int:
        return int(self.final.get(f"NumberOf{what}Suboperations", 0) or 0)


def _collect(responses: Iterator[tuple[Dataset, Dataset | None]], failed: list[str]) -> Outcome:
    collected = []
    for status, identifier in responses:
        assert status and "Status" in status, "no response from the gateway"
        collected.append(status)
        if identifier is not None and "FailedSOPInstanceUIDList" in identifier:
            value = identifier.FailedSOPInstanceUIDList
            failed[:] = [str(v) for v in ([value] if isinstance(value, str) else value) if str(v)]
    return Outcome(collected)


def move(port: int, ds: Dataset, destination: str, model: str = "S", *, calling: str = "MOVESCU",
         failed: list[str] | None = None, cancel_after: int | None = None) -> Outcome:
    ae = scu(calling)
    ae.add_requested_context(MOVE[model])
    assoc = ae.associate("127.0.0.1", port, ae_title="SKYPACS")
    assert assoc.is_established
    try:
        responses = assoc.send_c_move(ds, destination, MOVE[model], msg_id=7)
        if cancel_after is None:
            return _collect(responses, failed if failed is not None else [])
        collected = []
        for status, _ in responses:
            collected.append(status)
            if len(collected) == cancel_after:
                assoc.send_c_cancel(7, assoc.accepted_contexts[0].context_id)
        return Outcome(collected)
    finally:
        assoc.release()


def get(port: int, ds: Dataset, model: str = "S", *, contexts: list[tuple[str, list[str]]] | None = None,
        failed: list[str] | None = None) -> tuple[Outcome, dict[str, tuple[str, bytes]]]:
    """C-GET with storage contexts in the SCP role (default: CT, MR, SC in Explicit VR Little Endian)."""
    received: dict[str, tuple[str, bytes]] = {}

    def handle_store(event: Any) -> int:
        received[str(event.request.AffectedSOPInstanceUID)] = (
            str(event.context.transfer_syntax), event.request.DataSet.getvalue()
        )
        return 0

    ae = scu("GETSCU")
    ae.add_requested_context(GET[model])
    contexts = contexts or [(uid, [ExplicitVRLittleEndian]) for uid in (CTImageStorage, MR_IMAGE, SC_IMAGE)]
    roles = []
    for sop_class, syntaxes in contexts:
        ae.add_requested_context(sop_class, syntaxes)
        roles.append(build_role(sop_class, scp_role=True))
    assoc = ae.associate("127.0.0.1", port, ae_title="SKYPACS", ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, handle_store)])
    assert assoc.is_established
    try:
        outcome = _collect(assoc.send_c_get(ds, GET[model]), failed if failed is not None else [])
    finally:
        assoc.release()
    return outcome, received


MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
SC_IMAGE = "1.2.840.10008.5.1.4.1.1.7"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
US_MULTIFRAME_IMAGE = "1.2.840.10008.5.1.4.1.1.3.1"


def dataset_bytes(path: Path) -> bytes:
    return split_part10(path.read_bytes())[1]


def decode(data: bytes, syntax: str) -> Dataset:
    """A dataset received over the network (no file meta) in ``syntax``."""
    uid = pydicom.uid.UID(syntax)
    ds = pydicom.filereader.read_dataset(io.BytesIO(data), uid.is_implicit_VR, uid.is_little_endian)
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid
    return ds


# ------------------------------------------------------------------------------ DCMTK movescu/getscu


def _level_keys(shop: Archive, model: str, level: str) -> tuple[Dataset, set[str]]:
    study = shop.first
    series, sops = next(iter(study.series.items()))
    patient = {"PatientID": study.patient_id} if model == "P" else {}
    if level == "STUDY":
        return keys("STUDY", **patient, StudyInstanceUID=study.uid), set(study.sops)
    if level == "SERIES":
        return keys("SERIES", **patient, StudyInstanceUID=study.uid, SeriesInstanceUID=series), set(sops)
    return keys("IMAGE", **patient, StudyInstanceUID=study.uid, SeriesInstanceUID=series,
                SOPInstanceUID=sops[:2]), set(sops[:2])


@pytest.mark.parametrize("level", ["STUDY", "SERIES", "IMAGE"])
@pytest.mark.parametrize("model", ["P", "S"])
def test_movescu_into_storescp(archive: Archive, model: str, level: str) -> None:
    ds, expected = _level_keys(archive, model, level)
    result = run("movescu", "-v", f"-{model}", "-aet", "MOVESCU", "-aec", "SKYPACS", "-aem", "DCMTK",
                 *dcmtk_keys(ds), "127.0.0.1", str(archive.port))
    assert result.returncode == 0 and "Final Move Response (Success)" in result.stdout, result.stdout
    received = archive.dcmtk.received()
    assert set(received) == expected
    for sop, path in received.items():  # sent as stored: the very same dataset bytes
        assert dataset_bytes(path) == dataset_bytes(archive.gateway.archive.store.local_path(
            archive.gateway.archive.catalog.get_instance(sop).key))  # type: ignore[union-attr]


def test_patient_level_move_sends_every_study_of_the_patient(archive: Archive) -> None:
    outcome = move(archive.port, keys("PATIENT", PatientID="RETRIEVE-A"), "CAPTURE", "P")
    assert outcome.status == 0 and outcome.count("Completed") == 6
    assert set(archive.capture_all.received) == set(archive.first.sops) | set(archive.second.sops)


def test_unknown_destination_is_a801(archive: Archive, caplog: pytest.LogCaptureFixture) -> None:
    ds = keys("STUDY", StudyInstanceUID=archive.first.uid)
    assert move(archive.port, ds, "NOWHERE").status == 0xA801
    assert "MOVESCU" in caplog.text and "NOWHERE" in caplog.text
    result = run("movescu", "-v", "-S", "-aet", "MOVESCU", "-aec", "SKYPACS", "-aem", "NOWHERE",
                 *dcmtk_keys(ds), "127.0.0.1", str(archive.port))
    assert "Final Move Response (Refused: MoveDestinationUnknown)" in result.stdout, result.stdout


def test_getscu_study_into_a_folder(archive: Archive, tmp_path: Path) -> None:
    ds = keys("STUDY", StudyInstanceUID=archive.first.uid)
    result = run("getscu", "-v", "-S", "-aet", "GETSCU", "-aec", "SKYPACS", "-od", str(tmp_path),
                 *dcmtk_keys(ds), "127.0.0.1", str(archive.port))
    assert result.returncode == 0 and "Received C-GET Response (Success)" in result.stdout, result.stdout
    assert {identity(path)[2] for path in tmp_path.iterdir()} == set(archive.first.sops)


def test_storescu_still_stores_on_a_gateway_that_retrieves(archive: Archive, tmp_path: Path) -> None:
    path = tmp_path / "ct.dcm"
    sop = new_uid()
    path.write_bytes(clone("CT_small.dcm", SOPInstanceUID=sop, PatientID="RETRIEVE-C"))
    result = run("storescu", "-aec", "SKYPACS", "127.0.0.1", str(archive.port), str(path))
    assert result.returncode == 0, result.stdout
    deadline = time.monotonic() + 10
    while archive.gateway.archive.catalog.get_instance(sop) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert archive.gateway.archive.catalog.get_instance(sop) is not None


# ----------------------------------------------------------------------- counts, cancel, bad identifiers


def test_c_get_pending_responses_count_down(archive: Archive) -> None:
    series, sops = next(iter(archive.first.series.items()))
    outcome, received = get(archive.port, keys("SERIES", StudyInstanceUID=archive.first.uid, SeriesInstanceUID=series))
    assert [int(r.NumberOfRemainingSuboperations) for r in outcome.pending] == [2, 1, 0]
    assert [int(r.NumberOfCompletedSuboperations) for r in outcome.pending] == [1, 2, 3]
    assert outcome.status == 0 and outcome.count("Completed") == 3 and outcome.count("Failed") == 0
    assert set(received) == set(sops)


def test_c_move_pending_responses_count_down(archive: Archive) -> None:
    outcome = move(archive.port, keys("STUDY", StudyInstanceUID=archive.first.uid), "CAPTURE")
    assert [int(r.NumberOfRemainingSuboperations) for r in outcome.pending] == [4, 3, 2, 1, 0]
    assert outcome.status == 0 and outcome.count("Completed") == 5
    assert set(archive.capture_all.received) == set(archive.first.sops)


def test_nothing_stored_is_success_with_no_sub_operations(archive: Archive) -> None:
    outcome = move(archive.port, keys("STUDY", StudyInstanceUID="1.2.3.999"), "CAPTURE")
    assert outcome.status == 0 and outcome.count("Completed") == 0 and not archive.capture_all.received


def test_c_cancel_stops_a_move(archive: Archive) -> None:
    outcome = move(archive.port, keys("PATIENT", PatientID="RETRIEVE-A"), "SLOW", "P", cancel_after=1)
    assert outcome.status == 0xFE00
    completed = outcome.count("Completed")
    assert 1 <= completed < 6 and outcome.count("Remaining") == 6 - completed
    assert len(archive.slow.received) == completed


BAD_IDENTIFIERS = [
    (keys("SERIES", SeriesInstanceUID="1.2.3.4"), "StudyInstanceUID is required"),
    (keys("PATIENT", PatientID="RETRIEVE-A"), "QueryRetrieveLevel 'PATIENT' is not one of"),
    (keys("STUDY", StudyInstanceUID="1.2.3", PatientName="X"), None),  # fine: not refused
    (keys("SERIES", StudyInstanceUID=["1.2.3", "1.2.4"], SeriesInstanceUID="1.2.3.4"), "StudyInstanceUID must be one"),
    (keys("STUDY", StudyInstanceUID="1.2.*"), "StudyInstanceUID: wildcards"),
    (keys("FRAME", StudyInstanceUID="1.2.3"), "QueryRetrieveLevel 'FRAME'"),
]


@pytest.mark.parametrize(("ds", "comment"), BAD_IDENTIFIERS)
def test_bad_identifiers_are_refused_with_a900(
    archive: Archive, ds: Dataset, comment: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    outcomes = [move(archive.port, ds, "CAPTURE"), get(archive.port, ds)[0]]
    for outcome in outcomes:
        assert len(outcome.responses) == 1
        if comment is None:
            assert outcome.status == 0
            continue
        assert outcome.status == 0xA900
        assert comment in str(outcome.final.ErrorComment)
        assert "NumberOfFailedSuboperations" not in outcome.final  # nothing was attempted
    assert not archive.capture_all.received
    assert "Unknown Move Destination" not in caplog.text  # the log says why, not pynetdicom's shortcut


# --------------------------------------------------------------------------- transfer syntaxes


@pytest.mark.parametrize("kind", list(COMPRESSED))
def test_compressed_sent_as_stored_when_accepted(archive: Archive, kind: str) -> None:
    original = archive.compressed[kind]
    ds = keys("IMAGE", StudyInstanceUID=original.study, SeriesInstanceUID=original.series,
              SOPInstanceUID=original.sop)
    assert move(archive.port, ds, "CAPTURE").status == 0
    syntax, data = archive.capture_all.received[original.sop]
    meta, body = split_part10(original.path.read_bytes())
    assert syntax == meta.TransferSyntaxUID and data == body
    assert move(archive.port, ds, "DCMTKALL").status == 0
    assert dataset_bytes(archive.dcmtk_all.received()[original.sop]) == body


@pytest.mark.parametrize("kind", list(COMPRESSED))
def test_compressed_decompressed_for_an_uncompressed_destination(archive: Archive, kind: str) -> None:
    original = archive.compressed[kind]
    ds = keys("IMAGE", StudyInstanceUID=original.study, SeriesInstanceUID=original.series,
              SOPInstanceUID=original.sop)
    assert move(archive.port, ds, "DCMTK").status == 0
    received = pydicom.dcmread(archive.dcmtk.received()[original.sop])
    assert received.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert received.SOPInstanceUID == original.sop  # lossless change: the same instance
    expected = pydicom.dcmread(original.path).pixel_array
    assert np.array_equal(received.pixel_array, expected)


def test_instances_that_cannot_be_sent_are_failures(archive: Archive, caplog: pytest.LogCaptureFixture) -> None:
    """JPEGONLY takes JPEG Baseline only: the JPEG object goes, the RLE one cannot (no JPEG encoder)."""
    jpeg, rle = archive.compressed["jpeg"], archive.compressed["rle"]
    failed: list[str] = []
    outcome = move(archive.port, keys("STUDY", StudyInstanceUID=[jpeg.study, rle.study]), "JPEGONLY", failed=failed)
    assert outcome.status == 0xB000  # sub-operations complete, one or more failures
    assert (outcome.count("Completed"), outcome.count("Failed")) == (1, 1)
    assert failed == [rle.sop] and set(archive.capture_jpeg.received) == {jpeg.sop}
    assert "1.2.840.10008.1.2.5" in caplog.text and rle.sop in caplog.text  # what was stored, which instance


def test_missing_objects_are_failed_sub_operations(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    store = EmbeddedArchive(settings)
    study, sops = new_uid(), []
    for _ in range(2):
        sops.append(new_uid())
        data = clone("CT_small.dcm", StudyInstanceUID=study, SOPInstanceUID=sops[-1])
        key = parse_bytes(data).key
        store.store.put(key, data)
        store.ingest_service.ingest(key)
    gone = store.catalog.get_instance(sops[0])
    assert gone is not None
    store.store.local_path(gone.key).unlink()
    gateway, stop, thread = start_gateway(store, indexer=False)
    try:
        failed: list[str] = []
        outcome, received = get(gateway.port, keys("STUDY", StudyInstanceUID=study), failed=failed)
        assert outcome.status == 0xB000 and failed == [sops[0]] and set(received) == {sops[1]}
        store.store.local_path(store.catalog.get_instance(sops[1]).key).unlink()  # type: ignore[union-attr]
        outcome, received = get(gateway.port, keys("STUDY", StudyInstanceUID=study), failed=failed)
        assert outcome.status == 0xA702 and sorted(failed) == sorted(sops) and not received  # all failed
    finally:
        gateway.stop(timeout=5)
        stop.set()
        thread.join(10)
    assert f"SOP Instance {sops[0]} not sent" in caplog.text


def test_c_get_sends_as_stored_or_decompressed_against_the_scu_contexts(archive: Archive) -> None:
    """Both objects are Secondary Capture; the SCU takes SC in JPEG Baseline or Explicit VR LE: the JPEG
    one goes as stored, the JPEG 2000 one is decompressed."""
    jpeg, j2k = archive.compressed["jpeg"], archive.compressed["j2k"]
    ds = keys("STUDY", StudyInstanceUID=[jpeg.study, j2k.study])
    contexts = [(SC_IMAGE, [JPEGBaseline8Bit]), (SC_IMAGE, [ExplicitVRLittleEndian])]
    outcome, received = get(archive.port, ds, contexts=contexts)
    assert outcome.status == 0 and outcome.count("Completed") == 2
    assert received[jpeg.sop] == (JPEGBaseline8Bit, split_part10(jpeg.path.read_bytes())[1])
    syntax, data = received[j2k.sop]
    assert syntax == ExplicitVRLittleEndian
    assert np.array_equal(decode(data, syntax).pixel_array, pydicom.dcmread(j2k.path).pixel_array)


def test_c_get_without_role_selection_sends_nothing(archive: Archive) -> None:
    ae = scu("NOROLE")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])  # no SCP role proposed
    assoc = ae.associate("127.0.0.1", archive.port, ae_title="SKYPACS")
    try:
        failed: list[str] = []
        ds = keys("STUDY", StudyInstanceUID=archive.second.uid)
        outcome = _collect(assoc.send_c_get(ds, StudyRootQueryRetrieveInformationModelGet), failed)
    finally:
        assoc.release()
    assert outcome.status == 0xA702 and failed == archive.second.sops


def test_multiframe_ultrasound_round_trip(archive: Archive) -> None:
    us = archive.us
    ds = keys("IMAGE", StudyInstanceUID=us.study, SeriesInstanceUID=us.series, SOPInstanceUID=us.sop)
    body = split_part10(us.path.read_bytes())[1]
    assert move(archive.port, ds, "DCMTKALL").status == 0
    assert dataset_bytes(archive.dcmtk_all.received()[us.sop]) == body
    outcome, received = get(archive.port, ds, contexts=[(US_MULTIFRAME_IMAGE, [JPEGBaseline8Bit])])
    assert outcome.status == 0 and received[us.sop] == (JPEGBaseline8Bit, body)
    assert int(pydicom.dcmread(us.path, stop_before_pixels=True).NumberOfFrames) == 120


def test_multiframe_ultrasound_decompressed_for_an_uncompressed_destination(archive: Archive) -> None:
    us = archive.us
    ds = keys("IMAGE", StudyInstanceUID=us.study, SeriesInstanceUID=us.series, SOPInstanceUID=us.sop)
    assert move(archive.port, ds, "DCMTK").status == 0
    received = archive.dcmtk.received()[us.sop]
    header = pydicom.dcmread(received, stop_before_pixels=True)
    assert header.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian and int(header.NumberOfFrames) == 120
    for frame in (0, 119):
        assert np.array_equal(pixel_array(received, index=frame), pixel_array(us.path, index=frame))


# ------------------------------------------------------------------ access, backends, object stores


def test_calling_ae_not_allowed_is_refused(settings: Settings) -> None:
    store = EmbeddedArchive(settings)
    gateway, stop, thread = start_gateway(store, allowed_aes=frozenset({"MOVESCU"}))
    try:
        for calling, established in (("INTRUDER", False), ("MOVESCU", True)):
            ae = scu(calling)
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
            assoc = ae.associate("127.0.0.1", gateway.port, ae_title="SKYPACS")
            assert assoc.is_established is established
            if established:
                assoc.release()
    finally:
        gateway.stop(timeout=5)
        stop.set()
        thread.join(10)


class BrokenCatalog:
    def __getattr__(self, name: str) -> Callable[..., Any]:
        def fail(*_args: Any, **_kwargs: Any) -> Any:
            raise BackendError("catalog table unavailable")

        return fail


def test_backend_failures_are_a701_with_a_comment(settings: Settings) -> None:
    store = EmbeddedArchive(settings)
    broken = RetrieveSources(BrokenCatalog(), store.store)  # type: ignore[arg-type]
    gateway, stop, thread = start_gateway(store, sources=broken)
    try:
        outcome, _ = get(gateway.port, keys("STUDY", StudyInstanceUID="1.2.3"))
        assert outcome.status == 0xA701 and "catalog table unavailable" in outcome.final.ErrorComment
        patient = keys("PATIENT", PatientID="P")
        outcome, _ = get(gateway.port, patient, "P")
        assert outcome.status == 0xA701 and "query index" in outcome.final.ErrorComment
    finally:
        gateway.stop(timeout=5)
        stop.set()
        thread.join(10)


class RemoteStore:
    """An ObjectStore with no local files (like S3): only streams."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.opened = 0

    def open(self, key: str) -> BinaryIO:
        self.opened += 1
        return self.inner.open(key)

    def put(self, key: str, data: bytes | BinaryIO) -> ObjectInfo:
        return self.inner.put(key, data)

    def __getattr__(self, name: str) -> Any:
        if name == "local_path":
            raise AttributeError(name)
        return getattr(self.inner, name)


def test_objects_without_a_local_file_are_spooled_and_removed(archive: Archive, tmp_path: Path) -> None:
    local = archive.gateway.archive
    remote = RemoteStore(local.store)
    spool = tmp_path / "spool"
    spool.mkdir()
    sources = RetrieveSources(local.catalog, remote, local.query_service, spool_dir=spool)  # type: ignore[arg-type]
    gateway, stop, thread = start_gateway(local, sources=sources, indexer=False)
    try:
        jpeg = archive.compressed["jpeg"]
        ds = keys("STUDY", StudyInstanceUID=[archive.first.uid, jpeg.study])
        outcome, received = get(gateway.port, ds, contexts=[
            (CTImageStorage, [ExplicitVRLittleEndian]), (MR_IMAGE, [ExplicitVRLittleEndian]),
            (SC_IMAGE, [ExplicitVRLittleEndian]),
        ])
    finally:
        gateway.stop(timeout=5)
        stop.set()
        thread.join(10)
    assert outcome.status == 0 and set(received) == {*archive.first.sops, jpeg.sop}
    assert remote.opened == 6 and list(spool.iterdir()) == []
    ct = archive.first.sops[0]
    record = local.catalog.get_instance(ct)
    assert record is not None
    assert received[ct][1] == dataset_bytes(local.store.local_path(record.key))



def test_destination_that_aborts_fails_the_rest_at_once(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    store = EmbeddedArchive(settings)
    study = new_uid()
    for _ in range(6):
        data = clone("CT_small.dcm", StudyInstanceUID=study, SOPInstanceUID=new_uid())
        key = parse_bytes(data).key
        store.store.put(key, data)
        store.ingest_service.ingest(key)
    received: list[str] = []

    def abort_on_second(event: Any) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        if len(received) == 2:
            event.assoc.abort()
        return 0

    ae = AE(ae_title="ABORTER")
    ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian])
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, abort_on_second)])
    gateway, stop, thread = start_gateway(store, destinations={"ABORTER": ("127.0.0.1", server.server_address[1])},
                                          indexer=False)
    try:
        started = time.monotonic()
        outcome = move(gateway.port, keys("STUDY", StudyInstanceUID=study), "ABORTER")
        assert time.monotonic() - started < 5  # no DIMSE timeout per instance left
    finally:
        gateway.stop(timeout=5)
        stop.set()
        thread.join(10)
        server.shutdown()
    assert outcome.status == 0xB000 and (outcome.count("Completed"), outcome.count("Failed")) == (1, 5)
    assert "the Storage SCP association was aborted" in caplog.text


def test_aws_gateway_retrieves_from_s3(fake_aws_credentials: None, tmp_path: Path) -> None:
    """The AWS gateway's sources: the DynamoDB catalog and the S3 bucket (no local files: each object is
    spooled, sent, removed); without an OpenSearch index PATIENT level is refused (0xA701)."""
    capture = CaptureScp("CAPTURE", [ExplicitVRLittleEndian, JPEGBaseline8Bit])
    capture.start()
    spool = tmp_path / "spool"
    spool.mkdir()
    with mock_aws():
        s3, dynamodb = boto3.client("s3"), boto3.client("dynamodb")
        s3.create_bucket(Bucket="objects")
        create_catalog_table(dynamodb, "catalog")
        aws = AwsArchive(environ={ENV_BUCKET: "objects", ENV_CATALOG_TABLE: "catalog"}, s3_client=s3,
                         dynamodb_client=dynamodb)
        study, originals = new_uid(), {}
        for data in [clone("CT_small.dcm", StudyInstanceUID=study, SOPInstanceUID=new_uid()) for _ in range(2)]:
            parsed = parse_bytes(data)
            aws.store.put(parsed.key, data)
            aws.ingest_service.ingest(parsed.key)
            originals[parsed.SOPInstanceUID] = split_part10(data)[1]
        gateway = Gateway(
            GatewayOptions(ae_title="SKYPACS", host="127.0.0.1", port=0,
                           destinations={"CAPTURE": ("127.0.0.1", capture.port)}),
            aws.store_service,
            retrieve_sources=RetrieveSources(aws.catalog, aws.store, spool_dir=spool),
        )
        gateway.start()
        try:
            outcome, received = get(gateway.port, keys("STUDY", StudyInstanceUID=study))
            assert outcome.status == 0 and {sop: data for sop, (_, data) in received.items()} == originals
            assert move(gateway.port, keys("STUDY", StudyInstanceUID=study), "CAPTURE").status == 0
            assert {sop: data for sop, (_, data) in capture.received.items()} == originals
            outcome, _ = get(gateway.port, keys("PATIENT", PatientID="1CT1"), "P")
            assert outcome.status == 0xA701 and "query index" in outcome.final.ErrorComment
        finally:
            gateway.stop(timeout=5)
            capture.stop()
    assert list(spool.iterdir()) == []


def test_skypacs_serve_moves_to_configured_destinations(tmp_path: Path) -> None:
    """``skypacs serve`` wires the retrieve SCPs: C-MOVE to a ``[dimse.destinations]`` AE, C-GET."""
    capture = CaptureScp("CAPTURE", [ExplicitVRLittleEndian])
    capture.start()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "skypacs.toml").write_text(f'[dimse.destinations]\nCAPTURE = "127.0.0.1:{capture.port}"\n')
    server = Server(data_dir, tmp_path / "serve.log")
    study, paths = _study(tmp_path, "SERVE", [("CT_small.dcm", 2)])
    try:
        server.start("--http-port", "-1")
        assert set(store_files(server.port, paths)) == {0}
        server.wait_instances(set(study.sops))
        assert move(server.port, keys("STUDY", StudyInstanceUID=study.uid), "CAPTURE").status == 0
        assert set(capture.received) == set(study.sops)
        outcome, received = get(server.port, keys("STUDY", StudyInstanceUID=study.uid))
        assert outcome.status == 0 and set(received) == set(study.sops)
    finally:
        if server.process is not None:
            server.terminate()
        capture.stop()


@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "image_dfl.dcm", "JPEG2000.dcm"]
)
def test_dataset_offset_is_where_pynetdicom_finds_the_dataset(name: str) -> None:
    path = dicom_file(name)
    assert dataset_offset(path) == split_dataset(path)[1]


def test_dataset_offset_of_a_file_meta_larger_than_the_block_read(tmp_path: Path) -> None:
    dataset = pydicom.dcmread(dicom_file("CT_small.dcm"))
    dataset.file_meta.PrivateInformationCreatorUID = "1.2.3.4"
    dataset.file_meta.PrivateInformation = b"x" * 4000  # group 0002 runs past the first block read
    path = tmp_path / "large-meta.dcm"
    dataset.save_as(path, enforce_file_format=True)
    assert dataset_offset(path) == split_dataset(path)[1] > 4000


def test_dataset_offset_of_a_file_without_preamble_fails_as_pynetdicom_does(tmp_path: Path) -> None:
    bare = tmp_path / "bare.dcm"
    bare.write_bytes(dicom_file("CT_small.dcm").read_bytes()[128:])
    with pytest.raises(InvalidDicomError):
        dataset_offset(bare)


@pytest.mark.parametrize("originator", [(None, None), ("MOVESCU", 7), ("ODD", 65535)])
@pytest.mark.parametrize("instance", ["1.2.3.4", "1.2.3.45"])  # even and odd lengths: UI padding
def test_store_command_is_what_pynetdicom_encodes(originator: tuple[str | None, int | None], instance: str) -> None:
    request = C_STORE()
    request.MessageID, request.Priority = 12, 2
    request.AffectedSOPClassUID, request.AffectedSOPInstanceUID = CTImageStorage, instance
    request.MoveOriginatorApplicationEntityTitle, request.MoveOriginatorMessageID = originator
    request._dataset_path = (Path("unused.dcm"), 0)
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    expected = encode(message.command_set, True, True)
    got = encode_store_command(
        sop_class=CTImageStorage, sop_instance=instance, message_id=12, priority=2,
        originator_aet=originator[0], originator_id=originator[1],
    )
    assert got == expected
