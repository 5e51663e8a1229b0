"""A recording query service: the HTTP edge is tested apart from the query semantics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from skypacs.query.model import Query
from skypacs.services.query import QueryResult


@dataclass
class FakeQueryService:
    items: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False
    queries: list[Query] = field(default_factory=list)

    def search(self, query: Query) -> QueryResult:
        self.queries.append(query)
        return QueryResult([dict(item) for item in self.items], self.truncated)


@pytest.fixture
def service() -> FakeQueryService:
    return FakeQueryService()
