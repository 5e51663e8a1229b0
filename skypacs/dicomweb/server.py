"""The embedded DICOMweb server: the shared route table served over HTTP by waitress.

Why waitress (DESIGN.md "HTTP edges" asks for a well-kept production server that streams): it is pure
Python with no dependencies of its own (Pylons project, in production use since 2011), and its
thread-pool model fits the core, which is synchronous (SQLite, files). It streams a WSGI body chunk by
chunk, and when a client reads slower than the archive writes it spools to a temporary file past
``outbuf_overflow`` and makes the application wait past ``outbuf_high_watermark``, so a large
retrieve runs in bounded memory. (uvicorn with Starlette would do as well, at the price of an asyncio
stack and four more packages around a core with nothing asynchronous in it.)

The DICOMweb root is mounted under :data:`DEFAULT_PREFIX` (``http://host:8080/dicom-web/studies``);
``/`` and ``/health`` at the server root answer 200 for load balancers. Query strings are
percent-decoded as UTF-8 here (:func:`skypacs.dicomweb.http.decode_query`): ``PatientName=Smith%2A``
reaches the query model as ``Smith*`` and ``M%C3%BCller`` as ``Müller``.

The server binds 127.0.0.1 by default (``[http] host`` in ``skypacs.toml`` to expose it), and runs in a
background thread: :meth:`DicomWebServer.start` returns once it listens (port 0 = an ephemeral port,
see :attr:`DicomWebServer.port`), :meth:`DicomWebServer.stop` stops accepting, lets requests in
flight finish, then closes every connection.

With ``tokens`` every DICOMweb request needs ``Authorization: Bearer TOKEN``
(:mod:`skypacs.dicomweb.auth`; the health checks never do); with ``cors_origins`` browsers on those
origins may call it (:mod:`skypacs.dicomweb.cors`). ``skypacs serve`` always has a token: the
configured ones, or one it made and keeps in ``DATA_DIR/api-token``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Self

from skypacs.audit import bearer_token, token_id
from skypacs.dicomweb import auth, cors, dicomweb_router, signed_urls
from skypacs.dicomweb.http import (
    Headers,
    Request,
    Response,
    Router,
    decode_query,
    error_response,
    health_routes,
)
from skypacs.dicomweb.request_audit import audit_request
from skypacs.errors import SkyPacsError

if TYPE_CHECKING:
    from skypacs.aws import AwsArchive
    from skypacs.embedded import EmbeddedArchive

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "/dicom-web"
DEFAULT_THREADS = 8
"""Worker threads: requests served at once (each holds its own SQLite connection)."""
BODY_CHUNK = 64 * 1024
MAX_REQUEST_BODY = 2 * 1024**3 + 1024**2
"""waitress refuses larger bodies (its default is 1 GiB): STOW-RS's own limit (2 GiB) plus room for the
multipart envelope; STOW answers 413 itself before that."""

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WsgiApp = Callable[[Environ, StartResponse], Iterable[bytes]]


HEALTH_PATHS = ("/", "/health")
"""Paths answered without a token, at the server root and under the prefix alike."""


def wsgi_app(router: Router, *, prefix: str = DEFAULT_PREFIX, signing_key: bytes | None = None,
             tokens: Mapping[str, str] | None = None, cors_origins: tuple[str, ...] = ()) -> WsgiApp:
    """A WSGI application serving ``router`` under ``prefix`` and health checks at the root.

    With a ``signing_key`` (the streaming service on AWS), every request under ``prefix`` must be a
    signed URL (:mod:`skypacs.dicomweb.signed_urls`); the signature parameters are removed before the
    route sees the query. With ``tokens`` (token -> scope), every request under ``prefix`` but the
    health checks must carry one (:func:`skypacs.dicomweb.auth.authorize`); None means no
    authentication. ``cors_origins`` are the browser origins allowed to call (``*``: any)."""
    prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
    root = Router(health_routes())

    def application(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        # PEP 3333: PATH_INFO is the decoded path with each byte as one latin-1 character.
        path = environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8", "replace") or "/"
        mounted = path == prefix or path.startswith(prefix + "/")
        target = router if mounted else root
        relative = (path[len(prefix):] or "/") if mounted else path
        method = environ["REQUEST_METHOD"].upper()
        headers = Headers(_headers(environ))
        if cors_origins and cors.is_preflight(method, headers):
            response = cors.preflight_response(cors_origins, headers)
        else:
            response = _serve(target, environ, method, headers, mounted, relative)
            if mounted:
                _audit(router, environ, method, headers, relative, response.status)
            if cors_origins:
                cors.add_response_headers(response, cors_origins, headers.get("Origin"))
        start_response(f"{response.status} {response.reason}", list(response.headers.items()))
        return response.body

    def _serve(target: Router, environ: Environ, method: str, headers: Headers, mounted: bool,
               relative: str) -> Response:
        try:
            if tokens is not None and mounted and relative not in HEALTH_PATHS:
                auth.authorize(tokens, method, headers.get("Authorization"))
            query = decode_query(environ.get("QUERY_STRING", "").encode("latin-1"))
            if signing_key is not None and mounted:
                query = signed_urls.verify(signing_key, environ["REQUEST_METHOD"], relative, query)
            request = Request(
                method=method,
                path=relative,
                query=query,
                headers=headers,
                body=_body(environ),
                base_url=_base_url(environ) + (prefix if mounted else ""),
            )
        except SkyPacsError as exc:
            return error_response(exc)
        return target.dispatch(request)

    return application


def _audit(router: Router, environ: Environ, method: str, headers: Headers, relative: str, status: int) -> None:
    try:
        names = [name for name, _ in decode_query(environ.get("QUERY_STRING", "").encode("latin-1"))]
    except SkyPacsError:
        names = []
    audit_request(router, method, relative, names, who=token_id(bearer_token(headers.get("Authorization"))),
                  status=status, address=environ.get("REMOTE_ADDR", ""))


def _headers(environ: Environ) -> Iterator[tuple[str, str]]:
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            yield key[5:].replace("_", "-").title(), value
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            yield key.replace("_", "-").title(), value


def _body(environ: Environ) -> Iterator[bytes]:
    stream = environ.get("wsgi.input")
    if stream is None:
        return iter(())
    return iter(lambda: stream.read(BODY_CHUNK), b"")


def _base_url(environ: Environ) -> str:
    """``scheme://host[:port]`` and the WSGI mount point, as the client addressed the server (PEP 3333
    URL reconstruction). Behind a proxy, configure waitress's ``trusted_proxy`` so that these reflect
    the ``X-Forwarded-*`` headers."""
    scheme = environ.get("wsgi.url_scheme", "http")
    host = environ.get("HTTP_HOST")
    if not host:
        host = environ.get("SERVER_NAME", "localhost")
        port = str(environ.get("SERVER_PORT", ""))
        if port and port != {"http": "80", "https": "443"}.get(scheme):
            host = f"{host}:{port}"
    return f"{scheme}://{host}{environ.get('SCRIPT_NAME', '').rstrip('/')}"


class DicomWebServer:
    """The route table over waitress on a background thread."""

    def __init__(
        self,
        router: Router,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        prefix: str = DEFAULT_PREFIX,
        threads: int = DEFAULT_THREADS,
        signing_key: bytes | None = None,
        tokens: Mapping[str, str] | None = None,
        cors_origins: tuple[str, ...] = (),
    ) -> None:
        self.router, self.host, self.prefix, self.threads = router, host, prefix, threads
        self.signing_key = signing_key
        self.tokens = dict(tokens) if tokens is not None else None
        self.cors_origins = tuple(cors_origins)
        self._requested_port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve; returns once listening. Raises OSError when the address is taken."""
        from waitress.server import create_server

        if self._server is not None:
            raise RuntimeError("the DICOMweb server is already running")
        self._server = create_server(
            wsgi_app(self.router, prefix=self.prefix, signing_key=self.signing_key, tokens=self.tokens,
                     cors_origins=self.cors_origins),
            host=self.host,
            port=self._requested_port,
            threads=self.threads,
            ident="SkyPACS",
            asyncore_use_poll=True,  # no select() limit on descriptor numbers in a busy process
            expose_tracebacks=False,
            clear_untrusted_proxy_headers=True,
            max_request_body_size=MAX_REQUEST_BODY,
        )
        self._thread = threading.Thread(target=self._server.run, name="dicomweb-http", daemon=True)
        self._thread.start()
        logger.info("DICOMweb listening on %s", self.url)

    @property
    def port(self) -> int:
        if self._server is None:
            return self._requested_port
        return int(self._server.effective_port)

    @property
    def url(self) -> str:
        """The DICOMweb root, e.g. ``http://127.0.0.1:8080/dicom-web``."""
        host = self._server.effective_host if self._server is not None else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}{self.prefix}"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, let requests in flight finish (up to ``timeout``), close every connection."""
        from waitress import wasyncore

        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        if thread.is_alive():
            # Socket work happens on the loop thread, so hand it these steps through waitress's trigger.
            server.trigger.pull_trigger(lambda: wasyncore.dispatcher.close(server))  # the listening socket only
            server.task_dispatcher.shutdown(cancel_pending=True, timeout=timeout)
            try:
                server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map, ignore_all=True))
            except OSError:
                # The loop already ended and closed its trigger: nothing runs it any more, close here.
                wasyncore.close_all(server._map, ignore_all=True)
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("DICOMweb server thread did not stop within %.0f s", timeout)
        else:
            wasyncore.close_all(server._map, ignore_all=True)
        self._server = self._thread = None
        logger.info("DICOMweb server stopped")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def embedded_server(archive: EmbeddedArchive, *, port: int | None = None) -> DicomWebServer:
    """The DICOMweb server of ``skypacs serve``: ``[http] host``/``port``, tokens and CORS origins from
    the archive's settings (no tokens there: no authentication)."""
    settings = archive.settings
    return DicomWebServer(
        dicomweb_router(archive.query_service, archive.retrieve_service, store_service=archive.store_service,
                        delete_service=archive.delete_service),
        host=settings.http_host,
        port=settings.http_port if port is None else port,
        tokens=settings.http_tokens or None,
        cors_origins=settings.cors_origins,
    )


