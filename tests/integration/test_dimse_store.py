"""C-ECHO and C-STORE against the gateway with real clients (DCMTK and pynetdicom) and real files."""

from __future__ import annotations

import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
import pytest

from skypacs.dimse.status import Status
from skypacs.keys import instance_key
from tests.conftest import RunningGateway, copy_testdata, dicom_file, run_dcmtk
from tests.dicom_files import SAMPLES, Sample, clone, echo, identity, new_uid, split_part10, store_files


def stored_bytes(gateway: RunningGateway, path: Path) -> bytes:
    study, series, sop, _ = identity(path)
    with gateway.archive.store.open(instance_key(study, series, sop)) as stream:
        return stream.read()


def test_echoscu(running_gateway: RunningGateway) -> None:
    result = run_dcmtk("echoscu", "-aec", "SKYPACS", "127.0.0.1", str(running_gateway.port))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.what)
def test_storescu_stores_and_indexes_real_files(
    running_gateway: RunningGateway, sample: Sample, tmp_path: Path
) -> None:
    (path,) = copy_testdata([sample.name], tmp_path / "in")
    result = run_dcmtk(
        "storescu", sample.storescu_flag, "-R", "-aec", "SKYPACS", "-aet", "MODALITY",
        "127.0.0.1", str(running_gateway.port), str(path),
    )
    assert result.returncode == 0, result.stderr
    assert "Store Failed" not in result.stderr and "convert" not in result.stderr, result.stderr
    running_gateway.wait_indexed(1)
    study, series, sop, sop_class = identity(path)
    record = running_gateway.archive.catalog.get_instance(sop)
    assert record is not None
    assert (record.StudyInstanceUID, record.SeriesInstanceUID, record.SOPClassUID) == (study, series, sop_class)
    original = pydicom.dcmread(path)
    # Stored as received: the transfer syntax the file was sent in, pixel data byte for byte.
    assert record.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    stored = pydicom.dcmread(running_gateway.archive.store.local_path(record.key))
    assert stored.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    if "PixelData" in original:
        assert stored.PixelData == original.PixelData
    assert "7FE00010" not in record.metadata or "BulkDataURI" in record.metadata["7FE00010"]
    assert running_gateway.archive.catalog.list_quarantine() == []


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.what)
def test_pynetdicom_scu_stores_bytes_exactly_as_sent(running_gateway: RunningGateway, sample: Sample) -> None:
    path = dicom_file(sample.name)
    meta, _ = split_part10(path.read_bytes())
    if meta.MediaStorageSOPInstanceUID != identity(path)[2]:
        # rtplan.dcm's file meta names another instance than its dataset; sent raw, the announced
        # Affected SOP Instance UID contradicts the dataset: refused, and kept in quarantine.
        assert store_files(running_gateway.port, [path]) == [Status.CANNOT_UNDERSTAND]
        (quarantined,) = running_gateway.archive.catalog.list_quarantine()
        assert quarantined.reason == "uid-mismatch"
        return
    assert store_files(running_gateway.port, [path]) == [Status.SUCCESS]
    _, original_dataset = split_part10(path.read_bytes())
    meta, stored_dataset = split_part10(stored_bytes(running_gateway, path))
    assert stored_dataset == original_dataset
    assert meta.MediaStorageSOPInstanceUID == identity(path)[2]
    assert meta.SourceApplicationEntityTitle == "TESTSCU"
    running_gateway.wait_indexed(1)


def test_many_files_in_one_storescu_association(running_gateway: RunningGateway, tmp_path: Path) -> None:
    names = ["CT_small.dcm", "MR_small.dcm", "test-SR.dcm", "rtplan.dcm", "US1_UNCR.dcm", "emri_small.dcm"]
    paths = copy_testdata(names, tmp_path / "in")
    result = run_dcmtk("storescu", "-aec", "SKYPACS", "127.0.0.1", str(running_gateway.port), *map(str, paths))
    assert result.returncode == 0, result.stderr
    running_gateway.wait_indexed(len(names))


