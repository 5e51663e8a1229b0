"""Framework-free HTTP for the DICOMweb services (DESIGN.md "HTTP edges").

A :class:`Request` (method, path, decoded query, headers, body) goes into a :class:`Router`; a
:class:`Response` (status, headers, an iterable of body chunks) comes out. The two adapters, the
embedded WSGI server (:mod:`skypacs.dicomweb.server`) and the Chalice app on Lambda
(``functions/dicomweb/app.py``), only translate their own request and response objects to and from
these; routing, content negotiation and the mapping of :mod:`skypacs.errors` to HTTP statuses happen
here, once.
"""

from __future__ import annotations

import json
import logging
import re
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from skypacs.errors import (
    AccessDenied,
    BackendError,
    CannotTranscode,
    Conflict,
    InvalidObject,
    InvalidQuery,
    NotFound,
    SkyPacsError,
    Unauthenticated,
)

logger = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
JSON = "application/json"
_NON_ASCII = re.compile(rb"[\x80-\xff]")
WWW_AUTHENTICATE = 'Bearer realm="skypacs"'
"""The challenge of every 401 (RFC 6750 3): the archive takes bearer tokens."""
MAX_QUERY_FIELDS = 1000
"""Most query parameters one request may carry (a guard against parameter floods)."""


class NotAcceptable(SkyPacsError):
    """No representation the server can produce matches the request's Accept (HTTP 406)."""


class UnsupportedMediaType(SkyPacsError):
    """The request body's Content-Type is not one the service accepts (HTTP 415)."""


class PayloadTooLarge(SkyPacsError):
    """The request body is larger than the service accepts (HTTP 413)."""


