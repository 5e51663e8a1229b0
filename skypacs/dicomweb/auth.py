"""Bearer tokens for the embedded DICOMweb server (RFC 6750).

A token has a scope: ``read`` may search and retrieve (GET, HEAD: QIDO-RS, WADO-RS), ``write`` may also
store and delete (POST: STOW-RS, DELETE). Tokens come from the configuration (``[http.tokens]``,
``SKYPACS_HTTP_TOKENS``, :mod:`skypacs.config`); without any, ``skypacs serve`` makes one with
:func:`load_or_create_token` so that an archive is never open by accident. No token at all, or one the
archive does not know, is a 401 (:class:`~skypacs.errors.Unauthenticated`); a known read token asking
to write is a 403 (:class:`~skypacs.errors.AccessDenied`).

Tokens are kept in plain text: they are random strings the archive generated or an operator chose,
and the configuration file that holds them must be protected like the data directory anyway.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from skypacs.config import MIN_TOKEN_LENGTH
from skypacs.errors import AccessDenied, Unauthenticated

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods a ``read`` token may use; every other method needs ``write``."""
API_TOKEN_FILE = "api-token"
"""The token ``skypacs serve`` generates when none is configured, in the data directory (mode 0600)."""


def authorize(tokens: Mapping[str, str], method: str, authorization_header: str | None) -> None:
    """Pass if ``Authorization: Bearer TOKEN`` names a token of ``tokens`` (token -> scope) whose scope
    allows ``method``; raise Unauthenticated or AccessDenied otherwise. Messages never quote the token."""
    scheme, _, credentials = (authorization_header or "").strip().partition(" ")
    if not scheme:
        raise Unauthenticated("authentication required: send 'Authorization: Bearer TOKEN'")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer TOKEN'")
    scope = scope_of(tokens, credentials.strip())
    if scope is None:
        raise Unauthenticated("the bearer token is not valid")
    if method.upper() not in READ_METHODS and scope != "write":
        raise AccessDenied(f"this token may only read (GET, HEAD); {method.upper()} needs a write token")


def scope_of(tokens: Mapping[str, str], presented: str) -> str | None:
    """The scope of ``presented``, or None. Every known token is compared, each in constant time, so
    that the answer's timing tells nothing of how much of a token was right, nor which one matched."""
    given = presented.encode("utf-8")
    found: str | None = None
    for token, scope in tokens.items():
        if hmac.compare_digest(given, token.encode("utf-8")) and scope in ("read", "write"):
            found = scope
    return found


def generate_token() -> str:
    """43 URL-safe characters (256 random bits)."""
    return secrets.token_urlsafe(32)


def load_or_create_token(path: Path) -> tuple[str, bool]:
    """The token kept at ``path``, and whether it was created now: on first use a new token is written
    there, readable by its owner only (0600). Raises ValueError if the file holds no usable token."""
    path.parent.mkdir(parents=True, exist_ok=True)
    token = generate_token()
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        stored = path.read_text(encoding="utf-8").strip()
        if len(stored) < MIN_TOKEN_LENGTH or not stored.isprintable() or any(c.isspace() for c in stored):
            raise ValueError(f"{path} does not hold a usable token (at least {MIN_TOKEN_LENGTH} characters); "
                             "delete it to have a new one made") from None
        return stored, False
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    os.chmod(path, 0o600)  # whatever the umask
    return token, True
