"""QIDO-RS over HTTP as clients use it: dicomweb-client and raw HTTP against the embedded server, the
same route through the Chalice app, and ``skypacs serve`` with its DICOMweb port.

The archive holds real files (pydicom's and pydicom-data's) ingested through the store service and the
indexer, plus clones with chosen names: two Smiths for the wildcard, a UTF-8 name for decoding.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from skypacs.config import Settings
from skypacs.dicomweb.server import DicomWebServer, embedded_server, start_embedded_server
from skypacs.embedded import EmbeddedArchive
from tests.conftest import dicom_file
from tests.dicom_files import clone, new_uid

FILES = ["CT_small.dcm", "MR_small.dcm", "emri_small.dcm", "test-SR.dcm", "rtplan.dcm"]
STUDY_UID, SERIES_UID, SOP_UID, PATIENT_NAME = "0020000D", "0020000E", "00080018", "00100010"
RETRIEVE_URL, STUDY_DESCRIPTION, INSTANCES_IN_STUDY = "00081190", "00081030", "00201208"
UTF8_NAME = "Müller^Jürgen"
NAMED_PATIENTS = (("Smith^John", "S1"), ("Smithers^Waylon", "S2"), ("Jones^Smith", "J1"))


@dataclass
class Archive:
    archive: EmbeddedArchive
    server: DicomWebServer
    utf8_study: str
    utf8_series: list[str]
    smith_studies: set[str]

    @property
    def url(self) -> str:
        return self.server.url

    def client(self) -> DICOMwebClient:
        return DICOMwebClient(url=self.url)

    @property
    def study_count(self) -> int:
        return len(FILES) + 1 + len(NAMED_PATIENTS)


def build_archive(data_dir: Path) -> tuple[EmbeddedArchive, str, list[str], set[str]]:
    archive = EmbeddedArchive(Settings(data_dir=data_dir))
    for name in FILES:
        archive.store_service.store_part10(dicom_file(name).read_bytes())
    # One study in UTF-8 (ISO_IR 192), two series of 2 and 1 CT instances.
    study, series = new_uid(), [new_uid(), new_uid()]
    for series_uid, count in zip(series, (2, 1), strict=True):
        for _ in range(count):
            archive.store_service.store_part10(clone(
                "CT_small.dcm", StudyInstanceUID=study, SeriesInstanceUID=series_uid, SOPInstanceUID=new_uid(),
                SpecificCharacterSet="ISO_IR 192", PatientName=UTF8_NAME, PatientID="UTF8-1",
                StudyDescription="Kopf nativ",
            ))
    smiths = set()
    for name, patient_id in NAMED_PATIENTS:
        uid = new_uid()
        if name.startswith("Smith"):
            smiths.add(uid)
        archive.store_service.store_part10(clone(
            "MR_small.dcm", StudyInstanceUID=uid, SeriesInstanceUID=new_uid(), SOPInstanceUID=new_uid(),
            PatientName=name, PatientID=patient_id,
        ))
    archive.indexer().drain_once()
    return archive, study, series, smiths


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    archive, study, series, smiths = build_archive(tmp_path_factory.mktemp("qido") / "data")
    server = embedded_server(archive, port=0)
    server.start()
    yield Archive(archive, server, study, series, smiths)
    server.stop()


def retrieve_path(item: dict[str, Any]) -> str:
    """The path of an item's RetrieveURL. Only the path: dicomweb-client (0.61) sends ``Host`` without
    the port (``Host: 127.0.0.1``), and the server builds URLs from the Host the client sent (RFC 9110
    7.2; right behind a reverse proxy), so the port is missing in what that client gets back. Raw HTTP
    clients send the port and get it back (``test_retrieve_url_follows_the_host_the_client_used``)."""
    url = item[RETRIEVE_URL]
    assert url["vr"] == "UR"
    return str(urlsplit(url["Value"][0]).path)


def without_retrieve_url(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{tag: value for tag, value in item.items() if tag != RETRIEVE_URL} for item in items]


def uids(items: list[dict[str, Any]], tag: str = STUDY_UID) -> set[str]:
    return {item[tag]["Value"][0] for item in items}


def raw(url: str, headers: dict[str, str] | None = None) -> tuple[int, Message, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


# --- dicomweb-client ------------------------------------------------------------------------------------

def test_search_for_studies_finds_every_study_with_its_retrieve_url(pacs: Archive) -> None:
    studies = pacs.client().search_for_studies()
    assert len(studies) == pacs.study_count
    for study in studies:
        uid = study[STUDY_UID]["Value"][0]
        assert retrieve_path(study) == f"/dicom-web/studies/{uid}"
    utf8 = next(s for s in studies if s[STUDY_UID]["Value"][0] == pacs.utf8_study)
    assert utf8[PATIENT_NAME]["Value"][0]["Alphabetic"] == UTF8_NAME
    assert utf8[INSTANCES_IN_STUDY]["Value"] == [3]


def test_wildcard_reaches_the_query_as_a_wildcard(pacs: Archive) -> None:
    """requests sends ``*`` as ``%2A``; it must arrive as ``*`` (Orthanc 1.10 took it literally)."""
    studies = pacs.client().search_for_studies(search_filters={"PatientName": "Smith*"})
    assert uids(studies) == pacs.smith_studies


def test_utf8_names_match(pacs: Archive) -> None:
    client = pacs.client()
    assert uids(client.search_for_studies(search_filters={"PatientName": UTF8_NAME})) == {pacs.utf8_study}
    assert uids(client.search_for_studies(search_filters={"PatientName": "müll*"})) == {pacs.utf8_study}


def test_fuzzy_matching_matches_name_component_prefixes(pacs: Archive) -> None:
    client = pacs.client()
    assert client.search_for_studies(search_filters={"PatientName": "jür"}) == []
    fuzzy = client.search_for_studies(search_filters={"PatientName": "jür"}, fuzzymatching=True)
    assert uids(fuzzy) == {pacs.utf8_study}


def test_search_for_series_of_a_study(pacs: Archive) -> None:
    series = pacs.client().search_for_series(study_instance_uid=pacs.utf8_study)
    assert uids(series, SERIES_UID) == set(pacs.utf8_series)
    for item in series:
        assert retrieve_path(item) == f"/dicom-web/studies/{pacs.utf8_study}/series/{item[SERIES_UID]['Value'][0]}"


def test_search_for_series_across_studies_with_filters(pacs: Archive) -> None:
    series = pacs.client().search_for_series(search_filters={"Modality": "CT"})
    assert set(pacs.utf8_series) <= uids(series, SERIES_UID)
    assert all(item["00080060"]["Value"] == ["CT"] for item in series)


def test_search_for_instances_at_each_scope(pacs: Archive) -> None:
    client = pacs.client()
    first_series = pacs.utf8_series[0]
    in_series = client.search_for_instances(study_instance_uid=pacs.utf8_study, series_instance_uid=first_series)
    assert len(in_series) == 2
    for item in in_series:
        sop = item[SOP_UID]["Value"][0]
        assert retrieve_path(item) == f"/dicom-web/studies/{pacs.utf8_study}/series/{first_series}/instances/{sop}"
    assert len(client.search_for_instances(study_instance_uid=pacs.utf8_study)) == 3
    assert len(client.search_for_instances()) == len(FILES) + 3 + 3
    # The non-standard /series/{series}/instances resource, by raw HTTP.
    status, _, body = raw(f"{pacs.url}/series/{first_series}/instances")
    assert status == 200 and len(json.loads(body)) == 2


def test_fields_are_included(pacs: Archive) -> None:
    plain = pacs.client().search_for_series(study_instance_uid=pacs.utf8_study)
    assert all(STUDY_DESCRIPTION not in item for item in plain)
    series = pacs.client().search_for_series(study_instance_uid=pacs.utf8_study, fields=["StudyDescription"])
    assert {item[STUDY_DESCRIPTION]["Value"][0] for item in series} == {"Kopf nativ"}


def test_limit_and_offset_page_through_results(pacs: Archive) -> None:
    client = pacs.client()
    everything = client.search_for_studies()
    pages = [client.search_for_studies(limit=3, offset=offset) for offset in range(0, pacs.study_count, 3)]
    assert [len(page) for page in pages[:-1]] == [3] * (len(pages) - 1)
    assert [s[STUDY_UID] for page in pages for s in page] == [s[STUDY_UID] for s in everything]
    assert client.search_for_studies(offset=pacs.study_count) == []


def test_get_remaining_follows_the_pages(pacs: Archive) -> None:
    studies = pacs.client().search_for_studies(limit=4, get_remaining=True)
    assert len(studies) == pacs.study_count


def test_date_range(pacs: Archive) -> None:
    studies = pacs.client().search_for_studies(search_filters={"StudyDate": "20040101-20041231"})
    dates = {s["00080020"]["Value"][0] for s in studies}
    assert dates and all(d.startswith("2004") for d in dates)


def test_no_match_is_an_empty_list(pacs: Archive) -> None:
    assert pacs.client().search_for_studies(search_filters={"PatientID": "nobody"}) == []


def test_bad_parameters_raise_http_400_in_the_client(pacs: Archive) -> None:
    with pytest.raises(requests.HTTPError) as caught:
        pacs.client().search_for_studies(search_filters={"Foo": "bar"})
    assert caught.value.response is not None and caught.value.response.status_code == 400


# --- raw HTTP ---------------------------------------------------------------------------------------------

def test_percent_encoded_wildcard_and_utf8_in_raw_query_strings(pacs: Archive) -> None:
    status, headers, body = raw(f"{pacs.url}/studies?PatientName=Smith%2A")
    assert status == 200 and uids(json.loads(body)) == pacs.smith_studies
    assert headers["Content-Type"] == "application/dicom+json"
    status, _, body = raw(f"{pacs.url}/studies?PatientName=M%C3%BCller%5EJ%C3%BCrgen")
    assert status == 200 and uids(json.loads(body)) == {pacs.utf8_study}
    assert UTF8_NAME.encode() in body  # UTF-8 on the wire, not \\u escapes


@pytest.mark.parametrize(
    ("accept", "status", "content_type"),
    [
        ("application/dicom+json", 200, "application/dicom+json"),
        ("application/json", 200, "application/json"),
        ("*/*", 200, "application/dicom+json"),
        ("application/dicom+xml;q=0.9, application/dicom+json;q=0.5", 200, "application/dicom+json"),
        ("application/dicom+xml", 406, "application/json"),
        ('multipart/related; type="application/dicom+xml"', 406, "application/json"),
    ],
)
def test_accept_negotiation(pacs: Archive, accept: str, status: int, content_type: str) -> None:
    code, headers, body = raw(f"{pacs.url}/studies?limit=1", {"Accept": accept})
    assert code == status and headers["Content-Type"] == content_type
    if status == 406:
        assert "not supported" in json.loads(body)["error"]


@pytest.mark.parametrize(
    ("query", "fragment"),
    [("limit=-1", "limit"), ("Foo=bar", "Foo"), ("offset=x", "offset"), ("PatientName=%FF", "UTF-8")],
)
def test_bad_parameters_are_400_with_a_json_reason(pacs: Archive, query: str, fragment: str) -> None:
    status, headers, body = raw(f"{pacs.url}/studies?{query}")
    assert status == 400 and headers["Content-Type"] == "application/json"
    error = json.loads(body)["error"]
    assert fragment in error and "Smith" not in error


def test_truncation_is_announced_in_a_warning_header(pacs: Archive) -> None:
    status, headers, body = raw(f"{pacs.url}/studies?limit=2")
    assert status == 200 and len(json.loads(body)) == 2
    assert re.fullmatch(r'299 127\.0\.0\.1:\d+: "The number of results exceeded the maximum supported by '
                        r'the server\. Additional results can be requested\."', headers["Warning"])
    _, complete, _ = raw(f"{pacs.url}/studies")
    assert complete["Warning"] is None


def test_unknown_resources_and_methods(pacs: Archive) -> None:
    assert raw(f"{pacs.url}/patients")[0] == 404
    request = urllib.request.Request(f"{pacs.url}/studies", method="DELETE")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 405 and "GET" in caught.value.headers["Allow"]


def test_health_for_load_balancers(pacs: Archive) -> None:
    root = pacs.url.removesuffix("/dicom-web")
    assert raw(f"{root}/health")[0] == 200 and raw(f"{root}/")[0] == 200
    assert raw(f"{pacs.url}/health")[0] == 200


def test_retrieve_url_follows_the_host_the_client_used(pacs: Archive) -> None:
    _, _, body = raw(f"{pacs.url}/studies?PatientID=UTF8-1")
    (study,) = json.loads(body)
    assert study[RETRIEVE_URL]["Value"] == [f"{pacs.url}/studies/{pacs.utf8_study}"]
    _, _, body = raw(f"{pacs.url}/studies?PatientID=UTF8-1", {"Host": "pacs.example.org"})
    (study,) = json.loads(body)
    assert study[RETRIEVE_URL]["Value"] == [f"http://pacs.example.org/dicom-web/studies/{pacs.utf8_study}"]


# --- the Chalice app (API Gateway REST) over the same route table ----------------------------------------

@pytest.fixture
def chalice_app(pacs: Archive, monkeypatch: pytest.MonkeyPatch) -> Any:
    from functions.dicomweb import app as module

    monkeypatch.setattr(module, "query_service", lambda: pacs.archive.query_service)
    return module


def test_chalice_app_answers_like_the_embedded_server(pacs: Archive, chalice_app: Any) -> None:
    from chalice.test import Client

    with Client(chalice_app.app) as client:
        response = client.http.get("/studies?PatientName=Smith%2A&includefield=StudyDescription&limit=10",
                                   headers={"Host": "api.example.org", "Accept": "application/dicom+json"})
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/dicom+json"
    lambda_studies = json.loads(response.body)
    _, _, body = raw(f"{pacs.url}/studies?PatientName=Smith%2A&includefield=StudyDescription&limit=10")
    embedded = json.loads(body)
    assert without_retrieve_url(lambda_studies) == without_retrieve_url(embedded) and uids(lambda_studies) == pacs.smith_studies
    assert all(s[RETRIEVE_URL]["Value"][0].startswith("https://api.example.org/studies/") for s in lambda_studies)


def test_chalice_app_keeps_repeated_parameters_and_scope(pacs: Archive, chalice_app: Any) -> None:
    from chalice.test import Client

    with Client(chalice_app.app) as client:
        series = client.http.get(f"/studies/{pacs.utf8_study}/series?includefield=StudyDescription"
                                 "&includefield=PatientName")
        bad = client.http.get("/studies?limit=-1")
        xml = client.http.get("/studies", headers={"Accept": "application/dicom+xml"})
        health = client.http.get("/health")
    items = json.loads(series.body)
    assert uids(items, SERIES_UID) == set(pacs.utf8_series)
    assert all(STUDY_DESCRIPTION in item and PATIENT_NAME in item for item in items)
    assert bad.status_code == 400 and "limit" in json.loads(bad.body)["error"]
    assert xml.status_code == 406 and health.status_code == 200


def test_chalice_truncation_warning_and_stage_prefix(pacs: Archive, chalice_app: Any) -> None:
    """A REST API event as API Gateway sends it on the execute-api domain: the stage is in
    ``requestContext.path``, so RetrieveURLs keep it."""
    event = {
        "resource": "/studies", "path": "/studies", "httpMethod": "GET",
        "headers": {"Host": "abc123.execute-api.eu-west-1.amazonaws.com", "X-Forwarded-Proto": "https"},
        "multiValueHeaders": {},
        "queryStringParameters": {"limit": "1"}, "multiValueQueryStringParameters": {"limit": ["1"]},
        "pathParameters": None, "stageVariables": None, "body": None, "isBase64Encoded": False,
        "requestContext": {"resourcePath": "/studies", "httpMethod": "GET", "path": "/prod/studies",
                           "stage": "prod", "domainName": "abc123.execute-api.eu-west-1.amazonaws.com"},
    }
    response = chalice_app.app(event, None)
    assert response["statusCode"] == 200
    assert response["headers"]["Warning"].startswith('299 abc123.execute-api.eu-west-1.amazonaws.com: "')
    (study,) = json.loads(response["body"])
    assert study[RETRIEVE_URL]["Value"][0].startswith(
        "https://abc123.execute-api.eu-west-1.amazonaws.com/prod/studies/"
    )


def test_chalice_app_without_a_query_index_is_503(monkeypatch: pytest.MonkeyPatch) -> None:
    from chalice.test import Client

    from functions.dicomweb import app as module

    with Client(module.app) as client:
        response = client.http.get("/studies")
    assert response.status_code == 503 and "query index" in json.loads(response.body)["error"]


def test_a_taken_default_port_falls_back_to_an_ephemeral_one(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        archive = EmbeddedArchive(Settings(data_dir=tmp_path / "data", http_port=taken))
        with pytest.raises(OSError):
            start_embedded_server(archive)  # asked for: a hard error, like the DIMSE port
        server = start_embedded_server(archive, port_is_default=True)
        try:
            assert server.port not in (0, taken)
            assert raw(f"{server.url}/studies")[0] == 200
        finally:
            server.stop()


# --- skypacs serve --------------------------------------------------------------------------------------

def test_serve_runs_dicomweb_next_to_the_gateway(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    archive, study, _, _ = build_archive(data_dir)
    del archive
    process = subprocess.Popen(
        [sys.executable, "-m", "skypacs.cli", "serve", "--data-dir", str(data_dir), "--dimse-port", "0",
         "--dimse-host", "127.0.0.1", "--http-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        deadline, line = time.monotonic() + 30, ""
        while time.monotonic() < deadline and "SkyPACS serving" not in line:
            line = process.stdout.readline()
            assert line or process.poll() is None, "serve exited"
        match = re.search(r"DIMSE listening as SKYPACS on port \d+, DICOMweb at (http://127\.0\.0\.1:\d+/dicom-web)",
                          line)
        assert match, line
        token = (data_dir / "api-token").read_text().strip()  # made by serve on its first start
        client = DICOMwebClient(url=match.group(1), headers={"Authorization": f"Bearer {token}"})
        studies = client.search_for_studies(search_filters={"PatientID": "UTF8-1"})
        assert uids(studies) == {study}
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def test_serve_without_dicomweb(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "skypacs.cli", "serve", "--data-dir", str(tmp_path / "data"), "--dimse-port", "0",
         "--dimse-host", "127.0.0.1", "--http-port", "-1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        assert process.stdout is not None
        line = ""
        while "SkyPACS serving" not in line:
            line = process.stdout.readline()
            assert line or process.poll() is None, "serve exited"
        assert line.rstrip().endswith("DICOMweb off")
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def test_serve_refuses_an_http_port_it_was_given_but_cannot_have(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "skypacs.cli", "serve", "--data-dir", str(tmp_path / "data"), "--dimse-port", "0",
             "--dimse-host", "127.0.0.1", "--http-port", str(taken)],
            check=False, capture_output=True, text=True, timeout=60,
        )
    assert result.returncode == 1
    assert f"cannot listen on HTTP port {taken}" in result.stderr
