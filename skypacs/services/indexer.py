"""The embedded indexer loop: drain the ingest queue through :class:`IngestService`.

Runs in its own process under ``skypacs serve`` (so parsing and SQLite writes use the second core
while the gateway receives), and in-process for ``skypacs import`` and tests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

from skypacs.adapters.sqlite_queue import WRITE_GRACE_SECONDS, QueueEntry, SqliteIngestQueue
from skypacs.errors import SkyPacsError
from skypacs.services.ingest import IngestRequest, IngestResult, IngestService

logger = logging.getLogger(__name__)

MISSING_GRACE_SECONDS = 2 * WRITE_GRACE_SECONDS
"""How long a queued key may have no object (a very slow write, or a writer that crashed before
writing) before the entry is dropped."""


class QueueIndexer:
    def __init__(
        self,
        queue: SqliteIngestQueue,
        ingest: IngestService,
        *,
        batch_size: int = 64,
        clock: Callable[[], float] = time.time,
        on_result: Callable[[IngestResult], None] | None = None,
    ) -> None:
        self.queue, self.ingest = queue, ingest
        self.batch_size = batch_size
        self.clock = clock
        self.on_result = on_result
        self.totals: Counter[str] = Counter()

    def drain_once(self) -> int:
        """Process one batch of ready entries; returns how many entries were taken."""
        entries = self.queue.claim(self.batch_size)
        if not entries:
            return 0
        # The writer's etag describes what it wrote; a later overwrite has its own entry, and
        # ingesting with a stale etag is settled by that entry (the catalog then records a replacement).
        results = self.ingest.ingest_many(
            [IngestRequest(e.key, e.etag, e.size, redelivered=e.attempts > 0) for e in entries]
        )
        done = [entry.id for entry, result in zip(entries, results, strict=True) if self._settled(entry, result)]
        self.queue.ack(done)
        return len(entries)

    def _settled(self, entry: QueueEntry, result: IngestResult | Exception) -> bool:
        """Whether the entry is finished with; a failure is retried later, a missing object waited for."""
        if isinstance(result, SkyPacsError):
            return self._retry(entry, f"{type(result).__name__}: {result}")
        if isinstance(result, Exception):  # a bug must not wedge the queue: retry, then dead-letter
            logger.error("ingest of %s failed unexpectedly", entry.key, exc_info=result)
            return self._retry(entry, f"{type(result).__name__}: {result}")
        if result.outcome == "missing" and self.clock() - entry.enqueued_at < MISSING_GRACE_SECONDS:
            self.queue.postpone(entry, delay=1.0)
            return False
        self.totals[result.outcome] += 1
        if self.on_result is not None:
            self.on_result(result)
        return True

    def _retry(self, entry: QueueEntry, error: str) -> bool:
        delay = min(60.0, 0.5 * 2**entry.attempts)
        if not self.queue.retry(entry, error, delay=delay):
            logger.error("ingest of %s failed %d times; moved to dead letters", entry.key, entry.attempts + 1)
        return False

    def run(self, stop: threading.Event, *, idle_sleep: float = 0.05, final_wait: float = 10.0) -> None:
        """Drain until ``stop`` is set, then finish what becomes ready within ``final_wait`` seconds
        (entries backing off after a failure may stay queued for the next start)."""
        while not stop.is_set():
            if self.drain_once() == 0:
                stop.wait(idle_sleep)
        deadline = time.monotonic() + final_wait
        while time.monotonic() < deadline:
            if self.drain_once():
                continue
            wait = self.queue.next_ready_in()
            if wait is None or wait > deadline - time.monotonic():
                return
            time.sleep(min(wait, 0.1))
