"""Bearer tokens: who may read, who may write, and the token ``skypacs serve`` makes for itself."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from skypacs.config import load_settings
from skypacs.dicomweb.auth import authorize, load_or_create_token, scope_of
from skypacs.dicomweb.http import error_response
from skypacs.errors import AccessDenied, Unauthenticated

READ = "r" * 24
WRITE = "w" * 24
TOKENS = {READ: "read", WRITE: "write"}


@pytest.mark.parametrize("method", ["GET", "HEAD", "get"])
def test_a_read_token_may_search_and_retrieve(method: str) -> None:
    authorize(TOKENS, method, f"Bearer {READ}")


@pytest.mark.parametrize("method", ["POST", "DELETE", "PUT"])
def test_a_read_token_may_not_store_or_delete(method: str) -> None:
    with pytest.raises(AccessDenied, match="write token"):
        authorize(TOKENS, method, f"Bearer {READ}")


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "DELETE"])
def test_a_write_token_may_do_everything(method: str) -> None:
    authorize(TOKENS, method, f"bearer  {WRITE} ")


@pytest.mark.parametrize("header", [None, "", "   ", "Bearer", "Bearer ", f"Basic {READ}", READ,
                                    "Bearer " + READ[:-1], "Bearer " + READ + "x", "Bearer " + "x" * 24])
def test_missing_malformed_or_unknown_tokens_are_unauthenticated(header: str | None) -> None:
    with pytest.raises(Unauthenticated) as caught:
        authorize(TOKENS, "GET", header)
    assert READ not in str(caught.value) and WRITE not in str(caught.value)


def test_a_token_with_an_unknown_scope_grants_nothing() -> None:
    assert scope_of({"t" * 24: "admin"}, "t" * 24) is None
    with pytest.raises(Unauthenticated):
        authorize({"t" * 24: "admin"}, "GET", "Bearer " + "t" * 24)


def test_no_tokens_configured_lets_nobody_in() -> None:
    with pytest.raises(Unauthenticated):
        authorize({}, "GET", f"Bearer {READ}")


def test_unauthenticated_is_401_with_a_bearer_challenge_and_denied_is_403() -> None:
    answer = error_response(Unauthenticated("no token"))
    assert answer.status == 401 and answer.headers["WWW-Authenticate"] == 'Bearer realm="skypacs"'
    denied = error_response(AccessDenied("read only"))
    assert denied.status == 403 and "WWW-Authenticate" not in denied.headers


def test_first_use_makes_an_owner_only_token_and_later_uses_read_it(tmp_path: Path) -> None:
    path = tmp_path / "data" / "api-token"
    token, created = load_or_create_token(path)
    assert created and len(token) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_token(path) == (token, False)
    assert load_or_create_token(tmp_path / "other") != (token, True)  # random, not derived


def test_a_token_file_without_a_usable_token_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "api-token"
    path.write_text("short\n")
    with pytest.raises(ValueError, match="usable token"):
        load_or_create_token(path)
    assert path.read_text() == "short\n"  # never overwritten behind the operator's back


# --- configuration ----------------------------------------------------------------------------------------

def test_tokens_from_the_file_and_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "skypacs.toml").write_text(f'[http.tokens]\n"{READ}" = "read"\n"{WRITE}" = "write"\n')
    assert load_settings(data_dir=tmp_path, environ={}).http_tokens == TOKENS
    environ = {"SKYPACS_HTTP_TOKENS": f"{WRITE}:write, {'e' * 30}:read"}
    assert load_settings(data_dir=tmp_path, environ=environ).http_tokens == {WRITE: "write", "e" * 30: "read"}
    assert load_settings(data_dir=tmp_path / "none", environ={}).http_tokens == {}


@pytest.mark.parametrize(("value", "message"), [
    ("tooshort:read", "at least 20"),
    (f"{READ}:admin", "scope 'admin'"),
    (READ, "TOKEN:scope"),
])
def test_bad_tokens_are_refused_without_quoting_them(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        load_settings(data_dir=tmp_path, environ={"SKYPACS_HTTP_TOKENS": value})
    assert "tooshort" not in str(caught.value) and READ not in str(caught.value)
