"""WADO-RS over HTTP as clients use it: dicomweb-client and raw HTTP against the embedded server.

The archive holds real files from pydicom and pydicom-data, stored as they are (uncompressed, JPEG
baseline, JPEG 2000, RLE multi-frame, the 120-frame JPEG ultrasound, an SR, an ECG with bulk waveform
data) plus one study of CT clones in two series.
"""

from __future__ import annotations

import io
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRLittleEndian

from skypacs.config import Settings
from skypacs.dicomweb.server import DicomWebServer, embedded_server
from skypacs.embedded import EmbeddedArchive
from tests.conftest import dicom_file
from tests.dicom_files import clone, new_uid

FILES = {
    "ct": "CT_small.dcm",
    "jpeg": "SC_rgb_jpeg_dcmtk.dcm",
    "j2k": "JPEG2000.dcm",
    "rle": "emri_small_RLE.dcm",
    "us": "color3d_jpeg_baseline.dcm",
    "sr": "test-SR.dcm",
    "ecg": "waveform_ecg.dcm",
    "implicit": "MR_small_implicit.dcm",
}
PIXEL_DATA, AVAILABLE_TS, NUMBER_OF_FRAMES = "7FE00010", "00083002", "00280008"


@dataclass(frozen=True)
class Stored:
    study: str
    series: str
    sop: str
    path: Path

    @property
    def dataset(self) -> pydicom.Dataset:
        return pydicom.dcmread(self.path)


@dataclass
class Pacs:
    archive: EmbeddedArchive
    server: DicomWebServer
    files: dict[str, Stored]
    study: str
    series: list[str]
    damaged: Stored

    @property
    def url(self) -> str:
        return self.server.url

    def client(self) -> DICOMwebClient:
        return DICOMwebClient(url=self.url)

    def instance_url(self, name: str) -> str:
        stored = self.files[name]
        return f"{self.url}/studies/{stored.study}/series/{stored.series}/instances/{stored.sop}"