def start_embedded_server(archive: EmbeddedArchive, *, port_is_default: bool = False) -> DicomWebServer:
    """Start :func:`embedded_server`. When the port is only the default (8080: nobody asked for it) and
    something else holds it, serve on an ephemeral port instead and say so, rather than refuse to run the
    archive; a port that was asked for (flag, environment, file) is a hard error (OSError)."""
    server = embedded_server(archive)
    try:
        server.start()
    except OSError as exc:
        if not port_is_default:
            raise
        logger.warning("DICOMweb: default port %d is not available (%s); using an ephemeral port. "
                       "Set --http-port or [http] port to choose one.", server.port, exc.strerror or exc)
        server = embedded_server(archive, port=0)
        server.start()
    return server


def streaming_server(archive: AwsArchive, signing_key: bytes, *, host: str = "0.0.0.0",
                     port: int = 8080, threads: int = DEFAULT_THREADS) -> DicomWebServer:
    """The streaming service of the AWS deployment (``skypacs dicomweb``): the same routes on the AWS
    adapters, serving signed URLs only (the large-retrieval path, :mod:`skypacs.dicomweb.signed_urls`).
    It binds every interface: it runs in a container behind a load balancer."""
    router = dicomweb_router(_LazyQueryService(archive), archive.retrieve_service)
    return DicomWebServer(router, host=host, port=port, threads=threads,
                          signing_key=signed_urls.check_key(signing_key))


class _LazyQueryService:
    """Searches through the archive's query service on each call: without an OpenSearch endpoint the
    streaming service still retrieves, and only searches answer 503."""

    def __init__(self, archive: AwsArchive) -> None:
        self.archive = archive

    def search(self, query: Any) -> Any:
        return self.archive.query_service.search(query)
