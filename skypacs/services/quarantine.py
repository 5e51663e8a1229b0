"""Quarantine: where objects the archive refuses are kept, with their reason, instead of dropped.

Two ways in: ingest moves an already-stored object that fails validation; an edge (gateway, STOW)
keeps the bytes of a refused transfer. Both record a :class:`QuarantineRecord` that
``skypacs quarantine list`` shows.
"""

from __future__ import annotations

import logging

from skypacs.clock import Clock, isoformat, time_ordered_id, utc_now
from skypacs.errors import NotFound
from skypacs.keys import quarantine_key
from skypacs.ports import Catalog, ObjectInfo, ObjectStore, QuarantineRecord

logger = logging.getLogger(__name__)


class Quarantine:
    def __init__(self, store: ObjectStore, catalog: Catalog, *, clock: Clock = utc_now) -> None:
        self.store, self.catalog, self.clock = store, catalog, clock

    def move(self, key: str, reason: str, message: str) -> QuarantineRecord | None:
        """Move a stored object into quarantine; ``None`` if it no longer exists."""
        now = self.clock()
        quarantine_id = time_ordered_id(now)
        target = quarantine_key(key, quarantine_id)
        try:
            info = self.store.move(key, target)
        except NotFound:
            return None
        return self._record(quarantine_id, key, info, reason, message, isoformat(now))

    def keep(self, data: bytes, name: str, reason: str, message: str) -> QuarantineRecord:
        """Keep the bytes of a refused transfer (``name`` is what the sender called it)."""
        now = self.clock()
        quarantine_id = time_ordered_id(now)
        info = self.store.put(quarantine_key(name, quarantine_id), data)
        return self._record(quarantine_id, name, info, reason, message, isoformat(now))

    def _record(
        self, quarantine_id: str, original: str, info: ObjectInfo, reason: str, message: str, at: str
    ) -> QuarantineRecord:
        record = QuarantineRecord(
            quarantine_id=quarantine_id,
            original_key=original,
            quarantine_key=info.key,
            reason=reason,
            message=message,
            size=info.size,
            quarantined_at=at,
        )
        self.catalog.add_quarantine(record)
        logger.warning("quarantined %s as %s: %s", original, info.key, reason)
        return record