class MethodNotAllowed(SkyPacsError):
    """The path exists but not for this method (HTTP 405)."""

    def __init__(self, message: str, *, allowed: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.allowed = tuple(allowed)


class Headers(Mapping[str, str]):
    """A read-only, case-insensitive view of request headers (repeated headers joined with ", ",
    RFC 9110 5.3)."""

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        self._items: dict[str, tuple[str, str]] = {}
        for name, value in pairs:
            key = name.lower()
            if key in self._items:
                name, value = self._items[key][0], f"{self._items[key][1]}, {value}"
            self._items[key] = (name, value)

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (original for original, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __repr__(self) -> str:
        return f"Headers({dict(self._items.values())!r})"


@dataclass(frozen=True)
class Request:
    """One HTTP request, relative to the DICOMweb root.

    ``path`` is the path below the root (``/studies``), already percent-decoded; ``query`` the query
    string as (name, value) pairs in order, percent-decoded as UTF-8 (see :func:`decode_query`);
    ``base_url`` is where the root is as the client sees it (``http://host:8080/dicom-web``), for the
    URLs the responses carry (RetrieveURL).
    """

    method: str
    path: str
    query: list[tuple[str, str]] = field(default_factory=list)
    headers: Headers = field(default_factory=Headers)
    body: Iterator[bytes] | bytes = b""
    base_url: str = ""

    @property
    def host(self) -> str:
        """The authority the client addressed (``host:port``), for the Warning header's agent."""
        return urlsplit(self.base_url).netloc or self.headers.get("Host", "") or "skypacs"


@dataclass
class Response:
    """Status, headers and the body as chunks; an adapter may stream the chunks as they come."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Iterable[bytes] = ()

    @property
    def reason(self) -> str:
        try:
            return HTTPStatus(self.status).phrase
        except ValueError:
            return ""

    def read(self) -> bytes:
        """The whole body (for adapters that cannot stream, and for tests)."""
        return b"".join(self.body)


def json_response(value: Any, *, status: int = 200, content_type: str = JSON,
                  headers: Mapping[str, str] | None = None) -> Response:
    """A complete JSON body with its Content-Length (UTF-8, non-ASCII kept as is)."""
    payload = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    all_headers = {"Content-Type": content_type, "Content-Length": str(len(payload))}
    all_headers.update(headers or {})
    return Response(status, all_headers, [payload])


# --- errors: the one mapping of skypacs.errors to HTTP statuses (STYLE.md 5) -------------------------

ERROR_STATUSES: tuple[tuple[type[SkyPacsError], int], ...] = (
    (InvalidQuery, 400),
    (InvalidObject, 400),
    (Unauthenticated, 401),
    (AccessDenied, 403),
    (NotFound, 404),
    (MethodNotAllowed, 405),
    (NotAcceptable, 406),
    (CannotTranscode, 406),
    (Conflict, 409),
    (PayloadTooLarge, 413),
    (UnsupportedMediaType, 415),
    (BackendError, 503),
)
"""First match wins. Anything else, ours or not, is a 500 whose message says nothing of the cause."""


def status_for(error: BaseException) -> int:
    for error_type, status in ERROR_STATUSES:
        if isinstance(error, error_type):
            return status
    return 500


def error_response(error: BaseException) -> Response:
    """``{"error": message}``. Messages of :mod:`skypacs.errors` name attributes, UIDs and parameters,
    never patient data; the text of any other exception is not shown (nor logged here: see
    :meth:`Router.dispatch`)."""
    status = status_for(error)
    message = str(error) if status != 500 else "internal server error"
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = WWW_AUTHENTICATE
    if isinstance(error, MethodNotAllowed) and error.allowed:
        headers["Allow"] = ", ".join(error.allowed)
    if status == 503:
        headers["Retry-After"] = "1"
    return json_response({"error": message}, status=status, headers=headers)


# --- query strings --------------------------------------------------------------------------------------

def decode_query(raw: str | bytes) -> list[tuple[str, str]]:
    """Split and percent-decode a raw query string as UTF-8, keeping order, repeats and empty values.

    ``PatientName=Smith%2A`` gives ``("PatientName", "Smith*")`` and ``M%C3%BCller`` gives ``Müller``.
    ``+`` is a space (HTML form encoding, which ``requests`` and so ``dicomweb-client`` use for spaces);
    a literal plus, as in a timezone offset, must be sent as ``%2B``. Bytes that are not UTF-8 are a
    400, not a guess. ``raw`` is the query string as sent (bytes; a WSGI ``QUERY_STRING`` encoded back
    to latin-1, PEP 3333) or as text.
    """
    # Bytes beyond ASCII sent unescaped (some clients do) are taken as the UTF-8 they should be:
    # escape them first, so that they and their escaped forms decode alike.
    data = raw if isinstance(raw, bytes) else raw.encode("utf-8")
    text = _NON_ASCII.sub(lambda byte: b"%%%02X" % byte.group()[0], data).decode("ascii")
    try:
        return parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict",
                         max_num_fields=MAX_QUERY_FIELDS)
    except UnicodeDecodeError:
        raise InvalidQuery("the query string is not valid percent-encoded UTF-8") from None
    except ValueError:
        raise InvalidQuery(f"too many query parameters (at most {MAX_QUERY_FIELDS})") from None


# --- content negotiation (RFC 9110 12.5.1) ----------------------------------------------------------

@dataclass(frozen=True)
class MediaRange:
    type: str
    """``type/subtype`` in lower case, wildcards included."""
    params: tuple[tuple[str, str], ...] = ()
    q: float = 1.0

    def matches(self, media_type: str) -> bool:
        major, _, minor = media_type.partition("/")
        range_major, _, range_minor = self.type.partition("/")
        return range_major in ("*", major) and range_minor in ("*", minor)


def parse_accept(value: str) -> list[MediaRange]:
    ranges = []
    for part in value.split(","):
        pieces = [piece.strip() for piece in part.split(";")]
        media_type = pieces[0].lower()
        if not media_type:
            continue
        if "/" not in media_type:
            media_type = "*/*" if media_type == "*" else f"{media_type}/*"
        q, params = 1.0, []
        for piece in pieces[1:]:
            name, _, param = piece.partition("=")
            name, param = name.strip().lower(), param.strip().strip('"')
            if name == "q":
                try:
                    q = min(max(float(param), 0.0), 1.0)
                except ValueError:
                    q = 0.0
            elif name:
                params.append((name, param))
        ranges.append(MediaRange(media_type, tuple(params), q))
    return ranges


def accept_value(request: Request) -> str:
    """What the client accepts: the ``accept`` query parameter (PS3.18 8.3.3.1), which overrides the
    Accept header; empty when neither is given (anything goes)."""
    accept_params = [value for name, value in request.query if name == "accept"]
    return ",".join(accept_params) if accept_params else request.headers.get("Accept", "")


def negotiate(request: Request, offered: Mapping[str, str], *, unsupported_note: str = "") -> str:
    """The media type to answer with, from ``offered`` (media type -> what the service labels its answer
    for it): the one the request accepts with the highest q (> 0), the first offered on a tie. The
    ``accept`` query parameter (PS3.18 8.3.3.1) overrides the Accept header; neither means anything
    goes. Raises :class:`NotAcceptable`."""
    accept = accept_value(request)
    if not accept.strip():
        return next(iter(offered.values()))
    ranges = parse_accept(accept)
    best: tuple[float, int, str] | None = None
    for order, (media_type, answer) in enumerate(offered.items()):
        # The most specific range that matches decides the quality (RFC 9110 12.5.1).
        matching = [r for r in ranges if r.matches(media_type)]
        if not matching:
            continue
        specific = max(matching, key=lambda r: (r.type.count("*") == 0, r.type.count("*") == 1))
        if specific.q > 0 and (best is None or specific.q > best[0]):
            best = (specific.q, order, answer)
    if best is None:
        supported = ", ".join(offered)
        raise NotAcceptable(
            f"cannot answer with any of the accepted media types ({accept.strip()}); this service returns "
            f"{supported}" + (f". {unsupported_note}" if unsupported_note else "")
        )
    return best[2]


# --- routing --------------------------------------------------------------------------------------------

Handler = Callable[[Request, Mapping[str, str]], Response]
"""``handler(request, path_params)``: path parameters by the names in the route's pattern."""


@dataclass(frozen=True)
class Route:
    """``GET /studies/{study}/series``: literal segments and ``{name}`` captures of one whole segment."""

    method: str
    pattern: str
    handler: Handler
    name: str = ""

    @property
    def segments(self) -> tuple[str, ...]:
        return _segments(self.pattern)

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(s[1:-1] for s in self.segments if _is_capture(s))

    def match(self, path: str) -> dict[str, str] | None:
        """The captured path parameters, or None when ``path`` is not this route's."""
        parts = _segments(path)
        if len(parts) != len(self.segments):
            return None
        captured = {}
        for pattern, part in zip(self.segments, parts, strict=True):
            if _is_capture(pattern):
                if not part:
                    return None
                captured[pattern[1:-1]] = part
            elif pattern != part:
                return None
        return captured


def _segments(path: str) -> tuple[str, ...]:
    stripped = path.strip("/")
    return tuple(stripped.split("/")) if stripped else ()


def _is_capture(segment: str) -> bool:
    return len(segment) > 2 and segment[0] == "{" and segment[-1] == "}"


class Router:
    """The route table both adapters serve; :meth:`dispatch` never raises."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = tuple(routes)
        seen = set()
        for route in self.routes:
            key = (route.method, route.segments)
            if key in seen:
                raise ValueError(f"duplicate route {route.method} {route.pattern}")
            seen.add(key)

    def resolve(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """The route for ``method path``; HEAD is served by the GET route. Raises NotFound or
        MethodNotAllowed."""
        wanted = "GET" if method == "HEAD" else method
        allowed = []
        for route in self.routes:
            params = route.match(path)
            if params is None:
                continue
            if route.method == wanted:
                return route, params
            allowed.append(route.method)
        if allowed:
            if "GET" in allowed:
                allowed.append("HEAD")
            raise MethodNotAllowed(f"{method} is not supported on this resource", allowed=allowed)
        raise NotFound("no such resource")

    def dispatch(self, request: Request) -> Response:
        started = time.monotonic()
        pattern = request.path
        try:
            route, params = self.resolve(request.method, request.path)
            pattern = route.pattern
            response = route.handler(request, params)
        except SkyPacsError as exc:
            response = error_response(exc)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a response, never a crash
            # The type, the route and the frames, not the message: an unexpected exception's text may
            # quote patient data (STYLE.md 10).
            logger.error("unhandled %s in %s %s; traceback:\n%s", type(exc).__name__, request.method,
                         pattern, "".join(traceback.format_tb(exc.__traceback__)))
            response = error_response(exc)
        if request.method == "HEAD":
            response.body = ()
        # The query string (patient names, IDs) is never logged; the path holds UIDs at most.
        logger.debug("%s %s -> %d in %.1f ms", request.method, pattern, response.status,
                     (time.monotonic() - started) * 1000)
        return response


def health_routes() -> list[Route]:
    """``GET /`` and ``GET /health``: 200 while the process serves HTTP (for load balancers)."""

    def health(_request: Request, _params: Mapping[str, str]) -> Response:
        return json_response({"status": "ok"})

    return [Route("GET", "/", health, "health"), Route("GET", "/health", health, "health")]
