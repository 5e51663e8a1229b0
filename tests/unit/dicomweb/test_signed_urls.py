"""Signed URLs of the large-retrieval path: valid ones pass, anything altered or late does not."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from skypacs.dicomweb import signed_urls
from skypacs.errors import AccessDenied

KEY = b"s" * 32


def _query(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


def test_a_signed_url_verifies_and_gives_back_the_original_query() -> None:
    url = signed_urls.signed_url("https://retrieve.example/dicom-web", KEY, "/studies/1.2.3",
                                 [("accept", "multipart/related"), ("includefield", "all")], now=1000)
    assert urlsplit(url).path == "/dicom-web/studies/1.2.3"
    kept = signed_urls.verify(KEY, "GET", "/studies/1.2.3", _query(url), now=1100)
    assert kept == [("accept", "multipart/related"), ("includefield", "all")]
    assert signed_urls.verify(KEY, "HEAD", "/studies/1.2.3", _query(url), now=1100)


@pytest.mark.parametrize("change", ["path", "query", "expiry", "method", "key", "late", "unsigned"])
def test_anything_altered_is_refused(change: str) -> None:
    url = signed_urls.signed_url("http://h", KEY, "/studies/1.2.3", [("a", "1")], now=1000)
    query, path, method, key, now = _query(url), "/studies/1.2.3", "GET", KEY, 1100.0
    if change == "path":
        path = "/studies/1.2.4"
    elif change == "query":
        query = [("a", "2") if name == "a" else (name, value) for name, value in query]
    elif change == "expiry":
        query = [(n, str(int(v) + 1000) if n == signed_urls.EXPIRES_PARAMETER else v) for n, v in query]
    elif change == "method":
        method = "DELETE"
    elif change == "key":
        key = b"t" * 32
    elif change == "late":
        now = 1000 + signed_urls.DEFAULT_LIFETIME + 1
    else:
        query = [("a", "1")]
    with pytest.raises(AccessDenied):
        signed_urls.verify(key, method, path, query, now=now)


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        signed_urls.sign(b"short", "/studies/1")
