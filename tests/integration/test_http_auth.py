"""Bearer tokens and CORS over real HTTP, the way curl, dicomweb-client and a browser viewer meet them:
against a DicomWebServer with tokens and allowed origins, and against ``skypacs serve``, which makes
its own token on the first start."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest

from skypacs.config import Settings
from skypacs.dicomweb import dicomweb_router, multipart
from skypacs.dicomweb.server import DicomWebServer, embedded_server
from skypacs.embedded import EmbeddedArchive
from tests.dicom_files import clone, new_uid

READ = "read-token-" + "r" * 20
WRITE = "write-token-" + "w" * 20
VIEWER = "https://viewer.example.org"
DICOM_JSON = {"Accept": "application/dicom+json"}
AS_STORED = {"Accept": "application/dicom; transfer-syntax=*"}
BOUNDARY = "auth-test-boundary"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"'


@dataclass
class Pacs:
    archive: EmbeddedArchive
    server: DicomWebServer
    study: str
    series: str
    sop: str
    data: bytes


def http(url: str, method: str = "GET", headers: dict[str, str] | None = None,
         body: bytes | None = None, token: str | None = None) -> tuple[int, Message, bytes]:
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, headers=all_headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    archive = EmbeddedArchive(Settings(data_dir=tmp_path_factory.mktemp("auth") / "data"))
    study, series, sop = new_uid(), new_uid(), new_uid()
    data = clone("CT_small.dcm", StudyInstanceUID=study, SeriesInstanceUID=series, SOPInstanceUID=sop)
    archive.store_service.store_part10(data)
    archive.indexer().drain_once()
    router = dicomweb_router(archive.query_service, archive.retrieve_service, store_service=archive.store_service,
                             delete_service=archive.delete_service)
    server = DicomWebServer(router, port=0, tokens={READ: "read", WRITE: "write"}, cors_origins=(VIEWER,))
    server.start()
    try:
        yield Pacs(archive, server, study, series, sop, data)
    finally:
        server.stop()


def test_without_a_token_dicomweb_is_401_with_a_bearer_challenge(pacs: Pacs) -> None:
    status, headers, body = http(f"{pacs.server.url}/studies", headers=DICOM_JSON)
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Bearer realm="skypacs"'
    assert "Bearer" in json.loads(body)["error"]
    status, _, _ = http(f"{pacs.server.url}/studies/{pacs.study}", headers=AS_STORED)
    assert status == 401  # retrieval too, not only search


def test_a_wrong_token_is_401(pacs: Pacs) -> None:
    status, headers, body = http(f"{pacs.server.url}/studies", headers=DICOM_JSON, token=READ + "x")
    assert status == 401 and "WWW-Authenticate" in headers
    assert READ not in body.decode()
    status, _, _ = http(f"{pacs.server.url}/studies", headers={**DICOM_JSON, "Authorization": f"Basic {READ}"})
    assert status == 401


def test_health_checks_need_no_token(pacs: Pacs) -> None:
    root = pacs.server.url.removesuffix("/dicom-web")
    for url in (f"{root}/", f"{root}/health", f"{pacs.server.url}/health"):
        status, _, body = http(url)
        assert (status, json.loads(body)) == (200, {"status": "ok"}), url


def test_a_read_token_searches_and_retrieves(pacs: Pacs) -> None:
    status, _, body = http(f"{pacs.server.url}/studies?StudyInstanceUID={pacs.study}", headers=DICOM_JSON,
                           token=READ)
    assert status == 200 and json.loads(body)[0]["0020000D"]["Value"] == [pacs.study]
    instance = f"{pacs.server.url}/studies/{pacs.study}/series/{pacs.series}/instances/{pacs.sop}"
    status, _, body = http(instance, headers=AS_STORED, token=READ)
    assert status == 200 and body == pacs.data
    status, _, body = http(instance, method="HEAD", headers=AS_STORED, token=READ)
    assert status == 200 and body == b""


def test_a_read_token_may_not_store_or_delete(pacs: Pacs) -> None:
    data = clone("CT_small.dcm", StudyInstanceUID=new_uid(), SeriesInstanceUID=new_uid(), SOPInstanceUID=new_uid())
    status, headers, body = http(f"{pacs.server.url}/studies", method="POST", body=stow_body(data),
                                 headers={"Content-Type": STOW_TYPE, **DICOM_JSON}, token=READ)
    assert status == 403 and "write token" in json.loads(body)["error"]
    assert "WWW-Authenticate" not in headers
    status, _, _ = http(f"{pacs.server.url}/studies/{pacs.study}", method="DELETE", token=READ)
    assert status == 403
    instance = f"{pacs.server.url}/studies/{pacs.study}/series/{pacs.series}/instances/{pacs.sop}"
    assert http(instance, headers=AS_STORED, token=READ)[0] == 200  # still there


def test_a_write_token_stores_then_deletes(pacs: Pacs) -> None:
    study, series, sop = new_uid(), new_uid(), new_uid()
    data = clone("CT_small.dcm", StudyInstanceUID=study, SeriesInstanceUID=series, SOPInstanceUID=sop)
    status, _, body = http(f"{pacs.server.url}/studies", method="POST", body=stow_body(data),
                           headers={"Content-Type": STOW_TYPE, **DICOM_JSON}, token=WRITE)
    assert status == 200, body
    pacs.archive.indexer().drain_once()  # what the indexer process of skypacs serve does
    instance = f"{pacs.server.url}/studies/{study}/series/{series}/instances/{sop}"
    assert http(instance, headers=AS_STORED, token=READ)[2] == data
    status, _, _ = http(f"{pacs.server.url}/studies/{study}", method="DELETE", token=WRITE)
    assert status in (200, 202, 204)
    assert http(instance, headers=AS_STORED, token=READ)[0] == 404


def test_preflight_from_the_viewer_needs_no_token(pacs: Pacs) -> None:
    status, headers, body = http(f"{pacs.server.url}/studies", method="OPTIONS", headers={
        "Origin": VIEWER, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization,accept"})
    assert (status, body) == (204, b"")
    assert headers["Access-Control-Allow-Origin"] == VIEWER
    assert "DELETE" in headers["Access-Control-Allow-Methods"]
    assert "authorization" in headers["Access-Control-Allow-Headers"].lower()
    assert int(headers["Access-Control-Max-Age"]) > 0


def test_preflight_from_another_origin_gets_no_cors_headers(pacs: Pacs) -> None:
    _, headers, _ = http(f"{pacs.server.url}/studies", method="OPTIONS", headers={
        "Origin": "https://evil.example.org", "Access-Control-Request-Method": "GET"})
    assert headers["Access-Control-Allow-Origin"] is None


def test_answers_to_the_viewer_carry_its_origin_even_when_refused(pacs: Pacs) -> None:
    status, headers, _ = http(f"{pacs.server.url}/studies", headers={**DICOM_JSON, "Origin": VIEWER}, token=READ)
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == VIEWER and "Origin" in headers["Vary"]
    assert "Warning" in headers["Access-Control-Expose-Headers"]
    status, headers, _ = http(f"{pacs.server.url}/studies", headers={**DICOM_JSON, "Origin": VIEWER})
    assert status == 401 and headers["Access-Control-Allow-Origin"] == VIEWER  # the page can read why
    _, headers, _ = http(f"{pacs.server.url}/studies", headers={**DICOM_JSON, "Origin": "https://evil.example.org"},
                         token=READ)
    assert headers["Access-Control-Allow-Origin"] is None


def test_embedded_server_takes_tokens_and_origins_from_the_settings(tmp_path: Path) -> None:
    archive = EmbeddedArchive(Settings(data_dir=tmp_path / "data", http_tokens={READ: "read"},
                                       cors_origins=(VIEWER,)))
    server = embedded_server(archive, port=0)
    assert server.tokens == {READ: "read"} and server.cors_origins == (VIEWER,)
    assert embedded_server(EmbeddedArchive(Settings(data_dir=tmp_path / "open")), port=0).tokens is None


def stow_body(*parts: bytes) -> bytes:
    return b"".join(multipart.multipart_body([multipart.Part("application/dicom", [data]) for data in parts],
                                             BOUNDARY))


# --- skypacs serve: a token of its own ----------------------------------------------------------------------

def start_serve(data_dir: Path) -> tuple[subprocess.Popen[str], list[str]]:
    """``skypacs serve`` and what it printed up to its startup line."""
    process = subprocess.Popen(
        [sys.executable, "-m", "skypacs.cli", "serve", "--data-dir", str(data_dir), "--dimse-port", "0",
         "--dimse-host", "127.0.0.1", "--http-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (lines and "SkyPACS serving" in lines[-1]):
        line = process.stdout.readline()
        assert line or process.poll() is None, "serve exited:\n" + "".join(lines)
        lines.append(line)
    return process, lines


def stop_serve(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def test_serve_makes_a_token_once_shows_it_once_and_keeps_it_owner_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    token_file = data_dir / "api-token"
    process, lines = start_serve(data_dir)
    try:
        token = token_file.read_text().strip()
        assert len(token) >= 40 and stat.S_IMODE(token_file.stat().st_mode) == 0o600
        output = "".join(lines)
        assert output.count(token) == 2  # the token, then the curl line using it
        assert f'curl -H "Authorization: Bearer {token}"' in output
        match = re.search(r"DICOMweb at (http://127\.0\.0\.1:\d+/dicom-web) \(bearer token in (\S+)\)", lines[-1])
        assert match and match.group(2) == str(token_file), lines[-1]
        assert http(f"{match.group(1)}/studies", headers=DICOM_JSON)[0] == 401
        assert http(f"{match.group(1)}/studies", headers=DICOM_JSON, token=token)[0] in (200, 204)
    finally:
        stop_serve(process)
    assert process.returncode == 0

    process, lines = start_serve(data_dir)
    try:
        assert token not in "".join(lines)  # shown once only
        assert str(token_file) in lines[-1]
        url = re.search(r"DICOMweb at (\S+)", lines[-1])
        assert url and http(f"{url.group(1)}/studies", headers=DICOM_JSON, token=token)[0] in (200, 204)
    finally:
        stop_serve(process)
    assert token_file.read_text().strip() == token


def test_serve_with_configured_tokens_makes_none(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "skypacs.toml").write_text(f'[http.tokens]\n"{READ}" = "read"\n')
    process, lines = start_serve(data_dir)
    try:
        assert not (data_dir / "api-token").exists()
        assert "tokens of the configuration" in lines[-1]
        url = re.search(r"DICOMweb at (\S+)", lines[-1])
        assert url and http(f"{url.group(1)}/studies", headers=DICOM_JSON, token=READ)[0] in (200, 204)
    finally:
        stop_serve(process)