def _stored(path: Path) -> Stored:
    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    return Stored(dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.SOPInstanceUID, path)


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    root = tmp_path_factory.mktemp("wado")
    archive = EmbeddedArchive(Settings(data_dir=root / "data"))
    files = {}
    for name, filename in FILES.items():
        path = dicom_file(filename)
        archive.store_service.store_part10(path.read_bytes())
        files[name] = _stored(path)
    study, series = new_uid(), [new_uid(), new_uid()]
    for number, series_uid in enumerate([series[0], series[0], series[1]], start=1):
        path = root / f"clone{number}.dcm"
        path.write_bytes(clone("CT_small.dcm", StudyInstanceUID=study, SeriesInstanceUID=series_uid,
                               SOPInstanceUID=new_uid(), InstanceNumber=str(number)))
        archive.store_service.store_part10(path.read_bytes())
    damaged_path = root / "damaged.dcm"
    damaged_path.write_bytes(clone("CT_small.dcm", StudyInstanceUID=new_uid(), SeriesInstanceUID=new_uid(),
                                   SOPInstanceUID=new_uid()))
    archive.store_service.store_part10(damaged_path.read_bytes())
    archive.indexer().drain_once()
    damaged = _stored(damaged_path)
    record = archive.catalog.get_instance(damaged.sop)
    assert record is not None
    stored_file = archive.store.local_path(record.key)
    stored_file.write_bytes(stored_file.read_bytes()[: record.size // 2])  # the disk lost half of it
    server = embedded_server(archive, port=0)
    server.start()
    yield Pacs(archive, server, files, study, series, damaged)
    server.stop()


def raw(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, Message, bytes]:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def parts(headers: Message, body: bytes) -> list[tuple[str, bytes]]:
    """(Content-Type, payload) of each part of a multipart/related body."""
    content_type = headers["Content-Type"]
    assert content_type.startswith("multipart/related"), content_type
    boundary = content_type.split("boundary=")[1].split(";")[0].strip('"').encode()
    result = []
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, payload = chunk.partition(b"\r\n\r\n")
        part_type = next(line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                         if line.lower().startswith(b"content-type:"))
        result.append((part_type, payload[:-2]))
    return result


def same_pixels(a: pydicom.Dataset, b: pydicom.Dataset) -> bool:
    return bool(np.array_equal(a.pixel_array, b.pixel_array))


# --- instances --------------------------------------------------------------------------------------

def test_retrieve_study_with_dicomweb_client_defaults_to_explicit_vr_little_endian(pacs: Pacs) -> None:
    instances = pacs.client().retrieve_study(pacs.study)
    assert len(instances) == 3
    original = pydicom.dcmread(dicom_file("CT_small.dcm"))
    for instance in instances:
        assert instance.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert instance.StudyInstanceUID == pacs.study
        assert same_pixels(instance, original)


def test_retrieve_series_gives_only_that_series(pacs: Pacs) -> None:
    instances = pacs.client().retrieve_series(pacs.study, pacs.series[0])
    assert {instance.SeriesInstanceUID for instance in instances} == {pacs.series[0]}
    assert len(instances) == 2


@pytest.mark.parametrize("name", ["jpeg", "j2k", "rle", "us"])
def test_compressed_instances_come_back_as_stored_with_transfer_syntax_star(pacs: Pacs, name: str) -> None:
    stored = pacs.files[name]
    instance = pacs.client().retrieve_instance(stored.study, stored.series, stored.sop)  # asks for "*"
    original = stored.dataset
    assert instance.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert instance.PixelData == original.PixelData


@pytest.mark.parametrize("name", ["jpeg", "j2k", "rle"])
def test_compressed_instances_are_decompressed_when_asked_for_explicit_vr_little_endian(
    pacs: Pacs, name: str
) -> None:
    stored = pacs.files[name]
    instance = pacs.client().retrieve_instance(stored.study, stored.series, stored.sop,
                                               media_types=(("application/dicom", ExplicitVRLittleEndian),))
    assert instance.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    original = stored.dataset
    if name == "jpeg":  # lossy: decoders may differ by rounding, not by image
        assert np.abs(instance.pixel_array.astype(int) - original.pixel_array.astype(int)).max() <= 2
    else:
        assert same_pixels(instance, original)


def test_a_stored_instance_is_sent_byte_for_byte(pacs: Pacs) -> None:
    status, headers, body = raw(pacs.instance_url("us"), {"Accept": 'multipart/related; type="application/dicom"; '
                                                          "transfer-syntax=*"})
    assert status == 200
    ((part_type, payload),) = parts(headers, body)
    assert payload == dicom_file(FILES["us"]).read_bytes()
    assert "transfer-syntax=1.2.840.10008.1.2.4.50" in part_type
    assert int(headers["Content-Length"]) == len(body)


def test_single_part_application_dicom_for_downloads(pacs: Pacs) -> None:
    status, headers, body = raw(pacs.instance_url("ct"), {"Accept": "application/dicom"})
    assert status == 200
    assert headers["Content-Type"].startswith("application/dicom")
    assert body == dicom_file(FILES["ct"]).read_bytes()


def test_implicit_vr_is_converted_to_the_default_explicit_vr(pacs: Pacs) -> None:
    status, headers, body = raw(pacs.instance_url("implicit"))
    assert status == 200
    ((_, payload),) = parts(headers, body)
    dataset = pydicom.dcmread(io.BytesIO(payload))
    assert dataset.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert same_pixels(dataset, pacs.files["implicit"].dataset)


def test_unknown_uids_are_404(pacs: Pacs) -> None:
    unknown = new_uid()
    assert raw(f"{pacs.url}/studies/{unknown}")[0] == 404
    assert raw(f"{pacs.url}/studies/{pacs.study}/series/{unknown}")[0] == 404
    assert raw(f"{pacs.url}/studies/{pacs.study}/series/{pacs.series[0]}/instances/{unknown}")[0] == 404
    assert raw(f"{pacs.url}/studies/{unknown}/metadata")[0] == 404
    assert raw(f"{pacs.url}/studies/not-a-uid")[0] == 400


def test_unsatisfiable_accept_is_406_with_a_reason(pacs: Pacs) -> None:
    status, _, body = raw(f"{pacs.url}/studies/{pacs.study}", {"Accept": "image/png"})
    assert status == 406
    assert b"multipart/related" in body
    # No JPEG baseline encoder: an uncompressed CT cannot be sent as JPEG baseline.
    status, _, body = raw(pacs.instance_url("ct"), {
        "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'})
    assert status == 406
    assert b"transfer-syntax=*" in body


def test_head_gives_headers_without_a_body(pacs: Pacs) -> None:
    status, headers, body = raw(f"{pacs.url}/studies/{pacs.study}", method="HEAD")
    assert status == 200
    assert headers["Content-Type"].startswith('multipart/related; type="application/dicom"')
    assert body == b""


def test_a_damaged_stored_object_is_a_500_naming_the_instance_in_the_log(
    pacs: Pacs, caplog: pytest.LogCaptureFixture
) -> None:
    damaged = pacs.damaged
    url = f"{pacs.url}/studies/{damaged.study}/series/{damaged.series}/instances/{damaged.sop}"
    with caplog.at_level(logging.ERROR):
        try:
            status, _headers, body = raw(url, {"Accept": 'multipart/related; type="application/dicom"; '
                                                    "transfer-syntax=*"})
        except (OSError, Exception) as exc:  # noqa: BLE001 - the connection is cut: that is the point
            assert "IncompleteRead" in type(exc).__name__ or isinstance(exc, OSError)
        else:
            # Either refused before the body (500) or cut short: never a complete-looking body.
            assert status == 500 or not body.rstrip().endswith(b"--")
    assert any(damaged.sop in record.getMessage() for record in caplog.records)


# --- metadata ---------------------------------------------------------------------------------------

def test_study_metadata_has_every_instance_and_absolute_bulk_data_uris(pacs: Pacs) -> None:
    metadata = pacs.client().retrieve_study_metadata(pacs.study)
    assert len(metadata) == 3
    for instance in metadata:
        uri = instance[PIXEL_DATA]["BulkDataURI"]
        assert urlsplit(uri).path.startswith(f"/dicom-web/studies/{pacs.study}/series/")
        assert uri.endswith("/bulkdata/7FE00010")
        assert instance[AVAILABLE_TS]["Value"] == [ExplicitVRLittleEndian]


def test_series_and_instance_metadata(pacs: Pacs) -> None:
    client = pacs.client()
    series = client.retrieve_series_metadata(pacs.study, pacs.series[1])
    assert len(series) == 1
    us = pacs.files["us"]
    (instance,) = [client.retrieve_instance_metadata(us.study, us.series, us.sop)]
    assert instance[NUMBER_OF_FRAMES]["Value"] == [120]
    assert instance[AVAILABLE_TS]["Value"] == ["1.2.840.10008.1.2.4.50"]


def test_metadata_xml_is_406(pacs: Pacs) -> None:
    status, _, _body = raw(f"{pacs.url}/studies/{pacs.study}/metadata",
                          {"Accept": 'multipart/related; type="application/dicom+xml"'})
    assert status == 406


def test_nested_bulk_data_uri_resolves(pacs: Pacs) -> None:
    ecg = pacs.files["ecg"]
    metadata = pacs.client().retrieve_instance_metadata(ecg.study, ecg.series, ecg.sop)
    waveform = metadata["54000100"]["Value"][0]["54001010"]
    path = urlsplit(waveform["BulkDataURI"]).path
    status, headers, body = raw(f"http://{urlsplit(pacs.url).netloc}{path}")
    assert status == 200
    ((part_type, payload),) = parts(headers, body)
    assert part_type == "application/octet-stream"
    assert payload == ecg.dataset.WaveformSequence[0].WaveformData


# --- frames -----------------------------------------------------------------------------------------

def test_frame_of_an_uncompressed_ct_is_its_pixel_bytes(pacs: Pacs) -> None:
    ct = pacs.files["ct"]
    (frame,) = pacs.client().retrieve_instance_frames(ct.study, ct.series, ct.sop, frame_numbers=[1])
    assert frame == ct.dataset.PixelData


def test_frames_of_the_120_frame_ultrasound_as_stored_and_decoded(pacs: Pacs) -> None:
    us = pacs.files["us"]
    original = us.dataset
    stored_frames = list(generate_frames(original.PixelData, number_of_frames=120))
    client = pacs.client()
    frames = client.retrieve_instance_frames(us.study, us.series, us.sop, frame_numbers=[1, 60, 120],
                                             media_types=(("image/jpeg", "1.2.840.10008.1.2.4.50"),))
    assert frames == [stored_frames[0], stored_frames[59], stored_frames[119]]
    status, headers, body = raw(f"{pacs.instance_url('us')}/frames/60",
                                {"Accept": 'multipart/related; type="application/octet-stream"'})
    assert status == 200
    ((part_type, payload),) = parts(headers, body)
    assert part_type.startswith("application/octet-stream")
    expected = pydicom.pixels.pixel_array(dicom_file(FILES["us"]), index=59)
    assert len(payload) == expected.nbytes


def test_ohif_frames_request_gets_the_stored_bitstream_labelled_with_its_syntax(pacs: Pacs) -> None:
    status, headers, body = raw(f"{pacs.instance_url('j2k')}/frames/1",
                                {"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"})
    assert status == 200
    ((part_type, payload),) = parts(headers, body)
    assert part_type == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.91"
    (expected,) = generate_frames(pacs.files["j2k"].dataset.PixelData, number_of_frames=1)
    assert payload == expected


def test_frames_out_of_range_and_malformed(pacs: Pacs) -> None:
    assert raw(f"{pacs.instance_url('ct')}/frames/2")[0] == 404
    assert raw(f"{pacs.instance_url('ct')}/frames/0")[0] == 400
    assert raw(f"{pacs.instance_url('ct')}/frames/one")[0] == 400


# --- rendered and thumbnails ------------------------------------------------------------------------

def test_rendered_instance_and_frame(pacs: Pacs) -> None:
    ct, us = pacs.files["ct"], pacs.files["us"]
    client = pacs.client()
    jpeg = client.retrieve_instance_rendered(ct.study, ct.series, ct.sop)
    image = Image.open(io.BytesIO(jpeg))
    assert image.format == "JPEG" and image.size == (128, 128)
    png = client.retrieve_instance_frames_rendered(us.study, us.series, us.sop, frame_numbers=[60],
                                                   media_types=("image/png",))
    assert Image.open(io.BytesIO(png)).format == "PNG"


def test_rendered_viewport_and_window(pacs: Pacs) -> None:
    status, headers, body = raw(f"{pacs.instance_url('ct')}/rendered?viewport=64,64&window=40,400,linear",
                                {"Accept": "image/png"})
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(body)).size == (64, 64)
    assert raw(f"{pacs.instance_url('ct')}/rendered?window=abc")[0] == 400


def test_thumbnails_of_study_series_and_instance(pacs: Pacs) -> None:
    for url in (f"{pacs.url}/studies/{pacs.study}/thumbnail",
                f"{pacs.url}/studies/{pacs.study}/series/{pacs.series[0]}/thumbnail",
                f"{pacs.instance_url('us')}/thumbnail",
                f"{pacs.instance_url('us')}/frames/60/thumbnail"):
        status, _headers, body = raw(url)
        assert status == 200, url
        image = Image.open(io.BytesIO(body))
        assert image.format == "JPEG" and max(image.size) <= 128


def test_rendering_an_sr_is_406(pacs: Pacs) -> None:
    assert raw(f"{pacs.instance_url('sr')}/rendered")[0] == 406
