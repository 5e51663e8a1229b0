"""The OpenSearch QueryIndex against a real OpenSearch: the QueryIndex contract and the differential test.

No OpenSearch server runs on the build machines (DESIGN.md): these tests run only when an endpoint is
given, e.g. ``SKYPACS_TEST_OPENSEARCH_URL=http://localhost:9200`` (or ``https://admin:PASSWORD@host:9200``
for a cluster with the security plugin; certificates are not verified), and are skipped otherwise. Each
run works in indices of its own prefix and deletes them afterwards.

The differential test is the one of ``test_query_differential.py``: the same generated archive and the
same queries, every answer compared with the reference matcher's, once with ``from``/``size`` paging and
once with a tiny result window so that every offset goes through ``search_after``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from skypacs.adapters.opensearch_index import OpenSearchQueryIndex, opensearch_client
from skypacs.query.matcher import SearchPage, reference_search
from skypacs.query.model import Level, Query, query_from_qido
from tests.contract.query_index_contract import QueryIndexContract
from tests.query_data import check_reindexing_and_removal, generate, queries

ENV_TEST_OPENSEARCH_URL = "SKYPACS_TEST_OPENSEARCH_URL"
"""The OpenSearch endpoint the live tests use; without it they are skipped."""

pytestmark = pytest.mark.skipif(
    not os.environ.get(ENV_TEST_OPENSEARCH_URL),
    reason="no OpenSearch endpoint configured (set SKYPACS_TEST_OPENSEARCH_URL)",
)

RECORDS = generate(2000)
QUERIES = list(queries(RECORDS, count=400))
SMALL_WINDOW = 7
"""A result window this small sends every query with an offset or a limit above 6 through search_after."""


def _index(prefix: str, **options: object) -> OpenSearchQueryIndex:
    client = opensearch_client(os.environ[ENV_TEST_OPENSEARCH_URL], verify_certs=False)
    return OpenSearchQueryIndex(client, prefix=prefix, replicas=0, **options)  # type: ignore[arg-type]


def _prefix() -> str:
    return f"skypacs-test-{uuid.uuid4().hex[:12]}"


class TestOpenSearchQueryIndex(QueryIndexContract):
    @pytest.fixture
    def query_index(self) -> Iterator[OpenSearchQueryIndex]:
        index = _index(_prefix())
        yield index
        index.drop_indices()


@pytest.fixture(scope="module")
def opensearch_index() -> Iterator[OpenSearchQueryIndex]:
    """Built through the bulk path (batches of 250), as the SQLite differential fixture."""
    index = _index(_prefix())
    for start in range(0, len(RECORDS), 250):
        index.index_instances(RECORDS[start : start + 250])
    yield index
    index.drop_indices()


@pytest.fixture(scope="module")
def deep_paging_index(opensearch_index: OpenSearchQueryIndex) -> OpenSearchQueryIndex:
    """The same indices, read through a tiny result window."""
    return OpenSearchQueryIndex(
        opensearch_index.client, prefix=opensearch_index.prefix, create_indices=False, max_result_window=SMALL_WINDOW
    )


def _reference(level: str, params: list[tuple[str, str]]) -> tuple[Query, SearchPage]:
    query = query_from_qido(Level(level), params)
    return query, reference_search(query, [r.metadata for r in RECORDS])


@pytest.mark.parametrize("level,params", QUERIES, ids=[f"{i}-{q[0]}" for i, q in enumerate(QUERIES)])
def test_opensearch_index_answers_as_the_reference(
    opensearch_index: OpenSearchQueryIndex, level: str, params: list[tuple[str, str]]
) -> None:
    query, expected = _reference(level, params)
    got = opensearch_index.search(query)
    assert got.truncated == expected.truncated
    assert got.items == expected.items


@pytest.mark.parametrize("level,params", QUERIES, ids=[f"{i}-{q[0]}" for i, q in enumerate(QUERIES)])
def test_search_after_pages_answer_as_the_reference(
    deep_paging_index: OpenSearchQueryIndex, level: str, params: list[tuple[str, str]]
) -> None:
    query, expected = _reference(level, params)
    got = deep_paging_index.search(query)
    assert got.truncated == expected.truncated
    assert got.items == expected.items


def test_reindexing_and_removal_keep_levels_exact() -> None:
    index = _index(_prefix())
    try:
        check_reindexing_and_removal(index, RECORDS[:300])
    finally:
        index.drop_indices()
