"""The embedded server: WSGI translation (synthetic environs) and the waitress lifecycle (loopback)."""

from __future__ import annotations

import http.client
import io
import json
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from skypacs.dicomweb.http import Request, Response, Route, Router, json_response
from skypacs.dicomweb.server import DicomWebServer, wsgi_app


def show(request: Request, params: Mapping[str, str]) -> Response:
    return json_response({"path": request.path, "query": request.query, "base_url": request.base_url,
                          "params": dict(params), "accept": request.headers.get("accept"),
                          "body": request.body if isinstance(request.body, bytes) else b"".join(request.body).decode()})


ROUTER = Router([Route("GET", "/studies", show), Route("GET", "/studies/{study}/series", show),
                 Route("POST", "/studies", show)])


def call(path: str, query: str = "", **environ: Any) -> tuple[str, dict[str, str], Any]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    env = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query, "SCRIPT_NAME": "",
           "SERVER_NAME": "pacs", "SERVER_PORT": "8080", "wsgi.url_scheme": "http",
           "wsgi.input": io.BytesIO(b""), **environ}
    body = b"".join(wsgi_app(ROUTER)(env, start_response))
    return seen["status"], seen["headers"], json.loads(body)


def test_dicomweb_is_mounted_under_its_prefix() -> None:
    status, _, body = call("/dicom-web/studies/1.2.3/series", HTTP_HOST="pacs.example:8080")
    assert status == "200 OK"
    assert body["path"] == "/studies/1.2.3/series" and body["params"] == {"study": "1.2.3"}
    assert body["base_url"] == "http://pacs.example:8080/dicom-web"


def test_base_url_follows_scheme_host_and_mount_point() -> None:
    _, _, body = call("/dicom-web/studies", SCRIPT_NAME="/pacs", **{"wsgi.url_scheme": "https"})
    assert body["base_url"] == "https://pacs:8080/pacs/dicom-web"
    _, _, body = call("/dicom-web/studies", SERVER_PORT="443", **{"wsgi.url_scheme": "https"})
    assert body["base_url"] == "https://pacs/dicom-web"


def test_query_is_decoded_as_utf8_and_headers_are_passed() -> None:
    _, _, body = call("/dicom-web/studies", "PatientName=M%C3%BCller%2A&includefield=a&includefield=b",
                      HTTP_ACCEPT="application/dicom+json")
    assert body["query"] == [["PatientName", "Müller*"], ["includefield", "a"], ["includefield", "b"]]
    assert body["accept"] == "application/dicom+json"


def test_unescaped_utf8_in_the_query_string_is_decoded() -> None:
    _, _, body = call("/dicom-web/studies", "PatientName=Müller".encode().decode("latin-1"))
    assert body["query"] == [["PatientName", "Müller"]]


def test_undecodable_query_is_400() -> None:
    status, headers, body = call("/dicom-web/studies", "PatientName=M%FCller")
    assert status == "400 Bad Request" and "UTF-8" in body["error"]
    assert headers["Content-Type"] == "application/json"


def test_request_body_is_read_as_chunks() -> None:
    _, _, body = call("/dicom-web/studies", REQUEST_METHOD="POST", CONTENT_TYPE="application/dicom",
                      CONTENT_LENGTH="5", **{"wsgi.input": io.BytesIO(b"hello")})
    assert body["body"] == "hello"


def test_root_answers_health_checks_only() -> None:
    assert call("/health")[0] == "200 OK" and call("/")[0] == "200 OK"
    assert call("/dicom-web")[0] == "404 Not Found"  # the DICOMweb root itself is no resource
    assert call("/studies")[0] == "404 Not Found"  # outside the prefix
    assert call("/dicom-webx/studies")[0] == "404 Not Found"


# --- the server on loopback ------------------------------------------------------------------------------

def chunks(_request: Request, _params: Mapping[str, str]) -> Response:
    def body() -> Iterator[bytes]:
        for index in range(32):
            yield bytes([65 + index % 26]) * 65536

    return Response(200, {"Content-Type": "application/octet-stream"}, body())


def slow(_request: Request, _params: Mapping[str, str]) -> Response:
    time.sleep(0.5)
    return json_response({"slow": True})


@pytest.fixture
def server() -> Iterator[DicomWebServer]:
    router = Router([Route("GET", "/chunks", chunks), Route("GET", "/slow", slow), Route("GET", "/studies", show)])
    server = DicomWebServer(router, port=0, threads=2)
    server.start()
    yield server
    server.stop()


def connect(server: DicomWebServer) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)


def test_ephemeral_port_on_loopback(server: DicomWebServer) -> None:
    assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}/dicom-web"
    connection = connect(server)
    connection.request("GET", "/dicom-web/studies?PatientName=Smith%2A")
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("Server") == "SkyPACS"
    body = json.loads(response.read())
    assert body["query"] == [["PatientName", "Smith*"]]
    assert body["base_url"] == f"http://127.0.0.1:{server.port}/dicom-web"


def test_bodies_are_streamed_in_chunks(server: DicomWebServer) -> None:
    connection = connect(server)
    connection.request("GET", "/dicom-web/chunks")
    response = connection.getresponse()
    assert response.getheader("Transfer-Encoding") == "chunked"
    data = response.read()
    assert len(data) == 32 * 65536 and data[:1] == b"A" and data[-1:] == bytes([65 + 31 % 26])


def test_stop_lets_requests_in_flight_finish_then_frees_the_port(server: DicomWebServer) -> None:
    port = server.port
    idle = connect(server)  # a keep-alive connection that stays open
    idle.request("GET", "/dicom-web/studies")
    idle.getresponse().read()
    results: list[int] = []

    def fetch() -> None:
        connection = connect(server)
        connection.request("GET", "/dicom-web/slow")
        results.append(connection.getresponse().status)

    client = threading.Thread(target=fetch)
    client.start()
    time.sleep(0.2)
    started = time.monotonic()
    server.stop()
    client.join(10)
    assert results == [200] and time.monotonic() - started < 5
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    server.stop()  # idempotent
    with DicomWebServer(ROUTER, port=port) as again:  # the port is free again
        assert again.port == port


def test_start_refuses_a_taken_port() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        server = DicomWebServer(ROUTER, port=holder.getsockname()[1])
        with pytest.raises(OSError):
            server.start()


def test_context_manager_starts_and_stops() -> None:
    with DicomWebServer(ROUTER, port=0) as server:
        connection = connect(server)
        connection.request("GET", "/health")
        assert connection.getresponse().status == 200
    assert server.port == 0
