"""A durable ingest queue on SQLite: the embedded stand-in for S3 notifications -> SQS.

Writers (the gateway, import, STOW) enqueue a key *before* writing the object, held back for
``WRITE_GRACE_SECONDS``, and mark it ready once the write is durable; the indexer claims ready
batches, ingests, and acks. A crash anywhere leaves the key queued (and ready once the hold-back
passes), so the next start indexes it. Keys whose object does not exist are retried for a grace
period (a very slow write), then dropped. Entries that keep failing move to the dead-letter state after
``MAX_ATTEMPTS`` and can be replayed (``skypacs queue replay``), like an SQS dead-letter queue.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from skypacs.adapters.sqlite_db import SqliteDatabase
from skypacs.ports import ObjectInfo

MAX_ATTEMPTS = 8
WRITE_GRACE_SECONDS = 30.0
"""How long an enqueued key waits for its writer's ``ready`` before the indexer looks anyway."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS ingest_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    enqueued_at REAL NOT NULL,
    not_before REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    dead INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    etag TEXT,
    size INTEGER
);
CREATE INDEX IF NOT EXISTS ingest_queue_ready ON ingest_queue (dead, not_before, id);
"""


@dataclass(frozen=True)
class QueueEntry:
    id: int
    key: str
    enqueued_at: float
    attempts: int
    etag: str | None = None
    size: int | None = None
    """What the writer reported when it marked the entry ready, so ingest need not re-read the object."""


@dataclass(frozen=True)
class QueueCounts:
    pending: int
    dead: int


class SqliteIngestQueue:
    def __init__(self, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time) -> None:
        self.db = SqliteDatabase(path, SCHEMA)
        self.clock = clock

    def enqueue(self, key: str) -> int:
        """Queue ``key`` ahead of its write; returns the entry id for :meth:`ready` (or :meth:`ack`
        by a writer that ingests inline)."""
        now = self.clock()
        with self.db.transaction() as connection:
            cursor = connection.execute(
                "INSERT INTO ingest_queue (key, enqueued_at, not_before) VALUES (?, ?, ?)",
                (key, now, now + WRITE_GRACE_SECONDS),
            )
            return int(cursor.lastrowid or 0)

    def ready(self, entry_id: int, info: ObjectInfo | None = None) -> None:
        """The object is written: make its entry available to the indexer now, with its size and etag."""
        with self.db.transaction() as connection:
            connection.execute(
                "UPDATE ingest_queue SET not_before = ?, etag = ?, size = ? WHERE id = ? AND attempts = 0",
                (self.clock(), info.etag if info else None, info.size if info else None, entry_id),
            )

    def claim(self, limit: int = 64) -> list[QueueEntry]:
        """Ready entries in arrival order. Only one indexer consumes a queue, so no lease is needed."""
        rows = self.db.connection().execute(
            "SELECT id, key, enqueued_at, attempts, etag, size FROM ingest_queue "
            "WHERE dead = 0 AND not_before <= ? ORDER BY id LIMIT ?",
            (self.clock(), limit),
        )
        return [QueueEntry(*row) for row in rows]

    def ack(self, ids: list[int]) -> None:
        if not ids:
            return
        with self.db.transaction() as connection:
            connection.executemany("DELETE FROM ingest_queue WHERE id = ?", [(i,) for i in ids])

    def retry(self, entry: QueueEntry, error: str, *, delay: float) -> bool:
        """Schedule another attempt; returns False when the entry went to the dead-letter state."""
        attempts = entry.attempts + 1
        dead = attempts >= MAX_ATTEMPTS
        with self.db.transaction() as connection:
            connection.execute(
                "UPDATE ingest_queue SET attempts = ?, not_before = ?, dead = ?, last_error = ? WHERE id = ?",
                (attempts, self.clock() + delay, int(dead), error[:500], entry.id),
            )
        return not dead

    def postpone(self, entry: QueueEntry, delay: float) -> None:
        """Look again later without counting an attempt (the object's write is still in flight)."""
        with self.db.transaction() as connection:
            connection.execute(
                "UPDATE ingest_queue SET not_before = ? WHERE id = ?", (self.clock() + delay, entry.id)
            )

    def replay_dead(self) -> int:
        with self.db.transaction() as connection:
            cursor = connection.execute(
                "UPDATE ingest_queue SET dead = 0, attempts = 0, not_before = ? WHERE dead = 1", (self.clock(),)
            )
            return cursor.rowcount

    def dead_entries(self) -> list[tuple[str, str]]:
        rows = self.db.connection().execute(
            "SELECT key, coalesce(last_error, '') FROM ingest_queue WHERE dead = 1 ORDER BY id"
        )
        return [(row[0], row[1]) for row in rows]

    def next_ready_in(self) -> float | None:
        """Seconds until the next pending entry becomes ready (0 if one is ready), None if none."""
        row = self.db.connection().execute("SELECT min(not_before) FROM ingest_queue WHERE dead = 0").fetchone()
        return None if row[0] is None else max(0.0, float(row[0]) - self.clock())

    def counts(self) -> QueueCounts:
        pending, dead = self.db.connection().execute(
            "SELECT coalesce(sum(dead = 0), 0), coalesce(sum(dead = 1), 0) FROM ingest_queue"
        ).fetchone()
        return QueueCounts(int(pending), int(dead))
