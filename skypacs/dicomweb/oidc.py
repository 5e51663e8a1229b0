"""OIDC/JWT bearer tokens for the DICOMweb API on AWS: the logic of its API Gateway authorizer.

API Gateway's REST API (the payload format Chalice speaks) has no built-in JWT authorizer for an
arbitrary issuer (HTTP APIs do; REST APIs only know Cognito user pools), so one Lambda authorizer
(``functions/authorizer/handler.py``) verifies the token and this module does the work:

- signature against the issuer's JSON Web Key Set (found through its OpenID discovery document, or
  ``SKYPACS_OIDC_JWKS_URL``), asymmetric algorithms only (RS/PS/ES): ``none`` and HMAC are refused,
  since an HMAC "key" taken from a public JWKS would let anyone sign;
- ``iss`` equal to the configured issuer, ``exp`` in the future (30 s leeway for clock skew), and the
  audience when one is configured: ``aud`` (ID tokens, most issuers' access tokens) or ``client_id``
  (Cognito access tokens carry no ``aud``);
- the access it grants from its scopes: ``scope`` (a space-separated string, RFC 8693/9068) or ``scp``
  (a list or string: Okta, Entra ID). The write scope allows every method, the read scope GET and HEAD
  (the same split as the embedded tokens, :mod:`skypacs.dicomweb.auth`); a valid token with neither is
  known but allowed nothing (403). A token with the read scope whose ``cognito:groups`` or ``groups``
  claim names one of ``SKYPACS_OIDC_WRITE_GROUPS`` may write too: per-user roles, since Cognito gives
  every user of an app client the same scopes.

Cognito is the default issuer (``https://cognito-idp.{region}.amazonaws.com/{userPoolId}``) with the
resource-server scopes ``skypacs/read`` and ``skypacs/write``; OHIF's OIDC login sends the access token
it obtained, which carries them.

The answer to API Gateway is an IAM policy over the methods the token may use on the whole API, not
only the method asked for: API Gateway caches it per token (the authorizer's TTL), and a policy naming
one method would deny the next request on another path with the same token.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt

from skypacs.config import (
    ENV_OIDC_AUDIENCE,
    ENV_OIDC_ISSUER,
    ENV_OIDC_JWKS_URL,
    ENV_OIDC_READ_SCOPE,
    ENV_OIDC_WRITE_GROUPS,
    ENV_OIDC_WRITE_SCOPE,
)
from skypacs.dicomweb.auth import READ_METHODS
from skypacs.errors import Unauthenticated

DEFAULT_READ_SCOPE = "skypacs/read"
DEFAULT_WRITE_SCOPE = "skypacs/write"
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
"""Asymmetric algorithms only: a public key must never serve as an HMAC secret."""
LEEWAY_SECONDS = 30
FETCH_TIMEOUT_SECONDS = 5
WRITE_METHODS = ("POST", "PUT", "DELETE", "PATCH")


@dataclass(frozen=True)
class OidcSettings:
    """Which tokens the API accepts."""

    issuer: str
    audiences: tuple[str, ...] = ()
    read_scope: str = DEFAULT_READ_SCOPE
    write_scope: str = DEFAULT_WRITE_SCOPE
    jwks_url: str | None = None
    write_groups: tuple[str, ...] = ()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> OidcSettings:
        issuer = environ.get(ENV_OIDC_ISSUER, "").strip().rstrip("/")
        if not issuer.startswith("https://") and not issuer.startswith("http://127.0.0.1"):
            raise RuntimeError(f"{ENV_OIDC_ISSUER} must be the issuer's https:// URL, got {issuer!r}")
        audiences = tuple(a.strip() for a in environ.get(ENV_OIDC_AUDIENCE, "").split(",") if a.strip())
        return cls(
            issuer=issuer,
            audiences=audiences,
            read_scope=environ.get(ENV_OIDC_READ_SCOPE, "").strip() or DEFAULT_READ_SCOPE,
            write_scope=environ.get(ENV_OIDC_WRITE_SCOPE, "").strip() or DEFAULT_WRITE_SCOPE,
            jwks_url=environ.get(ENV_OIDC_JWKS_URL, "").strip() or None,
            write_groups=tuple(g.strip() for g in environ.get(ENV_OIDC_WRITE_GROUPS, "").split(",") if g.strip()),
        )


@dataclass(frozen=True)
class Principal:
    """Who a verified token names, and what it may do: ``write``, ``read`` or ``None`` (nothing)."""

    subject: str
    access: str | None
    scopes: frozenset[str] = field(default_factory=frozenset)

    def may(self, method: str) -> bool:
        if self.access == "write":
            return True
        return self.access == "read" and method.upper() in READ_METHODS


class OidcVerifier:
    """Verifies bearer tokens of one issuer. Keys are fetched on first use and kept (PyJWT's
    :class:`jwt.PyJWKClient` refetches the set when a token names a key it does not know: rotation)."""

    def __init__(self, settings: OidcSettings, *, jwks_client: jwt.PyJWKClient | None = None) -> None:
        self.settings = settings
        self._jwks_client = jwks_client
        self._lock = threading.Lock()

    def verify(self, token: str) -> Principal:
        """The principal of a valid token; Unauthenticated (401) for anything else. Messages say why
        without quoting the token."""
        token = token.strip()
        if token.lower().startswith("bearer "):
            token = token[7:].strip()
        if not token:
            raise Unauthenticated("authentication required: send 'Authorization: Bearer TOKEN'")
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") not in ALGORITHMS:
                raise Unauthenticated(f"token algorithm {header.get('alg')!r} is not accepted")
            key = self._keys().get_signing_key_from_jwt(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=list(ALGORITHMS),
                issuer=self.settings.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss"], "verify_aud": False},
            )
        except Unauthenticated:
            raise
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the bearer token has expired") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("the bearer token was issued by another issuer") from None
        except jwt.PyJWKClientError as error:
            raise Unauthenticated(f"the bearer token's signing key is not known: {error}") from None
        except jwt.InvalidTokenError as error:
            raise Unauthenticated(f"the bearer token is not valid: {error}") from None
        self._check_audience(claims)
        scopes = scopes_of(claims)
        access = self._access(scopes, groups_of(claims))
        return Principal(subject=str(claims.get("sub", "")), access=access, scopes=scopes)

    def _check_audience(self, claims: Mapping[str, Any]) -> None:
        if not self.settings.audiences:
            return
        aud = claims.get("aud", [])
        presented = {aud} if isinstance(aud, str) else set(aud or [])
        if isinstance(claims.get("client_id"), str):
            presented.add(claims["client_id"])
        if not presented & set(self.settings.audiences):
            raise Unauthenticated("the bearer token is meant for another audience")

    def _access(self, scopes: frozenset[str], groups: frozenset[str]) -> str | None:
        if self.settings.write_scope in scopes:
            return "write"
        if self.settings.read_scope in scopes:
            # Per-user roles: in Cognito, scopes follow the app client, so a viewer's token carries the
            # read scope for everyone; membership of a write group lifts it to write.
            return "write" if groups & set(self.settings.write_groups) else "read"
        return None

    def _keys(self) -> jwt.PyJWKClient:
        with self._lock:
            if self._jwks_client is None:
                url = self.settings.jwks_url or discover_jwks_url(self.settings.issuer)
                self._jwks_client = jwt.PyJWKClient(url, cache_keys=True, timeout=FETCH_TIMEOUT_SECONDS)
            return self._jwks_client


def discover_jwks_url(issuer: str) -> str:
    """``jwks_uri`` from the issuer's OpenID discovery document (OpenID Connect Discovery 1.0 §4)."""
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_SECONDS) as answer:
            document = json.load(answer)
    except (OSError, ValueError) as error:
        raise Unauthenticated(f"the issuer's discovery document could not be read: {error}") from None
    jwks_uri = document.get("jwks_uri") if isinstance(document, dict) else None
    if not isinstance(jwks_uri, str) or not jwks_uri:
        raise Unauthenticated("the issuer's discovery document names no jwks_uri")
    return jwks_uri


def scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    """Scopes from ``scope`` (space-separated) and ``scp`` (list or space-separated string)."""
    return _claim_values(claims, ("scope", "scp"))


def groups_of(claims: Mapping[str, Any]) -> frozenset[str]:
    """Groups from ``cognito:groups`` (Cognito) and ``groups`` (Keycloak, Okta, Entra ID): a list or a
    space-separated string."""
    return _claim_values(claims, ("cognito:groups", "groups"))


def _claim_values(claims: Mapping[str, Any], names: tuple[str, ...]) -> frozenset[str]:
    """The values of the ``names`` claims together; issuers write each as a list or a space-separated string."""
    found: set[str] = set()
    for name in names:
        value = claims.get(name)
        if isinstance(value, str):
            found.update(value.split())
        elif isinstance(value, list):
            found.update(str(item) for item in value)
    return frozenset(found)


def api_policy(principal: Principal, method_arn: str) -> dict[str, Any]:
    """The authorizer's answer: Allow on every method of the API this principal may use.

    ``method_arn`` is ``arn:aws:execute-api:{region}:{account}:{api}/{stage}/{METHOD}/{path}``; the
    policy covers ``{api}/{stage}/{METHOD}/*`` for each allowed method, and denies everything when the
    token allows nothing.
    """
    prefix = "/".join(method_arn.split("/")[:2])  # arn:...:{api}/{stage}
    methods = [m for m in (*sorted(READ_METHODS - {"OPTIONS"}), *WRITE_METHODS) if principal.may(m)]
    if methods:
        statement: dict[str, Any] = {
            "Action": "execute-api:Invoke", "Effect": "Allow",
            "Resource": [f"{prefix}/{method}/*" for method in methods],
        }
    else:
        statement = {"Action": "execute-api:Invoke", "Effect": "Deny", "Resource": f"{prefix}/*"}
    return {
        "principalId": principal.subject or "anonymous",
        "policyDocument": {"Version": "2012-10-17", "Statement": [statement]},
        # Strings only: API Gateway passes these to the API Lambda as requestContext.authorizer.
        "context": {"access": principal.access or "none", "scopes": " ".join(sorted(principal.scopes))},
    }


def allowed_methods(policy: Mapping[str, Any]) -> Sequence[str]:
    """The HTTP methods a policy made by :func:`api_policy` allows (for logs and tests)."""
    statement = policy["policyDocument"]["Statement"][0]
    if statement["Effect"] != "Allow":
        return []
    return [resource.split("/")[-2] for resource in statement["Resource"]]
