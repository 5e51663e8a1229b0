"""The audit trail: one JSON object per store, query, retrieve and delete (who, what, when, outcome).

Audit records go to the logger :data:`AUDIT_LOGGER` (``skypacs.audit``), apart from the ordinary logs:
:func:`skypacs.logs.configure_logging` gives it its own handler at INFO that writes the JSON object
alone on each line, whatever the root level and ``--log-json``; to send the trail elsewhere (a file,
syslog), attach a handler to that logger. A record names UIDs, levels, counts, query parameter and key
*names*, AE titles and addresses, never a value a patient could be recognised by, and never a token:
HTTP callers are named by :func:`token_id`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

AUDIT_LOGGER = "skypacs.audit"
ACTIONS = frozenset({"store", "query", "retrieve", "delete"})
ANONYMOUS = "anonymous"

logger = logging.getLogger(AUDIT_LOGGER)


def audit(action: str, *, who: str, what: Mapping[str, Any], outcome: str, protocol: str, **extra: Any) -> None:
    """Write one audit record. ``outcome`` is "success" or "failure"; ``extra`` adds fields such as the
    status (HTTP code or DIMSE status hex) and the caller's address. An unknown ``action`` is a
    ValueError (a programming error); a record that cannot be written is an error log line, not a
    failed request."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    entry: dict[str, Any] = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "action": action,
        "protocol": protocol,
        "who": who,
        **extra,
        "what": dict(what),
        "outcome": outcome,
    }
    try:
        message = json.dumps(entry, ensure_ascii=False, default=str, separators=(",", ":"))
        logger.info(message, extra={"audit": entry})
    except Exception:  # the trail must not break the service it records
        logging.getLogger(__name__).exception("cannot write an audit record for %s", action)


def token_id(token: str | None) -> str:
    """Who an HTTP caller is: the first 8 hex digits of the SHA-256 of its bearer token (enough to tell
    the configured tokens apart, useless to present), or "anonymous"."""
    if not token:
        return ANONYMOUS
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:8]


def bearer_token(authorization_header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, or None."""
    scheme, _, credentials = (authorization_header or "").strip().partition(" ")
    return credentials.strip() or None if scheme.lower() == "bearer" else None


def dimse_outcome(status: int) -> tuple[str, str]:
    """``("0xA700", "failure")``: the status as hex, and success for Success, Pending and Warning."""
    failed = status not in (0x0000, 0xFF00, 0xFF01) and not 0xB000 <= status <= 0xBFFF and status != 0x0107
    return f"0x{status:04X}", "failure" if failed else "success"


def audit_handler() -> logging.Handler:
    """A handler writing each audit record's JSON object alone on a line, to stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


__all__ = ["ACTIONS", "AUDIT_LOGGER", "audit", "audit_handler", "bearer_token", "dimse_outcome", "token_id"]
