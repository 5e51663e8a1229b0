"""The requests OHIF v3's DICOMweb data source makes to open the study list and one study, replayed
against the embedded server as a browser on another origin sends them: CORS preflight, then each GET
with ``Origin`` and a bearer token (the README's OHIF configuration).

The sequence follows OHIF's ``@ohif/extension-default`` DicomWebDataSource with
``qidoSupportsIncludeField: true``, ``imageRendering``/``thumbnailRendering: 'wadors'`` and
``enableStudyLazyLoad: true``: QIDO studies with its includefields, QIDO series of the study, series
metadata, then frames with ``transfer-syntax=*``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message

import pydicom
import pytest
from pydicom.encaps import generate_frames

from skypacs.config import Settings
from skypacs.dicomweb.server import DicomWebServer, embedded_server
from skypacs.embedded import EmbeddedArchive
from tests.conftest import dicom_file

TOKEN = "ohif-viewer-token-" + "v" * 20
ORIGIN = "http://localhost:3000"
FILES = ["CT_small.dcm", "JPEG2000.dcm", "color3d_jpeg_baseline.dcm"]
STUDY_INCLUDEFIELDS = "00081030,00080060"  # StudyDescription, Modality: what OHIF's study list shows
FRAMES_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DicomWebServer]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("ohif") / "data", http_tokens={TOKEN: "read"},
                        cors_origins=(ORIGIN,))
    archive = EmbeddedArchive(settings)
    for name in FILES:
        archive.store_service.store_part10(dicom_file(name).read_bytes())
    archive.indexer().drain_once()
    server = embedded_server(archive, port=0)
    server.start()
    yield server
    server.stop()


def browser(url: str, *, accept: str = "application/dicom+json", method: str = "GET") -> tuple[int, Message, bytes]:
    """A request as the viewer's page sends it: a preflight first (Authorization is not a CORS-safelisted
    header), then the request itself with Origin and the token; the preflight must allow it."""
    preflight = urllib.request.Request(url, method="OPTIONS", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization,accept"})
    with urllib.request.urlopen(preflight, timeout=30) as response:
        assert response.status in (200, 204)
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "authorization" in response.headers["Access-Control-Allow-Headers"].lower()
        assert method in response.headers["Access-Control-Allow-Methods"]
    request = urllib.request.Request(url, method=method, headers={
        "Origin": ORIGIN, "Authorization": f"Bearer {TOKEN}", "Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, headers, body = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, headers, body = error.code, error.headers, error.read()
    assert headers["Access-Control-Allow-Origin"] == ORIGIN  # the page may read the answer
    return status, headers, body


def _first(item: dict, tag: str) -> str:  # type: ignore[type-arg]
    return str(item[tag]["Value"][0])


def test_ohif_opens_the_study_list_and_a_study(server: DicomWebServer) -> None:
    root = server.url
    status, _, body = browser(f"{root}/studies?limit=101&offset=0&fuzzymatching=false"
                              f"&includefield={STUDY_INCLUDEFIELDS}")
    assert status == 200
    studies = json.loads(body)
    assert len(studies) == len(FILES)
    assert all("00201208" in study and "00080061" in study for study in studies)  # counts, modalities

    for path in FILES:
        original = pydicom.dcmread(dicom_file(path))
        study = original.StudyInstanceUID
        status, _, body = browser(f"{root}/studies/{study}/series?includefield=0008103E,00080060")
        assert status == 200
        (series,) = json.loads(body)
        series_uid = _first(series, "0020000E")
        status, _, body = browser(f"{root}/studies/{study}/series/{series_uid}/metadata")
        assert status == 200
        (instance,) = json.loads(body)
        sop = _first(instance, "00080018")
        assert instance["00083002"]["Value"] == [original.file_meta.TransferSyntaxUID]
        frames = int(instance.get("00280008", {}).get("Value", [1])[0])
        status, headers, body = browser(
            f"{root}/studies/{study}/series/{series_uid}/instances/{sop}/frames/1", accept=FRAMES_ACCEPT)
        assert status == 200
        assert headers["Content-Type"].startswith("multipart/related")
        assert f"transfer-syntax={original.file_meta.TransferSyntaxUID}".encode() in body
        if original.file_meta.TransferSyntaxUID.is_compressed:
            first = next(generate_frames(original.PixelData, number_of_frames=frames))
            assert first in body
        else:
            assert original.PixelData[: 1000] in body


def test_without_the_token_the_viewer_gets_401_it_can_read(server: DicomWebServer) -> None:
    request = urllib.request.Request(f"{server.url}/studies", headers={"Origin": ORIGIN})
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=30)
    assert error.value.code == 401
    assert error.value.headers["Access-Control-Allow-Origin"] == ORIGIN
