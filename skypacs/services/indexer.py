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
from skypacs.services.ingest import IngestResult, IngestService

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
        done: list[int] = []
        for entry in entries:
            if self._process(entry):
                done.append(entry.id)
        self.queue.ack(done)
        return len(entries)

    def _process(self, entry: QueueEntry) -> bool:
        try:
            # The writer's etag describes what it wrote; a later overwrite has its own entry, and
            # ingesting with a stale etag is settled by that entry (the catalog then records a replacement).
            result = self.ingest.ingest(entry.key, etag=entry.etag, size=entry.size)
        except SkyPacsError as exc:
            return self._retry(entry, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a bug must not wedge the queue: retry, then dead-letter
            logger.exception("ingest of %s failed unexpectedly", entry.key)
            return self._retry(entry, f"{type(exc).__name__}: {exc}")
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
