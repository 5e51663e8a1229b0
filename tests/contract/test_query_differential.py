"""Differential tests: every QueryIndex adapter answers exactly as the reference matcher does.

The data: 2,000+ generated instances (tests/query_data.py); the queries: hundreds of QIDO parameter
sets over every level, exercising each kind of matching. Adding an adapter means adding a fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from skypacs.adapters.sqlite_index import SqliteQueryIndex
from skypacs.ports import QueryIndex
from skypacs.query.matcher import reference_search
from skypacs.query.model import Level, query_from_qido
from tests.query_data import check_reindexing_and_removal, generate, queries

RECORDS = generate(2000)


@pytest.fixture(scope="module")
def sqlite_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqliteQueryIndex]:
    """Built through the bulk path (batches); the test below covers one-by-one indexing and removal."""
    index = SqliteQueryIndex(Path(tmp_path_factory.mktemp("index")) / "index.sqlite")
    for start in range(0, len(RECORDS), 250):
        index.index_instances(RECORDS[start : start + 250])
    yield index


QUERIES = list(queries(RECORDS, count=400))


def _reference(level: str, params: list[tuple[str, str]]):  # type: ignore[no-untyped-def]
    query = query_from_qido(Level(level), params)
    return query, reference_search(query, [r.metadata for r in RECORDS])


@pytest.mark.parametrize("level,params", QUERIES, ids=[f"{i}-{q[0]}" for i, q in enumerate(QUERIES)])
def test_sqlite_index_answers_as_the_reference(sqlite_index: QueryIndex, level: str, params: list[tuple[str, str]]) -> None:
    query, expected = _reference(level, params)
    got = sqlite_index.search(query)
    assert got.truncated == expected.truncated
    assert got.items == expected.items


def test_the_generated_queries_are_not_trivial() -> None:
    """Most queries find something, some find nothing: the comparison is meaningful."""
    sizes = [len(_reference(level, params)[1].items) for level, params in QUERIES]
    assert sum(1 for size in sizes if size > 0) > len(sizes) * 0.6
    assert any(size == 0 for size in sizes)


def test_reindexing_and_removal_keep_levels_exact(tmp_path: Path) -> None:
    check_reindexing_and_removal(SqliteQueryIndex(tmp_path / "index.sqlite"), RECORDS[:300])
