"""Composition root of the embedded archive: every adapter under one data directory.

Layout of the data directory::

    objects/            the ObjectStore (studies/..., quarantine/...)
    catalog.sqlite      the Catalog
    index.sqlite        the QueryIndex
    queue.sqlite        the ingest queue (the embedded S3 -> SQS)
    skypacs.toml        optional configuration (see skypacs.config)
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from skypacs.adapters.fs import FileSystemObjectStore
from skypacs.adapters.local_events import InProcessEventBus
from skypacs.adapters.sqlite_catalog import SqliteCatalog
from skypacs.adapters.sqlite_index import SqliteQueryIndex
from skypacs.adapters.sqlite_queue import SqliteIngestQueue
from skypacs.config import Settings
from skypacs.services.delete import DeleteService
from skypacs.services.indexer import QueueIndexer
from skypacs.services.ingest import IngestService
from skypacs.services.quarantine import Quarantine
from skypacs.services.query import QueryService
from skypacs.services.retrieve import RetrieveService
from skypacs.services.store import StoreService

logger = logging.getLogger(__name__)

INDEXER_NICENESS = 10


@dataclass
class EmbeddedArchive:
    settings: Settings

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @cached_property
    def store(self) -> FileSystemObjectStore:
        return FileSystemObjectStore(self.data_dir / "objects")

    @cached_property
    def catalog(self) -> SqliteCatalog:
        return SqliteCatalog(self.data_dir / "catalog.sqlite")

    @cached_property
    def index(self) -> SqliteQueryIndex:
        return SqliteQueryIndex(self.data_dir / "index.sqlite")

    @cached_property
    def queue(self) -> SqliteIngestQueue:
        return SqliteIngestQueue(self.data_dir / "queue.sqlite")

    @cached_property
    def events(self) -> InProcessEventBus:
        return InProcessEventBus()

    @cached_property
    def ingest_service(self) -> IngestService:
        return IngestService(
            self.store, self.catalog, self.index, self.events, extra_sop_classes=self.settings.extra_sop_classes
        )

    @cached_property
    def store_service(self) -> StoreService:
        return StoreService(
            self.store,
            quarantine=Quarantine(self.store, self.catalog),
            notifier=self.queue,
            extra_sop_classes=self.settings.extra_sop_classes,
        )

    @cached_property
    def query_service(self) -> QueryService:
        return QueryService(self.index)

    @cached_property
    def delete_service(self) -> DeleteService:
        return DeleteService(self.catalog, self.store, self.index, self.events)

    @cached_property
    def retrieve_service(self) -> RetrieveService:
        return RetrieveService(self.catalog, self.store)

    def indexer(self) -> QueueIndexer:
        return QueueIndexer(self.queue, self.ingest_service)


def run_indexer_process(settings: Settings, stop: threading.Event, log_level: str, json_logs: bool) -> None:
    """Entry point of the indexer process under ``skypacs serve``: drain the queue until told to stop."""
    from skypacs.logs import configure_logging

    # Answering C-STOREs comes first: on a busy machine the indexer yields the CPU and catches up after
    # the burst (indexing is asynchronous anyway; the queue is durable).
    os.nice(INDEXER_NICENESS)
    configure_logging(level=log_level, json_format=json_logs, log_identifiers=settings.log_identifiers)
    parent = multiprocessing.parent_process()
    if parent is not None:
        # If serve dies without stopping us (SIGKILL, OOM), stop too: the queue keeps what is left.
        def stop_with_parent() -> None:
            parent.join()
            stop.set()

        threading.Thread(target=stop_with_parent, name="parent-watch", daemon=True).start()
    archive = EmbeddedArchive(settings)
    indexer = archive.indexer()
    pending = archive.queue.counts().pending
    if pending:
        logger.info("indexer resuming %d queued objects from before the last stop", pending)
    indexer.run(stop)
    logger.info("indexer stopped: %s", dict(indexer.totals))


def start_indexer_process(
    settings: Settings, *, log_level: str = "INFO", json_logs: bool = False
) -> tuple[multiprocessing.process.BaseProcess, threading.Event]:
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    process = context.Process(
        target=run_indexer_process,
        args=(settings, stop, log_level, json_logs),
        name="skypacs-indexer",
        daemon=False,
    )
    process.start()
    return process, stop  # type: ignore[return-value]
