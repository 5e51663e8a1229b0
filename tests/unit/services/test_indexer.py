"""The embedded indexer loop over the durable queue: retries, grace for in-flight writes, dead letters."""

from __future__ import annotations

from skypacs.adapters.sqlite_queue import MAX_ATTEMPTS, WRITE_GRACE_SECONDS, SqliteIngestQueue
from skypacs.embedded import EmbeddedArchive
from skypacs.errors import BackendError
from skypacs.parsing import parse_bytes
from skypacs.services.indexer import MISSING_GRACE_SECONDS, QueueIndexer
from skypacs.services.ingest import IngestService
from tests.conftest import dicom_file


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_queued_objects_are_ingested_and_acked(archive: EmbeddedArchive) -> None:
    for name in ("CT_small.dcm", "MR_small.dcm"):
        archive.store_service.store_part10(dicom_file(name).read_bytes())
    indexer = archive.indexer()
    assert indexer.drain_once() == 2
    assert archive.catalog.count_instances() == 2
    assert archive.queue.counts().pending == 0
    assert indexer.totals["stored"] == 2


def test_a_key_is_held_back_until_its_write_completes(archive: EmbeddedArchive) -> None:
    clock = Clock()
    queue = SqliteIngestQueue(archive.data_dir / "q.sqlite", clock=clock)
    indexer = QueueIndexer(queue, archive.ingest_service, clock=clock)
    data = dicom_file("CT_small.dcm").read_bytes()
    key = parse_bytes(data).key
    entry = queue.enqueue(key)
    assert indexer.drain_once() == 0  # the writer has not said ready
    archive.store.put(key, data)
    queue.ready(entry)
    assert indexer.drain_once() == 1 and indexer.totals["stored"] == 1


def test_a_key_whose_writer_crashed_before_writing_is_dropped_after_the_grace(archive: EmbeddedArchive) -> None:
    clock = Clock()
    queue = SqliteIngestQueue(archive.data_dir / "q.sqlite", clock=clock)
    indexer = QueueIndexer(queue, archive.ingest_service, clock=clock)
    queue.enqueue("studies/1.2/series/1.2.3/instances/1.2.3.4.dcm")
    clock.now += WRITE_GRACE_SECONDS + 1
    indexer.drain_once()
    assert queue.counts().pending == 1 and queue.counts().dead == 0  # maybe a very slow write: kept
    clock.now += MISSING_GRACE_SECONDS
    indexer.drain_once()
    assert queue.counts().pending == 0 and indexer.totals["missing"] == 1


def test_backend_failures_back_off_then_dead_letter_then_replay(archive: EmbeddedArchive) -> None:
    clock = Clock()
    queue = SqliteIngestQueue(archive.data_dir / "q.sqlite", clock=clock)
    failing = True

    class FlakyCatalog(type(archive.catalog)):  # type: ignore[misc]
        def put_instances(self, entries):  # type: ignore[no-untyped-def]
            if failing:
                return dict.fromkeys(range(len(entries)), BackendError("database is locked"))
            return super().put_instances(entries)

    catalog = FlakyCatalog(archive.data_dir / "flaky.sqlite")
    service = IngestService(archive.store, catalog, archive.index, archive.events)
    indexer = QueueIndexer(queue, service, clock=clock)
    data = dicom_file("CT_small.dcm").read_bytes()
    key = parse_bytes(data).key
    archive.store.put(key, data)
    queue.ready(queue.enqueue(key))
    for _ in range(MAX_ATTEMPTS):
        clock.now += 120
        indexer.drain_once()
    assert queue.counts().dead == 1 and queue.counts().pending == 0
    ((dead_key, error),) = queue.dead_entries()
    assert dead_key == key and "database is locked" in error
    failing = False
    assert queue.replay_dead() == 1
    indexer.drain_once()
    assert queue.counts().dead == 0 and catalog.count_instances() == 1
