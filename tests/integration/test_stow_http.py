"""STOW-RS over HTTP as clients use it: dicomweb-client stores real files (sent with chunked transfer
encoding when large), then finds them through QIDO-RS and gets them back through WADO-RS; raw HTTP for
what a client may get wrong."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient

from skypacs.config import Settings
from skypacs.dicomweb import multipart, qido, stow, wado
from skypacs.dicomweb.http import Router
from skypacs.dicomweb.server import DicomWebServer
from skypacs.embedded import EmbeddedArchive
from tests.conftest import dicom_file
from tests.dicom_files import clone, new_uid

FILES = ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "color3d_jpeg_baseline.dcm"]
MAX_BODY = 8 * 1024 * 1024
BOUNDARY = "3f5e1c0d"


@dataclass
class Pacs:
    archive: EmbeddedArchive
    server: DicomWebServer

    def client(self) -> DICOMwebClient:
        return DICOMwebClient(url=self.server.url)


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    archive = EmbeddedArchive(Settings(data_dir=tmp_path_factory.mktemp("stow") / "data"))
    router = Router([*qido.routes(archive.query_service), *wado.routes(archive.retrieve_service),
                     *stow.routes(archive.store_service, max_body_bytes=MAX_BODY)])
    server = DicomWebServer(router, port=0)
    server.start()
    yield Pacs(archive, server)
    server.stop()


def post(url: str, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": content_type, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def multipart_body(*parts: bytes) -> bytes:
    return b"".join(multipart.multipart_body([multipart.Part("application/dicom", [data]) for data in parts],
                                             BOUNDARY))


CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"'


def test_dicomweb_client_stores_then_finds_and_retrieves_the_same_pixels(pacs: Pacs) -> None:
    client = pacs.client()
    datasets = [pydicom.dcmread(dicom_file(name)) for name in FILES]
    result = client.store_instances(datasets)
    stored = {item.ReferencedSOPInstanceUID for item in result.ReferencedSOPSequence}
    assert stored == {ds.SOPInstanceUID for ds in datasets}
    assert "FailedSOPSequence" not in result
    pacs.archive.indexer().drain_once()
    for original in datasets:
        found = client.search_for_instances(search_filters={"SOPInstanceUID": original.SOPInstanceUID})
        assert len(found) == 1
        assert found[0]["0020000D"]["Value"] == [original.StudyInstanceUID]
        back = client.retrieve_instance(original.StudyInstanceUID, original.SeriesInstanceUID,
                                        original.SOPInstanceUID, media_types=(("application/dicom", "*"),))
        assert back.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert back.PixelData == original.PixelData
        assert np.array_equal(back.pixel_array, original.pixel_array)


def test_stores_into_the_study_it_is_posted_to_and_refuses_other_studies(pacs: Pacs) -> None:
    study = new_uid()
    mine = pydicom.dcmread(dicom_file("CT_small.dcm"))
    mine.StudyInstanceUID, mine.SOPInstanceUID = study, new_uid()
    other = pydicom.dcmread(dicom_file("MR_small.dcm"))
    other.StudyInstanceUID, other.SOPInstanceUID = new_uid(), new_uid()
    before = len(pacs.archive.catalog.list_quarantine())
    status, module = post(f"{pacs.server.url}/studies/{study}",
                          multipart_body(_encode(mine), _encode(other)), CONTENT_TYPE)
    assert status == 202
    assert module["00081190"]["Value"] == [f"{pacs.server.url}/studies/{study}"]
    assert [item["00081155"]["Value"][0] for item in module["00081199"]["Value"]] == [mine.SOPInstanceUID]
    [failed] = module["00081198"]["Value"]
    assert failed["00081155"]["Value"] == [other.SOPInstanceUID]
    assert failed["00081197"]["Value"] == [0xC409]
    quarantined = pacs.archive.catalog.list_quarantine()[before:]
    assert [record.reason for record in quarantined] == ["study-mismatch"]


def test_mixed_good_and_bad_parts_are_202_and_nothing_is_lost(pacs: Pacs) -> None:
    good = clone("CT_small.dcm", SOPInstanceUID=new_uid())
    truncated = clone("MR_small.dcm", SOPInstanceUID=new_uid())[:-1000]
    no_sop = pydicom.dcmread(dicom_file("MR_small.dcm"))
    del no_sop.SOPInstanceUID
    before = len(pacs.archive.catalog.list_quarantine())
    status, module = post(f"{pacs.server.url}/studies",
                          multipart_body(b"GIF89a not dicom", good, truncated, _encode(no_sop)), CONTENT_TYPE)
    assert status == 202
    assert len(module["00081199"]["Value"]) == 1
    assert [item["00081197"]["Value"][0] for item in module["00081198"]["Value"]] == [0xC000] * 3
    quarantined = pacs.archive.catalog.list_quarantine()[before:]
    assert sorted(record.reason for record in quarantined) == ["cannot-decode", "cannot-decode",
                                                               "missing-attribute"]
    pacs.archive.indexer().drain_once()
    url = f"{pacs.server.url}/studies/{pydicom.dcmread(BytesIO(good)).StudyInstanceUID}/instances"
    assert any(item["00080018"]["Value"] == [pydicom.dcmread(BytesIO(good)).SOPInstanceUID]
               for item in json.loads(urllib.request.urlopen(url, timeout=60).read()))


def test_a_body_of_only_failures_is_409(pacs: Pacs) -> None:
    status, module = post(f"{pacs.server.url}/studies", multipart_body(b"nothing"), CONTENT_TYPE)
    assert status == 409
    assert module["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]


@pytest.mark.parametrize("content_type", ["application/dicom+json", "application/json"])
def test_json_bodies_are_415_with_what_is_supported(pacs: Pacs, content_type: str) -> None:
    status, answer = post(f"{pacs.server.url}/studies", b"[]", content_type)
    assert status == 415
    assert 'multipart/related; type="application/dicom"' in answer["error"]


def test_oversize_body_is_413(pacs: Pacs) -> None:
    big = b"\0" * (MAX_BODY + 1)
    status, answer = post(f"{pacs.server.url}/studies", multipart_body(big), CONTENT_TYPE)
    assert status == 413
    assert str(MAX_BODY) in answer["error"]


def test_oversize_chunked_body_without_content_length_is_413(pacs: Pacs) -> None:
    def chunks() -> Iterator[bytes]:
        yield multipart_body(b"")[:-len(BOUNDARY) - 6]
        for _ in range(MAX_BODY // (1024 * 1024) + 1):
            yield b"\0" * (1024 * 1024)

    request = urllib.request.Request(f"{pacs.server.url}/studies", data=chunks(), method="POST",
                                     headers={"Content-Type": CONTENT_TYPE, "Transfer-Encoding": "chunked"})
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=60)
    assert error.value.code == 413


def test_malformed_body_is_400(pacs: Pacs) -> None:
    status, answer = post(f"{pacs.server.url}/studies", b"--wrong\r\n\r\nx\r\n--wrong--", CONTENT_TYPE)
    assert status == 400
    assert "boundary" in answer["error"]


def _encode(dataset: pydicom.Dataset) -> bytes:
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.get("SOPInstanceUID", "1.2.3")
    out = BytesIO()
    dataset.save_as(out)
    return out.getvalue()
