"""The DICOMweb API on AWS: API Gateway (REST API, payload format 1.0) -> this Chalice app on Lambda.

Every route comes from the one route table, :func:`skypacs.dicomweb.dicomweb_router`; each Chalice
view is a thin wrapper (STYLE.md 1) that turns ``app.current_request`` into a
:class:`skypacs.dicomweb.http.Request`, dispatches it, and turns the answer into a ``chalice.Response``,
joining the body chunks: Chalice takes a whole body, which is fine under Lambda's 6 MB response limit for
QIDO-RS and metadata (DESIGN.md "Limits that shape the AWS design"); larger bodies take another path.

Large answers (DESIGN.md "Limits that shape the AWS design"): study and series retrieval never run
here, and any other answer larger than :data:`LAMBDA_BODY_LIMIT` is dropped: both get ``303 See Other``
to the same resource on the streaming service, a signed URL (:mod:`skypacs.dicomweb.signed_urls`
explains the design). Without a streaming service configured, such requests get 503 saying so.

API Gateway has already percent-decoded the query string; ``multiValueQueryStringParameters`` keeps
repeated parameters (``includefield=...&includefield=...``). RetrieveURLs are built from the ``Host``
and ``X-Forwarded-Proto`` headers and the part of ``requestContext.path`` before the route (the stage,
``/prod``, on the execute-api domain; the base path mapping on a custom domain).

Searches go to OpenSearch through :func:`query_service` (503 when no domain is configured); tests replace
it (``monkeypatch.setattr(app_module, "query_service", ...)``). It is looked up on each search, so
replacing it needs no re-import.

Authentication happens before this code runs: API Gateway calls the OIDC authorizer
(``functions/authorizer``) for every method but CORS preflights, and only allowed requests arrive here;
each is audited with the token's subject. ``POST /uploads`` hands out presigned S3 PUTs, the path for
uploads over API Gateway's 10 MB (:mod:`skypacs.services.uploads`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from chalice.app import Chalice
from chalice.app import Response as ChaliceResponse

from skypacs.audit import ANONYMOUS
from skypacs.dicomweb import cors, dicomweb_router, signed_urls
from skypacs.dicomweb.http import Headers, Request, Response, Route, Router, json_response
from skypacs.dicomweb.request_audit import audit_request
from skypacs.dicomweb.wado import STREAMED_ROUTES
from skypacs.logs import configure_audit_trail

if TYPE_CHECKING:
    from skypacs.aws import AwsArchive
    from skypacs.query.model import Query
    from skypacs.services.delete import DeleteService
    from skypacs.services.query import QueryResult, QueryService
    from skypacs.services.retrieve import RetrieveService
    from skypacs.services.store import StoreService
    from skypacs.services.uploads import UploadService

app = Chalice(app_name="skypacs-dicomweb")
configure_audit_trail()
BINARY_TYPES = [
    "multipart/related", "application/dicom", "application/octet-stream",
    "image/jpeg", "image/png", "image/gif", "image/jls", "image/jp2", "image/jpx", "image/dicom-rle",
    "image/x-dicom-rle", "image/jphc", "video/mpeg", "video/mp4",
]
"""Bodies API Gateway passes as binary (its ``binaryMediaTypes``): it does so only when the request's
Accept matches one of them, so a binary WADO-RS request without an Accept header gets 400 from Chalice
and API Gateway alike; ``*/*`` matches. JSON stays text."""
app.api.binary_types = [*app.api.binary_types, *BINARY_TYPES]

TEXT_TYPES = ("application/dicom+json", "application/json", "text/")
"""Bodies passed to API Gateway as text; anything else is bytes (base64 for the binary media types)."""


def query_service() -> QueryService:
    """The query service of the AWS deployment: OpenSearch, from the composition root (skypacs.aws);
    503 when no OpenSearch endpoint is configured."""
    from skypacs import aws

    return aws.archive().query_service


def archive() -> AwsArchive:
    from skypacs import aws

    return aws.archive()


class _ComposedQueryService:
    """Asks :func:`query_service` on each search, so the route table can be built at import time."""

    def search(self, query: Query) -> QueryResult:
        return query_service().search(query)


class _ArchiveService:
    """Forwards to one service of the archive (``retrieve_service``, ``store_service``...), built on first
    use rather than at import time."""

    def __init__(self, attribute: str) -> None:
        self.attribute = attribute

    def __getattr__(self, name: str) -> Any:
        return getattr(getattr(archive(), self.attribute), name)


LAMBDA_BODY_LIMIT = 4 * 1024 * 1024
"""Largest body answered from Lambda: 6 MB of response payload, binary bodies base64-encoded (4/3),
less room for headers. Larger answers go to the streaming service."""

router: Router = dicomweb_router(
    _ComposedQueryService(),
    cast("RetrieveService", _ArchiveService("retrieve_service")),
    store_service=cast("StoreService", _ArchiveService("store_service")),
    delete_service=cast("DeleteService", _ArchiveService("delete_service")),
    upload_service=cast("UploadService", _ArchiveService("upload_service")),
)
_route_names = {route.pattern: route.name for route in router.routes}


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
    # An empty body is text: Chalice base64-encodes bytes only for binary media types, and would hand
    # API Gateway raw bytes (not JSON-serialisable) for a 204 without a Content-Type.
    text = not payload or response.headers.get("Content-Type", "").startswith(TEXT_TYPES)
    body: str | bytes = payload.decode("utf-8") if text else payload
    return ChaliceResponse(body=body, headers=headers, status_code=response.status)


def _view(pattern: str) -> Any:
    def view(**uri_params: str) -> ChaliceResponse:
        request = to_request(app.current_request, pattern, uri_params)
        origins = archive().cors_origins
        if request.method == "OPTIONS":
            return to_chalice(cors.preflight_response(origins, request.headers))
        response = _answer(pattern, request)
        if origins:
            cors.add_response_headers(response, origins, request.headers.get("Origin"))
        return to_chalice(response)

    return view


def _answer(pattern: str, request: Request) -> Response:
    if _route_names.get(pattern) in STREAMED_ROUTES and request.method in ("GET", "HEAD"):
        response = redirect_to_streaming(request)
    else:
        response = router.dispatch(request)
        payload = response.read()
        if len(payload) > LAMBDA_BODY_LIMIT:
            response = redirect_to_streaming(request)
        else:
            response.body = [payload]
    _audit(request, response.status)
    return response


def _audit(request: Request, status: int) -> None:
    """The audit record (skypacs.dicomweb.request_audit): the caller is the token's subject, as the
    OIDC authorizer found it (``requestContext.authorizer.principalId``)."""
    current = app.current_request
    context = (current.context if current is not None else None) or {}
    principal = (context.get("authorizer") or {}).get("principalId")
    address = str((context.get("identity") or {}).get("sourceIp") or "")
    audit_request(router, request.method, request.path, [name for name, _ in request.query],
                  who=f"oidc:{principal}" if principal else ANONYMOUS, status=status, address=address)


def redirect_to_streaming(request: Request) -> Response:
    """``303 See Other`` to the resource on the streaming service, as a signed URL."""
    current = archive()
    base, key = current.streaming_url, current.url_signing_key
    if base is None or key is None:
        return json_response({"error": "this answer is too large for the Lambda API and no streaming "
                                       "service is configured (SKYPACS_STREAMING_URL, SKYPACS_URL_SIGNING_KEY)"},
                             status=503)
    location = signed_urls.signed_url(base, key, request.path, request.query)
    return Response(303, {"Location": location, "Content-Length": "0", "Cache-Control": "no-store"}, [])


def _register(routes: tuple[Route, ...]) -> None:
    # OPTIONS on every path: CORS preflights reach this function unauthenticated (the API's only
    # unauthenticated method) and are answered for the configured origins (skypacs.dicomweb.cors).
    methods: dict[str, list[str]] = {}
    for route in routes:
        methods.setdefault(route.pattern, ["OPTIONS"]).append(route.method)
    for index, (pattern, verbs) in enumerate(methods.items()):
        name = "dicomweb_" + ("_".join(s.strip("{}") for s in pattern.strip("/").split("/")) or "root")
        # Any request Content-Type reaches the routes, which answer 415 themselves (STOW-RS).
        app.route(pattern, methods=verbs, name=f"{name}_{index}", content_types=["*/*"])(_view(pattern))


_register(router.routes)
