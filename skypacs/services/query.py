"""The query service: what QIDO-RS routes and the C-FIND SCP call.

It only hands a :class:`~skypacs.query.model.Query` to the QueryIndex: the semantics live in
``skypacs.query`` (model, return attributes, reference matcher), and each adapter answers exactly as
the reference does.
"""

from __future__ import annotations

from skypacs.ports import QueryIndex
from skypacs.query.matcher import SearchPage
from skypacs.query.model import Query

QueryResult = SearchPage
"""``items`` (DICOM JSON, one per match, in level-key order) and ``truncated`` (more beyond the limit)."""


class QueryService:
    def __init__(self, index: QueryIndex) -> None:
        self.index = index

    def search(self, query: Query) -> QueryResult:
        return self.index.search(query)