def test_tcp_nodelay_is_set_on_accepted_connections(running_gateway: RunningGateway) -> None:
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    from tests.dicom_files import scu

    ae = scu()
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", running_gateway.port, ae_title="SKYPACS")
    try:
        assert assoc.is_established
        (acceptor,) = running_gateway.gateway.server.active_associations  # type: ignore[union-attr]
        sock = acceptor.dul.socket.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        assoc.release()


def test_duplicate_store_is_a_no_op(running_gateway: RunningGateway) -> None:
    path = dicom_file("CT_small.dcm")
    assert store_files(running_gateway.port, [path, path]) == [0, 0]
    assert store_files(running_gateway.port, [path]) == [0]
    running_gateway.wait_indexed(1)
    running_gateway.wait_queue_empty()
    catalog = running_gateway.archive.catalog
    assert catalog.count_instances() == 1
    assert catalog.list_replacements() == [] and catalog.list_quarantine() == []
    assert running_gateway.indexer.totals["stored"] == 1
    assert running_gateway.indexer.totals["unchanged"] >= 1


def test_new_bytes_for_the_same_instance_replace_it_and_are_recorded(
    running_gateway: RunningGateway, tmp_path: Path
) -> None:
    first = dicom_file("CT_small.dcm")
    second = tmp_path / "changed.dcm"
    second.write_bytes(clone("CT_small.dcm", StudyDescription="CORRECTED"))
    assert store_files(running_gateway.port, [first]) == [0]
    running_gateway.wait_indexed(1)
    assert store_files(running_gateway.port, [second]) == [0]
    running_gateway.wait_queue_empty()
    catalog = running_gateway.archive.catalog
    (replacement,) = catalog.list_replacements()
    assert replacement.SOPInstanceUID == identity(first)[2]
    assert replacement.previous_etag != replacement.etag
    study = catalog.get_study(identity(first)[0])
    assert study is not None and study["00081030"]["Value"] == ["CORRECTED"]
    assert catalog.count_instances() == 1


def test_same_study_over_concurrent_associations(running_gateway: RunningGateway, tmp_path: Path) -> None:
    study, series = new_uid(), new_uid()
    files = []
    for index in range(40):
        path = tmp_path / f"{index}.dcm"
        path.write_bytes(
            clone("CT_small.dcm", StudyInstanceUID=study, SeriesInstanceUID=series, SOPInstanceUID=new_uid())
        )
        files.append(path)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda chunk: store_files(running_gateway.port, chunk), [files[i::4] for i in range(4)]))
    assert all(status == 0 for statuses in results for status in statuses)
    running_gateway.wait_indexed(40)
    catalog = running_gateway.archive.catalog
    assert len(list(catalog.list_instances(study, series))) == 40
    assert catalog.get_study(study) is not None and catalog.get_series(study, series) is not None


def test_calling_ae_allow_list(make_gateway: Callable[..., RunningGateway]) -> None:
    gateway = make_gateway(allowed_aes=frozenset({"CT01"}))
    denied = run_dcmtk("echoscu", "-aet", "INTRUDER", "-aec", "SKYPACS", "127.0.0.1", str(gateway.port))
    assert denied.returncode != 0
    assert "Rejected" in denied.stderr or "rejected" in denied.stderr.lower()
    allowed = run_dcmtk("echoscu", "-aet", "CT01", "-aec", "SKYPACS", "127.0.0.1", str(gateway.port))
    assert allowed.returncode == 0, allowed.stderr
    assert not echo(gateway.port, calling="INTRUDER")
    assert echo(gateway.port, calling="CT01")


def test_healthcheck(make_gateway: Callable[..., RunningGateway]) -> None:
    from skypacs.dimse.healthcheck import main

    open_gateway = make_gateway()
    assert main(["--port", str(open_gateway.port)]) == 0
    restricted = make_gateway(allowed_aes=frozenset({"CT01"}))
    assert main(["--port", str(restricted.port)]) == 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        unused = sock.getsockname()[1]
    assert main(["--port", str(unused)]) == 1
