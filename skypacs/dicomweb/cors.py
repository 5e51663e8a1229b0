"""Cross-origin resource sharing (CORS), so that a viewer in a browser (OHIF on another origin) may call
the embedded DICOMweb server.

The configured origins (``[http] cors_origins``, ``SKYPACS_CORS_ORIGINS``; ``*`` for any) are the only
ones answered with CORS headers; for any other origin the answer carries none, and the browser keeps
it from the page. ``Access-Control-Allow-Origin`` always repeats the request's own Origin (with
``Vary: Origin`` so that caches keep one answer per origin), for ``*`` too. A preflight (``OPTIONS``
with ``Access-Control-Request-Method``) is answered here, before authentication: browsers never send
credentials with it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from skypacs.dicomweb.http import Response

ALLOWED_METHODS = ("GET", "HEAD", "POST", "DELETE", "OPTIONS")
ALWAYS_ALLOWED_HEADERS = ("Authorization", "Accept", "Content-Type")
REQUESTABLE_HEADERS = frozenset({
    "authorization", "accept", "content-type", "accept-charset", "accept-language", "cache-control",
    "if-match", "if-none-match", "if-modified-since", "if-unmodified-since", "range", "x-requested-with",
})
"""Request headers a preflight may ask for and get (those DICOMweb clients send); others are left out."""
EXPOSED_HEADERS = ("Content-Type", "Content-Length", "Warning", "Location")
"""Response headers a page may read beyond the CORS-safelisted ones: Warning carries QIDO-RS/STOW-RS
notes (PS3.18 8.3.4), Location the created resource of a STOW-RS."""
MAX_AGE = 600
"""Seconds a browser may reuse a preflight's answer (Chromium caps it at 7200)."""


def allowed_origin(origins: Collection[str], origin: str | None) -> str | None:
    """``origin`` if ``origins`` allows it (``*`` allows any), else None."""
    if not origin or not origins:
        return None
    if "*" in origins or origin.rstrip("/") in origins:
        return origin
    return None


def is_preflight(method: str, headers: Mapping[str, str]) -> bool:
    return method.upper() == "OPTIONS" and "Origin" in headers and "Access-Control-Request-Method" in headers


def preflight_response(origins: Collection[str], headers: Mapping[str, str]) -> Response:
    """204 with what the browser needs to send the real request: the methods, the headers it asked for
    among those DICOMweb uses, and how long to remember; no CORS headers for an origin not allowed."""
    origin = allowed_origin(origins, headers.get("Origin"))
    if origin is None:
        return Response(204, {"Vary": "Origin"})
    allowed = list(ALWAYS_ALLOWED_HEADERS)
    for name in headers.get("Access-Control-Request-Headers", "").split(","):
        name = name.strip()
        if name.lower() in REQUESTABLE_HEADERS and name.lower() not in (a.lower() for a in allowed):
            allowed.append(name)
    return Response(204, {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": ", ".join(ALLOWED_METHODS),
        "Access-Control-Allow-Headers": ", ".join(allowed),
        "Access-Control-Max-Age": str(MAX_AGE),
        "Vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
    })


def response_headers(origins: Collection[str], origin: str | None) -> dict[str, str]:
    """The headers an actual (not preflight) response carries: none unless CORS is configured, and
    ``Vary: Origin`` alone for an origin that is not allowed (the answer depends on it)."""
    if not origins:
        return {}
    allowed = allowed_origin(origins, origin)
    if allowed is None:
        return {"Vary": "Origin"}
    return {
        "Access-Control-Allow-Origin": allowed,
        "Access-Control-Expose-Headers": ", ".join(EXPOSED_HEADERS),
        "Vary": "Origin",
    }


def add_response_headers(response: Response, origins: Collection[str], origin: str | None) -> None:
    """Add :func:`response_headers` to ``response``, merging ``Vary`` with what it already says."""
    for name, value in response_headers(origins, origin).items():
        if name == "Vary" and response.headers.get("Vary"):
            value = f"{response.headers['Vary']}, {value}"
        response.headers[name] = value
