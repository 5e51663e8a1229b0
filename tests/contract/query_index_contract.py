"""The QueryIndex contract (write side): every adapter passes this suite via the ``query_index`` fixture."""

from __future__ import annotations

from dataclasses import replace

from skypacs.ports import QueryIndex
from tests.contract.catalog_contract import record


class QueryIndexContract:
    def test_indexed_document_is_the_instance_metadata(self, query_index: QueryIndex) -> None:
        rec = record("1.2.3.1")
        query_index.index_instance(rec)
        assert query_index.get_document("1.2.3.1") == rec.metadata

    def test_reindex_replaces_the_document(self, query_index: QueryIndex) -> None:
        rec = record("1.2.3.1")
        query_index.index_instance(rec)
        changed = replace(rec, metadata={**rec.metadata, "00081030": {"vr": "LO", "Value": ["HEAD"]}})
        query_index.index_instance(changed)
        assert query_index.get_document("1.2.3.1") == changed.metadata

    def test_remove(self, query_index: QueryIndex) -> None:
        query_index.index_instance(record("1.2.3.1"))
        query_index.remove_instance("1.2.3.1")
        assert query_index.get_document("1.2.3.1") is None
        query_index.remove_instance("1.2.3.1")
