"""Configuration, in one place: defaults < config file < environment < command-line flags.

The config file is TOML, by default ``skypacs.toml`` in the data directory (or ``--config PATH`` /
``SKYPACS_CONFIG``)::

    [dimse]
    ae_title = "SKYPACS"
    port = 11112
    host = "0.0.0.0"
    allowed_aes = ["CT01", "WORKSTATION"]    # calling AE titles; empty or absent = open (logged)
    max_pdu = 0                              # 0 = unlimited
    extra_sop_classes = ["1.2.3.4.5"]         # private storage SOP classes to accept
    tls_certificate = "/etc/skypacs/gateway.pem"   # TLS (PS3.15 B.1): certificate and key, PEM
    tls_private_key = "/etc/skypacs/gateway.key"
    tls_ca = "/etc/skypacs/clients-ca.pem"   # optional: require client certificates signed by it

    [dimse.destinations]                     # C-MOVE destinations: AE title = "host:port"
    WORKSTATION = "10.0.0.5:104"
    VIEWER = "[fd00::5]:11112"               # IPv6 addresses in brackets

    [dimse.permissions]                      # what each calling AE may do: "store", "find", "move", "get"
    CT01 = ["store"]                         # absent = every AE may do everything; once set, an AE
    WORKSTATION = ["find", "move", "get"]    # without an entry gets the "*" entry, or nothing
    "*" = ["find"]                           # (C-ECHO is always allowed; refusals are 0x0124)

    [http]                                   # DICOMweb
    port = 8080
    host = "127.0.0.1"
    cors_origins = ["https://viewer.example.org"]   # browser origins allowed to call it; "*" = any

    [http.tokens]                            # bearer tokens (at least 20 characters) = "read" or "write"
    "a-long-random-token-for-the-viewer" = "read"
    "another-long-random-token-for-ingest" = "write"

Without tokens, ``skypacs serve`` makes one (write scope) and keeps it in ``DATA_DIR/api-token``.

Environment variables (names below, all ``SKYPACS_*``) override the file; only the composition root
reads them. AWS deployments set them on the Lambda functions and the gateway task.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from skypacs.dimse.permissions import ANY_AE, Permissions, parse_permissions

ENV_DATA_DIR = "SKYPACS_DATA_DIR"
ENV_CONFIG = "SKYPACS_CONFIG"
ENV_AE_TITLE = "SKYPACS_AE_TITLE"
ENV_DIMSE_PORT = "SKYPACS_DIMSE_PORT"
ENV_DIMSE_HOST = "SKYPACS_DIMSE_HOST"
ENV_ALLOWED_AES = "SKYPACS_ALLOWED_AES"
"""Comma-separated calling AE titles."""
ENV_MAX_PDU = "SKYPACS_MAX_PDU"
ENV_EXTRA_SOP_CLASSES = "SKYPACS_EXTRA_SOP_CLASSES"
ENV_DESTINATIONS = "SKYPACS_DESTINATIONS"
"""C-MOVE destinations, comma-separated ``AE=host:port`` pairs (``WS1=10.0.0.5:104,WS2=ws2.local:11112``);
replaces ``[dimse.destinations]`` of the file when set."""
ENV_DIMSE_PERMISSIONS = "SKYPACS_DIMSE_PERMISSIONS"
"""DIMSE permissions, comma-separated ``AE=op+op`` pairs (``CT01=store,WS1=find+move+get,*=find``);
replaces ``[dimse.permissions]`` of the file when set."""
ENV_DIMSE_TLS_CERTIFICATE = "SKYPACS_DIMSE_TLS_CERTIFICATE"
ENV_DIMSE_TLS_PRIVATE_KEY = "SKYPACS_DIMSE_TLS_PRIVATE_KEY"
ENV_DIMSE_TLS_CA = "SKYPACS_DIMSE_TLS_CA"
"""PEM files: the gateway's TLS certificate and key; the CA whose client certificates are required."""
ENV_HTTP_PORT = "SKYPACS_HTTP_PORT"
ENV_HTTP_HOST = "SKYPACS_HTTP_HOST"
ENV_HTTP_TOKENS = "SKYPACS_HTTP_TOKENS"
"""DICOMweb bearer tokens, comma-separated ``TOKEN:scope`` pairs (``tok1:write,tok2:read``); replaces
``[http.tokens]`` of the file when set."""
ENV_CORS_ORIGINS = "SKYPACS_CORS_ORIGINS"
"""Comma-separated browser origins allowed to call DICOMweb (``https://viewer.example.org``, or ``*``)."""
ENV_BUCKET = "SKYPACS_BUCKET"
"""AWS: the S3 bucket holding the objects."""
ENV_CATALOG_TABLE = "SKYPACS_CATALOG_TABLE"
"""AWS: the DynamoDB table of the catalog."""
ENV_EVENT_BUS = "SKYPACS_EVENT_BUS"
"""AWS: the EventBridge bus name for plugin events."""
ENV_OPENSEARCH_ENDPOINT = "SKYPACS_OPENSEARCH_ENDPOINT"
"""AWS: the OpenSearch domain endpoint (``https://...``) of the QueryIndex; requests are SigV4-signed."""
ENV_OPENSEARCH_PREFIX = "SKYPACS_OPENSEARCH_PREFIX"
"""AWS: prefix of the OpenSearch index names (default ``skypacs``)."""
ENV_STREAMING_URL = "SKYPACS_STREAMING_URL"
"""AWS: the DICOMweb root of the streaming service (``https://retrieve.example.org/dicom-web``), where the
Lambda API redirects study/series retrieval and answers too large for Lambda (large-retrieval path)."""
ENV_URL_SIGNING_KEY = "SKYPACS_URL_SIGNING_KEY"
"""AWS: the shared secret (at least 32 bytes) signing the redirects to the streaming service."""
ENV_URL_SIGNING_SECRET_ARN = "SKYPACS_URL_SIGNING_SECRET_ARN"
"""AWS: a Secrets Manager secret holding that key, read at run time (what the CDK stack sets, so that the
key never appears in a template or a function's configuration); ignored when the key itself is set."""
ENV_OIDC_ISSUER = "SKYPACS_OIDC_ISSUER"
"""AWS authorizer: the OIDC issuer whose tokens the API accepts (``https://cognito-idp.{region}.amazonaws.com/
{userPoolId}`` for the stack's Cognito user pool)."""
ENV_OIDC_AUDIENCE = "SKYPACS_OIDC_AUDIENCE"
"""AWS authorizer: comma-separated accepted audiences (``aud`` or Cognito's ``client_id``); empty: any."""
ENV_OIDC_READ_SCOPE = "SKYPACS_OIDC_READ_SCOPE"
"""AWS authorizer: the scope that allows GET and HEAD (default ``skypacs/read``)."""
ENV_OIDC_WRITE_SCOPE = "SKYPACS_OIDC_WRITE_SCOPE"
"""AWS authorizer: the scope that allows every method (default ``skypacs/write``)."""
ENV_OIDC_WRITE_GROUPS = "SKYPACS_OIDC_WRITE_GROUPS"
"""AWS authorizer: comma-separated groups (``cognito:groups``/``groups`` claim) whose members may write
with a read-scoped token (the stack's Cognito group ``skypacs-writers``)."""
ENV_OIDC_JWKS_URL = "SKYPACS_OIDC_JWKS_URL"
"""AWS authorizer: the issuer's JWKS URL, when it is not the ``jwks_uri`` of its discovery document."""
ENV_UPLOAD_MAX_BYTES = "SKYPACS_UPLOAD_MAX_BYTES"
"""AWS: the largest object one ``POST /uploads`` URL accepts (default 5 GiB, S3's single-PUT limit)."""
ENV_LOG_IDENTIFIERS = "SKYPACS_LOG_IDENTIFIERS"
"""Set to 1 to allow patient identifiers in logs (debugging only; off by default)."""

