"""UID syntax per PS3.5 9.1: components of digits separated by dots, no leading zero, <= 64 chars."""

from __future__ import annotations

import re

from skypacs.errors import InvalidUID

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")
MAX_UID_LENGTH = 64


def is_valid_uid(value: str) -> bool:
    return len(value) <= MAX_UID_LENGTH and _UID.match(value) is not None


def check_uid(keyword: str, value: str) -> str:
    """Return ``value`` or raise :class:`InvalidUID` naming the attribute (never the patient)."""
    if not is_valid_uid(value):
        shown = value if len(value) <= 80 and value.isprintable() else repr(value[:80])
        raise InvalidUID(f"{keyword} {shown!s} is not a valid UID (PS3.5 9.1)")
    return value
