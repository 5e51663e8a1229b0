"""Bad input over DIMSE: each gets the right status, is kept in quarantine, and harms nothing stored."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from skypacs.dimse.status import Status
from tests.conftest import RunningGateway, dicom_file
from tests.dicom_files import identity, scu, split_part10, store_files

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def part10(dataset_bytes: bytes, *, sop_class: str = CT_IMAGE_STORAGE, sop_instance: str = "1.2.3.4.5.6.7") -> bytes:
    """A file meta header announcing ``sop_class``/``sop_instance`` in front of arbitrary dataset bytes."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = io.BytesIO()
    pydicom.filewriter.write_file_meta_info(out, meta, enforce_standard=True)
    return b"\0" * 128 + b"DICM" + out.getvalue() + dataset_bytes


def dataset_bytes(**changes: object) -> tuple[bytes, pydicom.Dataset]:
    ds = pydicom.dcmread(dicom_file("CT_small.dcm"))
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    out = io.BytesIO()
    ds.save_as(out)
    return split_part10(out.getvalue())[1], ds


@pytest.fixture
def stored_ct(running_gateway: RunningGateway) -> tuple[RunningGateway, bytes]:
    """A gateway already holding CT_small, to check that bad input harms nothing."""
    path = dicom_file("CT_small.dcm")
    assert store_files(running_gateway.port, [path]) == [0]
    running_gateway.wait_indexed(1)
    _study, _series, sop, _ = identity(path)
    with running_gateway.archive.store.open(running_gateway.archive.catalog.get_instance(sop).key) as f:  # type: ignore[union-attr]
        return running_gateway, f.read()


def send_raw(gateway: RunningGateway, tmp_path: Path, data: bytes) -> int:
    path = tmp_path / "bad.dcm"
    path.write_bytes(data)
    return store_files(gateway.port, [path])[0]


def assert_nothing_harmed(gateway: RunningGateway, original: bytes) -> None:
    gateway.wait_queue_empty()
    catalog = gateway.archive.catalog
    assert catalog.count_instances() == 1
    record = catalog.get_instance(identity(dicom_file("CT_small.dcm"))[2])
    assert record is not None
    with gateway.archive.store.open(record.key) as f:
        assert f.read() == original


CASES = {
    "not DICOM": (lambda: part10(b"this is not a DICOM dataset at all" * 50), Status.CANNOT_DECODE, "cannot-decode"),
    "missing SOP Instance UID": (
        lambda: part10(dataset_bytes(SOPInstanceUID=None)[0]), Status.CANNOT_UNDERSTAND, "missing-attribute"
    ),
    "missing Study Instance UID": (
        lambda: part10(dataset_bytes(StudyInstanceUID=None, SOPInstanceUID="1.2.3.4.5.6.7")[0]),
        Status.CANNOT_UNDERSTAND,
        "missing-attribute",
    ),
    "invalid UID characters": (
        lambda: part10(dataset_bytes(SOPInstanceUID="1.2.3.4.5.6.7", SeriesInstanceUID="1.2.abc.4")[0]),
        Status.CANNOT_UNDERSTAND,
        "invalid-uid",
    ),
    "leading zero in a UID component": (
        lambda: part10(dataset_bytes(SOPInstanceUID="1.2.3.4.5.6.7", StudyInstanceUID="1.2.03.4")[0]),
        Status.CANNOT_UNDERSTAND,
        "invalid-uid",
    ),
    "dataset SOP class differs from the announced one": (
        lambda: part10(dataset_bytes(SOPInstanceUID="1.2.3.4.5.6.7", SOPClassUID="1.2.840.10008.5.1.4.1.1.4")[0]),
        Status.DATASET_DOES_NOT_MATCH_SOP_CLASS,
        "sop-class-mismatch",
    ),
    "SOP instance differs from the announced one": (
        lambda: part10(dataset_bytes(SOPInstanceUID="1.2.3.4.5.6.8")[0]),
        Status.CANNOT_UNDERSTAND,
        "uid-mismatch",
    ),
    "truncated in Pixel Data": (
        lambda: part10(dataset_bytes(SOPInstanceUID="1.2.3.4.5.6.7")[0][:-1000]),
        Status.CANNOT_DECODE,
        "cannot-decode",
    ),
}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input_is_refused_quarantined_and_harms_nothing(
    stored_ct: tuple[RunningGateway, bytes], tmp_path: Path, case: str
) -> None:
    gateway, original = stored_ct
    make, status, reason = CASES[case]
    data = make()
    assert send_raw(gateway, tmp_path, data) == status
    (quarantined,) = gateway.archive.catalog.list_quarantine()
    assert quarantined.reason == reason
    with gateway.archive.store.open(quarantined.quarantine_key) as f:
        assert f.read().endswith(data[-200:])  # the refused dataset is kept, not dropped
    assert_nothing_harmed(gateway, original)


def test_truncated_real_file(running_gateway: RunningGateway) -> None:
    assert store_files(running_gateway.port, [dicom_file("MR_truncated.dcm")]) == [Status.CANNOT_DECODE]
    assert running_gateway.archive.catalog.list_quarantine()[0].reason == "cannot-decode"
    assert running_gateway.archive.catalog.count_instances() == 0


def test_unknown_sop_class_is_refused_at_negotiation(stored_ct: tuple[RunningGateway, bytes]) -> None:
    gateway, original = stored_ct
    ae = scu()
    ae.add_requested_context("1.2.3.4.5.6.999", [ExplicitVRLittleEndian])
    ae.add_requested_context(CT_IMAGE_STORAGE, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", gateway.port, ae_title="SKYPACS")
    try:
        assert assoc.is_established
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        rejected = {str(cx.abstract_syntax) for cx in assoc.rejected_contexts}
        assert "1.2.3.4.5.6.999" in rejected and CT_IMAGE_STORAGE in accepted
    finally:
        assoc.release()
    assert_nothing_harmed(gateway, original)


def test_non_storage_sop_class_in_the_dataset_is_refused(stored_ct: tuple[RunningGateway, bytes], tmp_path: Path) -> None:
    """An accepted storage context carrying a dataset of a class the archive does not store."""
    gateway, original = stored_ct
    data = part10(
        dataset_bytes(SOPInstanceUID="1.2.3.4.5.6.7", SOPClassUID="1.2.3.4.5.6.999")[0],
        sop_class=CT_IMAGE_STORAGE,
    )
    assert send_raw(gateway, tmp_path, data) == Status.SOP_CLASS_NOT_SUPPORTED
    assert gateway.archive.catalog.list_quarantine()[0].reason == "unsupported-sop-class"
    assert_nothing_harmed(gateway, original)


def test_unknown_called_ae_title_is_still_answered(running_gateway: RunningGateway) -> None:
    """Like most archives, the gateway does not police the called AE title (modalities often get it
    wrong); access control is by calling AE (see the allow-list test)."""
    from tests.conftest import run_dcmtk

    result = run_dcmtk("echoscu", "-aec", "WRONGNAME", "127.0.0.1", str(running_gateway.port))
    assert result.returncode == 0, result.stderr