DEFAULT_DATA_DIR = "./skypacs-data"
DEFAULT_AE_TITLE = "SKYPACS"
DEFAULT_DIMSE_PORT = 11112
DEFAULT_HTTP_PORT = 8080
TOKEN_SCOPES = ("read", "write")
"""``read``: GET and HEAD (QIDO-RS, WADO-RS); ``write``: also POST (STOW-RS) and DELETE."""
MIN_TOKEN_LENGTH = 20


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    ae_title: str = DEFAULT_AE_TITLE
    dimse_host: str = "0.0.0.0"
    dimse_port: int = DEFAULT_DIMSE_PORT
    allowed_aes: frozenset[str] = frozenset()
    """Calling AE titles allowed to associate; empty means open to any AE (a warning is logged)."""
    max_pdu: int = 0
    extra_sop_classes: frozenset[str] = frozenset()
    destinations: Mapping[str, str] = field(default_factory=dict)
    """C-MOVE destinations: AE title -> ``"host:port"`` (see :func:`parse_address`)."""
    dimse_permissions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Calling AE title (or ``"*"``) -> DIMSE operations it may invoke; empty = no restriction
    (see :mod:`skypacs.dimse.permissions`)."""
    tls_certificate: Path | None = None
    """DIMSE over TLS: the gateway's certificate (PEM); with ``tls_private_key``; None = plain TCP."""
    tls_private_key: Path | None = None
    tls_ca: Path | None = None
    """CA certificates (PEM) that client certificates must chain to; set = client certificates required."""
    http_host: str = "127.0.0.1"
    http_port: int = DEFAULT_HTTP_PORT
    http_tokens: Mapping[str, str] = field(default_factory=dict)
    """DICOMweb bearer tokens: token -> scope (one of :data:`TOKEN_SCOPES`); empty = no authentication."""
    cors_origins: tuple[str, ...] = ()
    """Browser origins allowed to call DICOMweb (``https://host[:port]``, or ``*`` for any)."""
    log_identifiers: bool = False

    @property
    def config_file(self) -> Path:
        return self.data_dir / "skypacs.toml"


