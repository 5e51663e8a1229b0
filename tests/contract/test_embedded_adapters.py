"""The embedded adapters (filesystem, SQLite, in-process) against every port contract."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from skypacs.adapters.fs import FileSystemObjectStore
from skypacs.adapters.local_events import InProcessEventBus
from skypacs.adapters.sqlite_catalog import SqliteCatalog
from skypacs.adapters.sqlite_index import SqliteQueryIndex
from skypacs.ports import ArchiveEvent
from tests.contract.catalog_contract import CatalogContract
from tests.contract.event_bus_contract import EventBusContract
from tests.contract.object_store_contract import ObjectStoreContract
from tests.contract.query_index_contract import QueryIndexContract


class TestFileSystemObjectStore(ObjectStoreContract):
    @pytest.fixture
    def object_store(self, tmp_path: Path) -> FileSystemObjectStore:
        return FileSystemObjectStore(tmp_path / "objects")


class TestSqliteCatalog(CatalogContract):
    @pytest.fixture
    def catalog(self, tmp_path: Path) -> SqliteCatalog:
        return SqliteCatalog(tmp_path / "catalog.sqlite")


class TestSqliteQueryIndex(QueryIndexContract):
    @pytest.fixture
    def query_index(self, tmp_path: Path) -> SqliteQueryIndex:
        return SqliteQueryIndex(tmp_path / "index.sqlite")


class TestInProcessEventBus(EventBusContract):
    @pytest.fixture
    def event_bus(self) -> InProcessEventBus:
        return InProcessEventBus()

    @pytest.fixture
    def received(self, event_bus: InProcessEventBus) -> Callable[[], list[ArchiveEvent]]:
        events: list[ArchiveEvent] = []
        event_bus.subscribe(events.append)
        return lambda: events
