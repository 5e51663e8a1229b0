"""CORS: what a browser on another origin (OHIF) is told, and what it is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from skypacs.config import load_settings
from skypacs.dicomweb.cors import allowed_origin, is_preflight, preflight_response, response_headers
from skypacs.dicomweb.http import Headers

VIEWER = "https://viewer.example.org"
ORIGINS = (VIEWER,)


def preflight(origin: str, method: str = "GET", headers: str = "") -> Headers:
    items = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        items["Access-Control-Request-Headers"] = headers
    return Headers(items)


def test_only_configured_origins_are_allowed() -> None:
    assert allowed_origin(ORIGINS, VIEWER) == VIEWER
    assert allowed_origin(ORIGINS, "https://evil.example.org") is None
    assert allowed_origin(ORIGINS, "http://viewer.example.org") is None  # another scheme, another origin
    assert allowed_origin(ORIGINS, None) is None
    assert allowed_origin((), VIEWER) is None
    assert allowed_origin(("*",), "http://localhost:3000") == "http://localhost:3000"


def test_a_preflight_is_an_options_request_with_origin_and_requested_method() -> None:
    assert is_preflight("OPTIONS", preflight(VIEWER))
    assert not is_preflight("OPTIONS", Headers({"Origin": VIEWER}))
    assert not is_preflight("GET", preflight(VIEWER))


def test_preflight_from_an_allowed_origin_lists_methods_and_the_asked_dicomweb_headers() -> None:
    answer = preflight_response(ORIGINS, preflight(VIEWER, "POST", "authorization, content-type, X-Evil, Range"))
    assert answer.status == 204 and answer.read() == b""
    assert answer.headers["Access-Control-Allow-Origin"] == VIEWER
    assert answer.headers["Access-Control-Allow-Methods"] == "GET, HEAD, POST, DELETE, OPTIONS"
    allowed = [name.strip() for name in answer.headers["Access-Control-Allow-Headers"].split(",")]
    assert allowed == ["Authorization", "Accept", "Content-Type", "Range"]  # X-Evil left out
    assert int(answer.headers["Access-Control-Max-Age"]) > 0
    assert "Origin" in answer.headers["Vary"]


def test_preflight_from_another_origin_gets_no_cors_headers() -> None:
    answer = preflight_response(ORIGINS, preflight("https://evil.example.org"))
    assert not [name for name in answer.headers if name.startswith("Access-Control-")]


def test_actual_responses_name_the_origin_and_expose_the_dicomweb_headers() -> None:
    headers = response_headers(ORIGINS, VIEWER)
    assert headers["Access-Control-Allow-Origin"] == VIEWER and headers["Vary"] == "Origin"
    assert headers["Access-Control-Expose-Headers"] == "Content-Type, Content-Length, Warning, Location"
    assert response_headers(ORIGINS, "https://evil.example.org") == {"Vary": "Origin"}
    assert response_headers((), VIEWER) == {}


def test_origins_from_the_file_and_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "skypacs.toml").write_text(f'[http]\ncors_origins = ["{VIEWER}/"]\n')
    assert load_settings(data_dir=tmp_path, environ={}).cors_origins == ORIGINS
    environ = {"SKYPACS_CORS_ORIGINS": "*"}
    assert load_settings(data_dir=tmp_path, environ=environ).cors_origins == ("*",)
    with pytest.raises(ValueError, match="CORS origin"):
        load_settings(data_dir=tmp_path, environ={"SKYPACS_CORS_ORIGINS": "viewer.example.org"})
