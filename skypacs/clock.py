"""Time as the archive records it: UTC, ISO 8601 with microseconds; injectable for tests."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def isoformat(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def time_ordered_id(moment: datetime) -> str:
    """A unique id that sorts by time (for quarantine folders and records)."""
    return f"{moment.astimezone(UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}"
