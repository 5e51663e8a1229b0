"""Real DICOM files used across the tests, and helpers to send and inspect them."""

from __future__ import annotations

import copy
import io
import random
import socket
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.filereader import read_preamble
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tests.conftest import dicom_file


@dataclass(frozen=True)
class Sample:
    name: str
    what: str
    storescu_flag: str
    """DCMTK storescu option that proposes the file's transfer syntax (``-x=`` = uncompressed)."""


# One file per kind the issue names, all shipped by pydicom or pydicom-data.
SAMPLES = [
    Sample("CT_small.dcm", "CT, explicit VR little endian", "-x="),
    Sample("MR_small.dcm", "MR", "-x="),
    Sample("emri_small.dcm", "enhanced MR, multi-frame", "-x="),
    Sample("eCT_Supplemental.dcm", "enhanced CT, multi-frame, 1 MB", "-x="),
    Sample("SC_rgb_jpeg_dcmtk.dcm", "JPEG baseline", "-xy"),
    Sample("JPGExtended.dcm", "JPEG extended", "-xx"),
    Sample("JPEG-LL.dcm", "JPEG lossless", "-xs"),
    Sample("JPEG2000.dcm", "JPEG 2000", "-xw"),
    Sample("MR2_J2KR.dcm", "JPEG 2000 lossless", "-xv"),
    Sample("MR_small_jpeg_ls_lossless.dcm", "JPEG-LS lossless", "-xt"),
    Sample("emri_small_RLE.dcm", "RLE, enhanced MR", "-xr"),
    Sample("image_dfl.dcm", "deflated explicit VR", "-xd"),
    Sample("MR_small_bigendian.dcm", "explicit VR big endian", "-xb"),
    Sample("MR_small_implicit.dcm", "implicit VR little endian", "-xi"),
    Sample("test-SR.dcm", "comprehensive SR", "-x="),
    Sample("rtplan.dcm", "RT plan", "-x="),
    Sample("rtdose.dcm", "RT dose", "-x="),
    Sample("US1_UNCR.dcm", "ultrasound", "-x="),
    Sample("color3d_jpeg_baseline.dcm", "ultrasound multi-frame, 120 JPEG frames, 6 MB", "-xy"),
    Sample("waveform_ecg.dcm", "12-lead ECG waveform", "-x="),
]


def split_part10(data: bytes) -> tuple[Dataset, bytes]:
    """The file meta and the dataset bytes exactly as encoded after it."""
    stream = io.BytesIO(data)
    read_preamble(stream, False)
    meta = pydicom.filereader._read_file_meta_info(stream)
    return meta, data[stream.tell() :]


def identity(path: Path | bytes) -> tuple[str, str, str, str]:
    ds = pydicom.dcmread(io.BytesIO(path) if isinstance(path, bytes) else path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), str(ds.SOPClassUID)


def clone(name: str, **changes: str) -> bytes:
    """A real file with changed attributes (e.g. fresh UIDs), re-encoded in its own transfer syntax."""
    ds = pydicom.dcmread(dicom_file(name))
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    if "SOPInstanceUID" in changes:
        ds.file_meta.MediaStorageSOPInstanceUID = changes["SOPInstanceUID"]
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def new_uid() -> str:
    return str(generate_uid())


def large_rtstruct(contours: int = 2_500, points: int = 24, seed: int = 7) -> bytes:
    """pydicom's real RT Structure Set grown to ``contours`` contours of ``points`` points each, as a
    treatment-planning system writes a whole-body structure set: ~1.6 MB of DICOM JSON (~500 KB gzip) that
    no DynamoDB item holds, with every value small enough to stay inline (none is bulk data)."""
    rng = random.Random(seed)
    ds = pydicom.dcmread(dicom_file("rtstruct.dcm"), force=True)
    template = ds.ROIContourSequence[0].ContourSequence[0]
    grown = []
    for index in range(contours):
        item = copy.deepcopy(template)
        item.NumberOfContourPoints = points
        item.ContourData = [round(rng.uniform(-250.0, 250.0), 2) for _ in range(points * 3)]
        item.ContourNumber = index + 1
        grown.append(item)
    ds.ROIContourSequence[0].ContourSequence = grown
    ds.SOPInstanceUID = new_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def scu(calling: str = "TESTSCU") -> AE:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    return ae


def store_files(port: int, files: list[Path], *, calling: str = "TESTSCU", called: str = "SKYPACS") -> list[int]:
    """Send files byte for byte: pynetdicom streams a path's encoded dataset unchanged in chunked mode
    (otherwise it decodes and re-encodes), announcing the file meta's SOP Class and Instance UIDs."""
    ae = scu(calling)
    for path in files:
        meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
        ae.add_requested_context(meta.MediaStorageSOPClassUID, [meta.TransferSyntaxUID])
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established, "association refused"
    assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    chunked = pynetdicom_config.STORE_SEND_CHUNKED_DATASET
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
    try:
        statuses = []
        for path in files:
            status = assoc.send_c_store(path)
            statuses.append(int(status.Status) if "Status" in status else -1)
        return statuses
    finally:
        pynetdicom_config.STORE_SEND_CHUNKED_DATASET = chunked
        assoc.release()


def echo(port: int, *, calling: str = "TESTSCU") -> bool:
    ae = scu(calling)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="SKYPACS")
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return bool(status and status.Status == 0)
    finally:
        assoc.release()
