"""QIDO-RS: search for studies, series and instances (PS3.18 8.3.4 and 10.6).

Each route parses the request into a :class:`~skypacs.query.model.Query` (the matching semantics live
in :mod:`skypacs.query`), calls :meth:`QueryService.search` once, and answers:

- ``200`` with a JSON array of DICOM JSON datasets (PS3.18 F.2), also when nothing matches: ``[]``.
  PS3.18 before 2019 answered no match with ``204 No Content``; the current text (10.6.3.1, citing
  RFC 9110) says 200 with an empty payload. ``dicomweb-client`` (``_http_get_application_json``) turns
  both an empty body and ``[]`` into ``[]``, and OHIF expects an array, so ``[]`` serves every client;
- a ``Warning: 299 {host}: "The number of results exceeded ..."`` header when more matches exist beyond
  the page (PS3.18 8.3.4.4 and 10.6.3.2); the client asks for the rest with ``offset``;
- RetrieveURL (0008,1190) in each result, the WADO-RS URL of that study, series or instance under the
  request's own base URL (PS3.18 Tables 10.6.3-3 to 10.6.3-5).

Only ``application/dicom+json`` is produced (``application/json`` when that is all the client takes: the
same bytes). The XML response (``multipart/related; type="application/dicom+xml"``) is not supported:
such a request gets 406 saying so.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from skypacs.dicomweb.http import (
    DICOM_JSON,
    JSON,
    NotAcceptable,
    Request,
    Response,
    Route,
    json_response,
    negotiate,
)
from skypacs.errors import InvalidQuery
from skypacs.query.model import DEFAULT_MAX_LIMIT, Level, query_from_qido
from skypacs.uids import is_valid_uid

if TYPE_CHECKING:
    from skypacs.query.model import Query
    from skypacs.services.query import QueryResult


class Searcher(Protocol):
    """What the routes need of :class:`skypacs.services.query.QueryService`."""

    def search(self, query: Query) -> QueryResult: ...

STUDY_UID, SERIES_UID, SOP_UID, RETRIEVE_URL = "0020000D", "0020000E", "00080018", "00081190"

SEARCHES: tuple[tuple[str, Level], ...] = (
    ("/studies", Level.STUDY),
    ("/studies/{study}/series", Level.SERIES),
    ("/series", Level.SERIES),
    ("/studies/{study}/series/{series}/instances", Level.IMAGE),
    ("/studies/{study}/instances", Level.IMAGE),
    ("/series/{series}/instances", Level.IMAGE),
    ("/instances", Level.IMAGE),
)
"""The QIDO-RS resources (PS3.18 10.6.1.2); ``/series/{series}/instances`` is an extension."""

OFFERED = {DICOM_JSON: DICOM_JSON, JSON: JSON}
XML_NOTE = 'The XML response (multipart/related; type="application/dicom+xml") is not supported.'
EDGE_PARAMETERS = frozenset({"accept", "charset"})
"""Query parameters about the response's form (PS3.18 8.3.3), handled here, not by the query model."""
TRUNCATED_WARNING = (
    "The number of results exceeded the maximum supported by the server. "
    "Additional results can be requested."
)


def routes(service: Searcher, *, max_limit: int = DEFAULT_MAX_LIMIT) -> list[Route]:
    """The QIDO-RS routes, bound to ``service`` (no globals: STYLE.md, pynetdicom's bound handlers)."""
    return [
        Route("GET", pattern, partial(search, service, level, max_limit), f"qido-{level.value.lower()}")
        for pattern, level in SEARCHES
    ]


def search(
    service: Searcher, level: Level, max_limit: int, request: Request, params: Mapping[str, str]
) -> Response:
    media_type = negotiate(request, OFFERED, unsupported_note=XML_NOTE)
    _check_charset(request)
    query = query_from_qido(
        level,
        [(name, value) for name, value in request.query if name not in EDGE_PARAMETERS],
        study_instance_uid=path_uid(params, "study", "StudyInstanceUID"),
        series_instance_uid=path_uid(params, "series", "SeriesInstanceUID"),
        max_limit=max_limit,
    )
    result = service.search(query)
    items = [with_retrieve_url(item, level, request.base_url) for item in result.items]
    headers = {}
    if result.truncated:
        headers["Warning"] = f'299 {request.host}: "{TRUNCATED_WARNING}"'
    return json_response(items, content_type=media_type, headers=headers)


def path_uid(params: Mapping[str, str], name: str, keyword: str) -> str | None:
    """The UID captured as ``name`` in the path, if any; InvalidQuery (400) if it is not a UID."""
    value = params.get(name)
    if value is not None and not is_valid_uid(value):
        # A path UID is one UID, matched exactly: no wildcards, no lists (PS3.18 10.6.1.2).
        raise InvalidQuery(f"{keyword} in the path is not a valid UID (PS3.5 9.1)")
    return value


def _check_charset(request: Request) -> None:
    """The ``charset`` query parameter (PS3.18 8.3.3.2): JSON is always UTF-8."""
    for name, value in request.query:
        if name == "charset":
            accepted = {part.split(";")[0].strip().lower() for part in value.split(",")}
            if not accepted & {"utf-8", "utf8", "*"}:
                raise NotAcceptable(f"charset {value!r} is not available: DICOM JSON is always UTF-8")


def retrieve_url(base_url: str, level: Level, item: Mapping[str, Any]) -> str | None:
    """The WADO-RS URL of the study, series or instance ``item`` describes, if it has the UIDs."""
    uids = [_first(item, STUDY_UID)]
    if level in (Level.SERIES, Level.IMAGE):
        uids.append(_first(item, SERIES_UID))
    if level is Level.IMAGE:
        uids.append(_first(item, SOP_UID))
    if not all(uids):
        return None
    path = "".join(f"/{segment}/{quote(str(uid), safe='')}"
                   for segment, uid in zip(("studies", "series", "instances"), uids, strict=False))
    return f"{base_url.rstrip('/')}{path}"


def with_retrieve_url(item: dict[str, Any], level: Level, base_url: str) -> dict[str, Any]:
    url = retrieve_url(base_url, level, item) if level is not Level.PATIENT else None
    if url is None:
        return item
    # DICOM JSON objects list attributes in tag order (PS3.18 F.2.1.1 example); keep it so.
    return dict(sorted({**item, RETRIEVE_URL: {"vr": "UR", "Value": [url]}}.items()))


def _first(item: Mapping[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]