def _csv(value: str) -> frozenset[str]:
    return frozenset(part.strip() for part in value.split(",") if part.strip())


def _destinations(value: str) -> dict[str, str]:
    """``AE1=host:port,AE2=host:port`` (the environment form of ``[dimse.destinations]``)."""
    destinations: dict[str, str] = {}
    for part in value.split(","):
        if not part.strip():
            continue
        title, separator, address = part.partition("=")
        if not separator:
            raise ValueError(f"{ENV_DESTINATIONS}: {part.strip()!r} is not AE=host:port")
        destinations[title.strip()] = address.strip()
    return destinations


def _permissions(entries: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """``[dimse.permissions]`` as AE -> operations; a bare string is refused (``CT01 = "store"`` is a
    mistake for ``["store"]``, not a list of letters)."""
    if not isinstance(entries, Mapping):
        raise ValueError("[dimse.permissions] must be a table of AE title = [operations]")  # noqa: TRY004 - config errors are ValueErrors
    permissions: dict[str, tuple[str, ...]] = {}
    for title, operations in entries.items():
        if isinstance(operations, str) or not isinstance(operations, list):
            raise ValueError(f"DIMSE permissions of {title!r} must be a list of operations")  # noqa: TRY004
        permissions[str(title)] = tuple(str(operation) for operation in operations)
    return permissions


def _tokens(value: str) -> dict[str, str]:
    """``tok1:write,tok2:read`` (the environment form of ``[http.tokens]``)."""
    tokens: dict[str, str] = {}
    for part in value.split(","):
        if not part.strip():
            continue
        token, separator, scope = part.strip().rpartition(":")
        if not separator or not token:
            raise ValueError(f"{ENV_HTTP_TOKENS}: an entry is not TOKEN:scope")  # never echo a secret
        tokens[token] = scope.strip()
    return tokens


def parse_origins(value: str) -> tuple[str, ...]:
    """``SKYPACS_CORS_ORIGINS``: comma-separated origins, without trailing slashes."""
    return tuple(part.strip().rstrip("/") for part in value.split(",") if part.strip())


def parse_address(value: str) -> tuple[str, int]:
    """``"host:port"`` (or ``"[v6 address]:port"``) as ``(host, port)``; ValueError if it is not one."""
    host, separator, port = value.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not separator or not host or any(c.isspace() for c in host) or not port.isdigit():
        raise ValueError(f"{value!r} is not host:port")
    if not 0 < int(port) <= 65535:
        raise ValueError(f"{value!r}: port {port} is out of range")
    return host, int(port)


def _check_ae_title(title: str, what: str) -> None:
    if not (0 < len(title) <= 16) or not title.isprintable() or "\\" in title or title.strip() != title:
        raise ValueError(f"{what} {title!r} must be 1-16 printable characters without backslash")


def _from_file(path: Path) -> dict[str, Any]:
    with path.open("rb") as handle:
        document = tomllib.load(handle)
    dimse, http = document.get("dimse", {}), document.get("http", {})
    values: dict[str, Any] = {}
    for source, target in (("ae_title", "ae_title"), ("port", "dimse_port"), ("host", "dimse_host"),
                           ("max_pdu", "max_pdu")):
        if source in dimse:
            values[target] = dimse[source]
    if "allowed_aes" in dimse:
        values["allowed_aes"] = frozenset(dimse["allowed_aes"])
    if "extra_sop_classes" in dimse:
        values["extra_sop_classes"] = frozenset(dimse["extra_sop_classes"])
    if "destinations" in dimse:
        values["destinations"] = {str(title): str(address) for title, address in dimse["destinations"].items()}
    for name in ("tls_certificate", "tls_private_key", "tls_ca"):
        if name in dimse:
            values[name] = Path(dimse[name])
    if "permissions" in dimse:
        values["dimse_permissions"] = _permissions(dimse["permissions"])
    for source, target in (("port", "http_port"), ("host", "http_host")):
        if source in http:
            values[target] = http[source]
    if "tokens" in http:
        values["http_tokens"] = {str(token): str(scope) for token, scope in http["tokens"].items()}
    if "cors_origins" in http:
        values["cors_origins"] = tuple(str(origin).strip().rstrip("/") for origin in http["cors_origins"])
    return values


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    readers: dict[str, tuple[str, Any]] = {
        ENV_AE_TITLE: ("ae_title", str),
        ENV_DIMSE_PORT: ("dimse_port", int),
        ENV_DIMSE_HOST: ("dimse_host", str),
        ENV_ALLOWED_AES: ("allowed_aes", _csv),
        ENV_MAX_PDU: ("max_pdu", int),
        ENV_EXTRA_SOP_CLASSES: ("extra_sop_classes", _csv),
        ENV_DESTINATIONS: ("destinations", _destinations),
        ENV_DIMSE_PERMISSIONS: ("dimse_permissions", lambda v: _permissions(parse_permissions(v))),
        ENV_DIMSE_TLS_CERTIFICATE: ("tls_certificate", Path),
        ENV_DIMSE_TLS_PRIVATE_KEY: ("tls_private_key", Path),
        ENV_DIMSE_TLS_CA: ("tls_ca", Path),
        ENV_HTTP_PORT: ("http_port", int),
        ENV_HTTP_HOST: ("http_host", str),
        ENV_HTTP_TOKENS: ("http_tokens", _tokens),
        ENV_CORS_ORIGINS: ("cors_origins", parse_origins),
        ENV_LOG_IDENTIFIERS: ("log_identifiers", lambda v: v.strip().lower() in ("1", "true", "yes")),
    }
    return {name: parse(environ[var]) for var, (name, parse) in readers.items() if environ.get(var)}


def load_settings(
    *,
    data_dir: str | os.PathLike[str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build settings from every source; explicit arguments beat the environment, which beats the file."""
    environ = os.environ if environ is None else environ
    directory = Path(data_dir or environ.get(ENV_DATA_DIR) or DEFAULT_DATA_DIR)
    settings = Settings(data_dir=directory)
    path = Path(config_file or environ.get(ENV_CONFIG) or settings.config_file)
    if (config_file is not None or environ.get(ENV_CONFIG)) and not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    if path.is_file():
        settings = replace(settings, **_from_file(path))
    settings = replace(settings, **_from_env(environ))
    if overrides:
        settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    return _validated(settings)


def _validated(settings: Settings) -> Settings:
    _check_ae_title(settings.ae_title, "AE title")
    for title, address in settings.destinations.items():
        _check_ae_title(title, "C-MOVE destination AE title")
        try:
            parse_address(address)
        except ValueError as exc:
            raise ValueError(f"C-MOVE destination {title}: {exc}") from None
    for title in settings.dimse_permissions:
        if title != ANY_AE:
            _check_ae_title(title, "DIMSE permissions AE title")
    Permissions.from_config(settings.dimse_permissions)  # ValueError on an unknown operation
    if (settings.tls_certificate is None) != (settings.tls_private_key is None):
        raise ValueError("DIMSE TLS needs both tls_certificate and tls_private_key")
    if settings.tls_ca is not None and settings.tls_certificate is None:
        raise ValueError("DIMSE tls_ca (client certificates) needs tls_certificate and tls_private_key")
    for port in (settings.dimse_port, settings.http_port):
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} is out of range")
    if settings.max_pdu < 0:
        raise ValueError("max_pdu must be 0 (unlimited) or a positive byte count")
    for number, (token, scope) in enumerate(settings.http_tokens.items(), start=1):
        # Tokens are secrets: errors name their position, never the token.
        if len(token) < MIN_TOKEN_LENGTH or not token.isprintable() or token != token.strip():
            raise ValueError(f"HTTP token #{number} must be at least {MIN_TOKEN_LENGTH} printable characters")
        if scope not in TOKEN_SCOPES:
            raise ValueError(f"HTTP token #{number}: scope {scope!r} is not one of {', '.join(TOKEN_SCOPES)}")
    for origin in settings.cors_origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ValueError(f"CORS origin {origin!r} must be * or scheme://host[:port]")
    return settings
