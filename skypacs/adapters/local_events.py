"""EventBus in-process, for the embedded archive: handlers run in the publisher's thread.

A failing plugin must never fail ingest: exceptions are logged (without event detail, which may grow
to carry identifiers) and swallowed, like an EventBridge target failing independently of the source.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from skypacs.ports import ArchiveEvent, EventHandler

logger = logging.getLogger(__name__)


class InProcessEventBus:
    def __init__(self) -> None:
        self._handlers: list[tuple[str | None, EventHandler]] = []
        self._lock = threading.Lock()

    def subscribe(self, handler: EventHandler, event_type: str | None = None) -> None:
        """Call ``handler`` for every event, or only for ``event_type``."""
        with self._lock:
            self._handlers.append((event_type, handler))

    def publish_many(self, events: Sequence[ArchiveEvent]) -> dict[int, Exception]:
        for event in events:
            self.publish(event)  # handlers' failures are logged there, never raised
        return {}

    def publish(self, event: ArchiveEvent) -> None:
        with self._lock:
            handlers = list(self._handlers)
        for event_type, handler in handlers:
            if event_type is not None and event_type != event.type:
                continue
            try:
                handler(event)
            except Exception:
                logger.exception("event handler %r failed on %s", getattr(handler, "__name__", handler), event.type)
