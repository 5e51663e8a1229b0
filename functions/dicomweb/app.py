"""The DICOMweb API on AWS: API Gateway (REST API, payload format 1.0) -> this Chalice app on Lambda.

Every route comes from the one route table, :func:`skypacs.dicomweb.dicomweb_router`; each Chalice
view is a thin wrapper (STYLE.md 1) that turns ``app.current_request`` into a
:class:`skypacs.dicomweb.http.Request`, dispatches it, and turns the answer into a ``chalice.Response``,
joining the body chunks: Chalice takes a whole body, which is fine under Lambda's 6 MB response limit for
QIDO-RS and metadata (DESIGN.md "Limits that shape the AWS design"); larger bodies take another path.

API Gateway has already percent-decoded the query string; ``multiValueQueryStringParameters`` keeps
repeated parameters (``includefield=...&includefield=...``). RetrieveURLs are built from the ``Host``
and ``X-Forwarded-Proto`` headers and the part of ``requestContext.path`` before the route (the stage,
``/prod``, on the execute-api domain; the base path mapping on a custom domain).

The AWS QueryIndex (OpenSearch) does not exist yet: :func:`query_service` is its future composition
root and answers 503 until then; tests replace it (``monkeypatch.setattr(app_module, "query_service",
...)``). It is looked up on each search, so replacing it needs no re-import.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from chalice.app import Chalice
from chalice.app import Response as ChaliceResponse

from skypacs.dicomweb import dicomweb_router
from skypacs.dicomweb.http import Headers, Request, Response, Route, Router

if TYPE_CHECKING:
    from skypacs.query.model import Query
    from skypacs.services.query import QueryResult, QueryService

app = Chalice(app_name="skypacs-dicomweb")

TEXT_TYPES = ("application/dicom+json", "application/json", "text/")
"""Bodies passed to API Gateway as text; anything else is bytes (base64 for the binary media types)."""


def query_service() -> QueryService:
    """The query service of the AWS deployment: OpenSearch, from the composition root (skypacs.aws);
    503 when no OpenSearch endpoint is configured."""
    from skypacs import aws

    return aws.archive().query_service


class _ComposedQueryService:
    """Asks :func:`query_service` on each search, so the route table can be built at import time."""

    def search(self, query: Query) -> QueryResult:
        return query_service().search(query)


router: Router = dicomweb_router(_ComposedQueryService())


def to_request(current: Any, pattern: str, uri_params: Mapping[str, str]) -> Request:
    """Our request from Chalice's (``app.current_request``) for the route ``pattern``."""
    path = pattern
    for name, value in uri_params.items():
        path = path.replace("{" + name + "}", value)
    query: list[tuple[str, str]] = []
    if current.query_params is not None:
        for name in current.query_params:
            query.extend((name, value) for value in current.query_params.getlist(name))
    headers = Headers(current.headers.items())
    context = current.context or {}
    prefix = _prefix(str(context.get("path") or path), path)
    scheme = headers.get("X-Forwarded-Proto", "https").split(",")[0].strip()
    host = headers.get("Host") or str(context.get("domainName") or "localhost")
    return Request(
        method=current.method,
        path=path,
        query=query,
        headers=headers,
        body=current.raw_body or b"",
        base_url=f"{scheme}://{host}{prefix}",
    )


def _prefix(full_path: str, path: str) -> str:
    """What precedes the route in the path the client sent: ``/prod/studies`` -> ``/prod``."""
    full, relative = full_path.rstrip("/"), path.rstrip("/")
    if not relative:
        return full
    return full[: -len(relative)] if full.endswith(relative) else ""


def to_chalice(response: Response) -> ChaliceResponse:
    headers: dict[str, str | list[str]] = {
        name: value for name, value in response.headers.items() if name.lower() != "content-length"
    }
    payload = response.read()
    text = response.headers.get("Content-Type", "").startswith(TEXT_TYPES)
    body: str | bytes = payload.decode("utf-8") if text else payload
    return ChaliceResponse(body=body, headers=headers, status_code=response.status)


def _view(pattern: str) -> Any:
    def view(**uri_params: str) -> ChaliceResponse:
        return to_chalice(router.dispatch(to_request(app.current_request, pattern, uri_params)))

    return view


def _register(routes: tuple[Route, ...]) -> None:
    methods: dict[str, list[str]] = {}
    for route in routes:
        methods.setdefault(route.pattern, []).append(route.method)
    for index, (pattern, verbs) in enumerate(methods.items()):
        name = "dicomweb_" + ("_".join(s.strip("{}") for s in pattern.strip("/").split("/")) or "root")
        app.route(pattern, methods=verbs, name=f"{name}_{index}")(_view(pattern))


_register(router.routes)
