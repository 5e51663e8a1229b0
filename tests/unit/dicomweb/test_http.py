"""Routing, content negotiation, query decoding and the one error mapping (skypacs.dicomweb.http)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

import pytest

from skypacs.dicomweb.http import (
    DICOM_JSON,
    JSON,
    Headers,
    MethodNotAllowed,
    NotAcceptable,
    Request,
    Response,
    Route,
    Router,
    UnsupportedMediaType,
    decode_query,
    error_response,
    health_routes,
    negotiate,
    parse_accept,
)
from skypacs.errors import (
    AccessDenied,
    BackendError,
    Conflict,
    InvalidQuery,
    InvalidUID,
    NotDicom,
    NotFound,
    SkyPacsError,
)

OFFERED = {DICOM_JSON: DICOM_JSON, JSON: JSON}


def request(path: str = "/", *, method: str = "GET", query: list[tuple[str, str]] | None = None,
            headers: dict[str, str] | None = None) -> Request:
    return Request(method, path, query or [], Headers(headers or {}), base_url="http://pacs:8080/dicom-web")


# --- headers and query strings --------------------------------------------------------------------------

def test_headers_are_case_insensitive_and_join_repeats() -> None:
    headers = Headers([("Accept", "application/json"), ("accept", "*/*"), ("X-Thing", "1")])
    assert headers["ACCEPT"] == "application/json, */*"
    assert "x-thing" in headers and headers.get("missing") is None
    assert sorted(headers) == ["Accept", "X-Thing"] and len(headers) == 2


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("PatientName=Smith%2A", [("PatientName", "Smith*")]),
        ("PatientName=M%C3%BCller", [("PatientName", "Müller")]),
        ("PatientName=%E5%B1%B1%E7%94%B0*", [("PatientName", "山田*")]),
        ("StudyDescription=CT+HEAD", [("StudyDescription", "CT HEAD")]),
        ("TimezoneOffsetFromUTC=%2B0100", [("TimezoneOffsetFromUTC", "+0100")]),
        ("includefield=00081030&includefield=PatientAge&AccessionNumber=",
         [("includefield", "00081030"), ("includefield", "PatientAge"), ("AccessionNumber", "")]),
        ("StudyDate=20200101-20201231", [("StudyDate", "20200101-20201231")]),
        ("", []),
    ],
)
def test_query_strings_are_percent_decoded_as_utf8(raw: str, expected: list[tuple[str, str]]) -> None:
    assert decode_query(raw) == expected


def test_query_string_bytes_are_taken_as_is() -> None:
    assert decode_query(b"PatientName=M%C3%BCller") == [("PatientName", "Müller")]


def test_unescaped_utf8_decodes_like_escaped_utf8() -> None:
    """Some clients send non-ASCII unescaped; WSGI hands those bytes over as latin-1 characters."""
    assert decode_query("PatientName=Müller*".encode()) == [("PatientName", "Müller*")]
    assert decode_query("PatientName=Müller*") == [("PatientName", "Müller*")]
    assert decode_query("PatientName=Müller".encode().decode("latin-1").encode("latin-1")) == [
        ("PatientName", "Müller")
    ]


def test_query_string_that_is_not_utf8_is_an_invalid_query() -> None:
    with pytest.raises(InvalidQuery, match="UTF-8"):
        decode_query("PatientName=M%FCller")
    with pytest.raises(InvalidQuery, match="UTF-8"):
        decode_query("PatientName=Müller".encode("latin-1"))


def test_too_many_query_parameters_are_refused() -> None:
    with pytest.raises(InvalidQuery, match="too many"):
        decode_query("&".join(f"a{i}=1" for i in range(1001)))


# --- content negotiation --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("accept", "answer"),
    [
        (None, DICOM_JSON),
        ("", DICOM_JSON),
        ("application/dicom+json", DICOM_JSON),
        ("application/json", JSON),
        ("*/*", DICOM_JSON),
        ("application/*", DICOM_JSON),
        ("application/dicom+json, application/json", DICOM_JSON),  # what dicomweb-client sends
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", DICOM_JSON),  # a browser
        ("application/dicom+xml, application/json;q=0.5", JSON),
        ("application/json;q=1.0, application/dicom+json;q=0.4", JSON),
        ("APPLICATION/DICOM+JSON; charset=utf-8", DICOM_JSON),
        ("application/dicom+json;q=0, */*", JSON),  # refused explicitly, anything else taken
    ],
)
def test_dicom_json_is_chosen_for_what_accepts_it(accept: str | None, answer: str) -> None:
    headers = {} if accept is None else {"Accept": accept}
    assert negotiate(request(headers=headers), OFFERED) == answer


@pytest.mark.parametrize(
    "accept",
    ['multipart/related; type="application/dicom+xml"', "application/dicom+xml", "text/html",
     "application/dicom+json;q=0, application/json;q=0"],
)
def test_nothing_acceptable_is_406_naming_what_is_supported(accept: str) -> None:
    with pytest.raises(NotAcceptable) as caught:
        negotiate(request(headers={"Accept": accept}), OFFERED, unsupported_note="XML is not supported.")
    assert "application/dicom+json" in str(caught.value) and "XML is not supported" in str(caught.value)


def test_accept_query_parameter_overrides_the_header() -> None:
    """PS3.18 8.3.3.1: a browser link can ask for a media type in the URL."""
    assert negotiate(request(query=[("accept", "application/json")], headers={"Accept": "text/html"}),
                     OFFERED) == JSON
    with pytest.raises(NotAcceptable):
        negotiate(request(query=[("accept", "application/dicom+xml")]), OFFERED)


def test_accept_parsing_keeps_parameters_and_clamps_q() -> None:
    ranges = parse_accept('multipart/related; type="application/dicom+xml"; q=2, *; q=x')
    assert ranges[0].type == "multipart/related" and ranges[0].params == (("type", "application/dicom+xml"),)
    assert ranges[0].q == 1.0 and ranges[1].type == "*/*" and ranges[1].q == 0.0


# --- routes ---------------------------------------------------------------------------------------------

def echo(request: Request, params: Mapping[str, str]) -> Response:
    return Response(200, {"Content-Type": "application/json"}, [json.dumps(dict(params)).encode()])


def test_route_matches_whole_segments_and_captures_parameters() -> None:
    route = Route("GET", "/studies/{study}/series", echo)
    assert route.params == ("study",)
    assert route.match("/studies/1.2.3/series") == {"study": "1.2.3"}
    assert route.match("/studies/1.2.3/series/") == {"study": "1.2.3"}
    assert route.match("/studies/1.2.3") is None
    assert route.match("/studies//series") is None
    assert route.match("/studies/1.2.3/series/4.5") is None
    assert Route("GET", "/", echo).match("/") == {} and Route("GET", "/", echo).match("") == {}


def test_router_dispatches_to_the_matching_route() -> None:
    router = Router([Route("GET", "/studies", echo), Route("GET", "/studies/{study}/series", echo)])
    response = router.dispatch(request("/studies/1.2/series"))
    assert response.status == 200 and json.loads(response.read()) == {"study": "1.2"}


def test_unknown_path_is_404_and_wrong_method_405_with_allow() -> None:
    router = Router([Route("GET", "/studies", echo)])
    missing = router.dispatch(request("/nothing"))
    assert missing.status == 404 and json.loads(missing.read()) == {"error": "no such resource"}
    wrong = router.dispatch(request("/studies", method="DELETE"))
    assert wrong.status == 405 and wrong.headers["Allow"] == "GET, HEAD"


def test_head_is_the_get_route_without_a_body() -> None:
    response = Router([Route("GET", "/studies", echo)]).dispatch(request("/studies", method="HEAD"))
    assert response.status == 200 and response.read() == b""


def test_duplicate_routes_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        Router([Route("GET", "/studies", echo), Route("GET", "/studies/", echo)])


def test_health_answers_200() -> None:
    router = Router(health_routes())
    for path in ("/", "/health"):
        response = router.dispatch(request(path))
        assert response.status == 200 and json.loads(response.read()) == {"status": "ok"}


# --- errors ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidQuery("limit must not be negative, got -1"), 400),
        (InvalidUID("StudyInstanceUID 1.02 is not a valid UID"), 400),
        (NotDicom("cannot decode"), 400),
        (AccessDenied("token does not allow search"), 403),
        (NotFound("no such study"), 404),
        (MethodNotAllowed("POST is not supported"), 405),
        (NotAcceptable("only application/dicom+json"), 406),
        (Conflict("SOP Instance UID already used"), 409),
        (UnsupportedMediaType("send application/dicom"), 415),
        (BackendError("disk full"), 503),
        (SkyPacsError("something of ours"), 500),
    ],
)
def test_each_error_maps_to_one_status_with_a_json_message(error: SkyPacsError, status: int) -> None:
    response = error_response(error)
    assert response.status == status
    assert response.headers["Content-Type"] == "application/json"
    body = json.loads(response.read())
    assert body == {"error": str(error) if status != 500 else "internal server error"}
    assert int(response.headers["Content-Length"]) == len(response.read())


def test_unexpected_exception_is_a_500_that_shows_and_logs_no_message(caplog: pytest.LogCaptureFixture) -> None:
    patient = "Smith" + "^John"

    def broken(_request: Request, _params: Mapping[str, str]) -> Response:
        raise KeyError(patient)

    with caplog.at_level(logging.DEBUG, logger="skypacs.dicomweb"):
        response = Router([Route("GET", "/studies", broken)]).dispatch(request("/studies"))
    assert response.status == 500 and json.loads(response.read()) == {"error": "internal server error"}
    assert "KeyError" in caplog.text and "GET /studies" in caplog.text and "broken" in caplog.text
    assert "Smith" not in caplog.text and "Smith" not in response.read().decode()


def test_backend_errors_invite_a_retry() -> None:
    assert error_response(BackendError("index busy")).headers["Retry-After"] == "1"
