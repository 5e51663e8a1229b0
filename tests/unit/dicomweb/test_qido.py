"""QIDO-RS routes over a recording query service: scope, parameters, headers, RetrieveURL."""

from __future__ import annotations

import json

import pytest

from skypacs.dicomweb import dicomweb_router
from skypacs.dicomweb.http import Headers, Request, Response, decode_query
from skypacs.dicomweb.qido import SEARCHES, retrieve_url, with_retrieve_url
from skypacs.query.model import Level
from tests.unit.dicomweb.conftest import FakeQueryService

BASE = "http://pacs.example:8080/dicom-web"
STUDY, SERIES, SOP = "1.2.840.1", "1.2.840.1.2", "1.2.840.1.2.3"


def get(service: FakeQueryService, target: str, *, headers: dict[str, str] | None = None,
        max_limit: int = 1000) -> Response:
    path, _, query = target.partition("?")
    request = Request("GET", path, decode_query(query), Headers(headers or {}), base_url=BASE)
    return dicomweb_router(service, max_limit=max_limit).dispatch(request)


def uid(tag_value: str) -> dict[str, object]:
    return {"vr": "UI", "Value": [tag_value]}


@pytest.mark.parametrize(
    ("path", "level", "study", "series"),
    [
        ("/studies", Level.STUDY, None, None),
        (f"/studies/{STUDY}/series", Level.SERIES, STUDY, None),
        ("/series", Level.SERIES, None, None),
        (f"/studies/{STUDY}/series/{SERIES}/instances", Level.IMAGE, STUDY, SERIES),
        (f"/studies/{STUDY}/instances", Level.IMAGE, STUDY, None),
        (f"/series/{SERIES}/instances", Level.IMAGE, None, SERIES),
        ("/instances", Level.IMAGE, None, None),
    ],
)
def test_each_resource_searches_its_level_within_its_scope(
    service: FakeQueryService, path: str, level: Level, study: str | None, series: str | None
) -> None:
    response = get(service, path)
    assert response.status == 200 and json.loads(response.read()) == []
    (query,) = service.queries
    assert query.level is level
    scoped = {m.keyword: m.value for m in query.matches}
    assert scoped.get("StudyInstanceUID") == study and scoped.get("SeriesInstanceUID") == series


def test_every_resource_of_ps3_18_is_routed() -> None:
    assert {path for path, _ in SEARCHES} >= {
        "/studies", "/studies/{study}/series", "/series", "/studies/{study}/series/{series}/instances",
        "/studies/{study}/instances", "/instances",
    }


def test_parameters_reach_the_query_model_decoded(service: FakeQueryService) -> None:
    get(service, "/studies?PatientName=M%C3%BCller%2A&StudyDate=20200101-&includefield=00081030"
                 "&includefield=PatientAge&limit=5&offset=10&fuzzymatching=true&accept=application/json")
    (query,) = service.queries
    assert query.match_for("00100010").value == "Müller*"  # type: ignore[union-attr]
    assert query.match_for("00080020").value == "20200101-"  # type: ignore[union-attr]
    assert {"00081030", "00101010"} <= query.include
    assert (query.limit, query.offset, query.fuzzy) == (5, 10, True)


def test_limit_is_capped_by_the_server_maximum(service: FakeQueryService) -> None:
    get(service, "/studies?limit=5000", max_limit=100)
    assert service.queries[0].limit == 100


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("/studies?limit=-1", "limit"),
        ("/studies?limit=ten", "limit"),
        ("/studies?offset=-3", "offset"),
        ("/studies?Foo=bar", "Foo"),
        ("/studies?fuzzymatching=maybe", "fuzzymatching"),
        ("/studies/1.2.*/series", "StudyInstanceUID"),
        ("/series/abc/instances", "SeriesInstanceUID"),
    ],
)
def test_bad_parameters_are_400_with_a_clear_message(service: FakeQueryService, target: str, message: str) -> None:
    response = get(service, target)
    assert response.status == 400
    assert message in json.loads(response.read())["error"]
    assert service.queries == []


def test_empty_result_is_200_with_an_empty_array(service: FakeQueryService) -> None:
    response = get(service, "/studies?PatientID=nobody")
    assert response.status == 200 and response.read() == b"[]"
    assert response.headers["Content-Type"] == "application/dicom+json" and "Warning" not in response.headers


def test_truncated_results_carry_the_warning_header(service: FakeQueryService) -> None:
    service.items, service.truncated = [{"0020000D": uid(STUDY)}], True
    response = get(service, "/studies?limit=1")
    assert response.headers["Warning"] == (
        '299 pacs.example:8080: "The number of results exceeded the maximum supported by the server. '
        'Additional results can be requested."'
    )


def test_results_carry_their_retrieve_url_in_tag_order(service: FakeQueryService) -> None:
    service.items = [{"0020000E": uid(SERIES), "0020000D": uid(STUDY), "00080060": {"vr": "CS", "Value": ["CT"]}}]
    (item,) = json.loads(get(service, "/series").read())
    assert item["00081190"] == {"vr": "UR", "Value": [f"{BASE}/studies/{STUDY}/series/{SERIES}"]}
    assert list(item) == sorted(item)


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        (Level.STUDY, f"{BASE}/studies/{STUDY}"),
        (Level.SERIES, f"{BASE}/studies/{STUDY}/series/{SERIES}"),
        (Level.IMAGE, f"{BASE}/studies/{STUDY}/series/{SERIES}/instances/{SOP}"),
    ],
)
def test_retrieve_url_per_level(level: Level, expected: str) -> None:
    item = {"0020000D": uid(STUDY), "0020000E": uid(SERIES), "00080018": uid(SOP)}
    assert retrieve_url(BASE + "/", level, item) == expected


def test_no_retrieve_url_without_the_uids_it_needs() -> None:
    """Never ``.../studies/null`` (a bug dcm4chee had): leave the attribute out instead."""
    item = {"0020000D": uid(STUDY), "00100010": {"vr": "PN"}}
    assert with_retrieve_url(item, Level.SERIES, BASE) == item
    assert with_retrieve_url({"0020000D": {"vr": "UI"}}, Level.STUDY, BASE) == {"0020000D": {"vr": "UI"}}


def test_json_is_only_labelled_as_asked(service: FakeQueryService) -> None:
    assert get(service, "/studies", headers={"Accept": "application/json"}).headers["Content-Type"] == "application/json"
    xml = get(service, "/studies", headers={"Accept": 'multipart/related; type="application/dicom+xml"'})
    assert xml.status == 406 and "application/dicom+xml" in json.loads(xml.read())["error"]
    assert len(service.queries) == 1  # the 406 never searched


def test_charset_other_than_utf8_is_406(service: FakeQueryService) -> None:
    assert get(service, "/studies?charset=utf-8").status == 200
    response = get(service, "/studies?charset=ISO-8859-1")
    assert response.status == 406 and "UTF-8" in json.loads(response.read())["error"]


def test_non_ascii_results_are_utf8(service: FakeQueryService) -> None:
    service.items = [{"0020000D": uid(STUDY), "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Müller^Jürgen"}]}}]
    body = get(service, "/studies").read()
    assert "Müller^Jürgen".encode() in body
