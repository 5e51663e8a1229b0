"""QueryIndex on OpenSearch, for the AWS archive.

It answers exactly as the reference matcher (:mod:`skypacs.query.matcher`) over the same instances; the
differential tests run the reference's generated queries against a live cluster when one is configured
(``tests/contract/test_opensearch_live.py``). No OpenSearch server runs on the build machines, so
everything that decides an answer is a pure function here, tested in detail without a server
(``tests/unit/adapters/test_opensearch_translation.py``): the mappings, the projection of a document
into searchable fields, and the translation of a :class:`~skypacs.query.model.Query` into query DSL.

Indices (``{prefix}`` is per archive):

- ``{prefix}-instances``, ``{prefix}-series``, ``{prefix}-studies``, ``{prefix}-patients``: one document
  per instance / series / study / patient, the same level documents the SQLite adapter keeps
  (:func:`~skypacs.query.matcher.series_document`, ``study_document``, ``patient_document``: the level
  attributes of the instance indexed last plus the computed attributes). Ids are the level keys
  (SOP Instance UID, ``{StudyInstanceUID}/{SeriesInstanceUID}``, Study Instance UID, Patient ID; see
  :func:`doc_id` for keys an id cannot hold).
- ``{prefix}-sequence``: one counter document. It numbers instance writes (``seq``, "indexed last"
  and the reference's order of equal keys) and hands out the versions of level documents.

A document holds:

- ``dicom``: the DICOM JSON, stored and returned, never indexed (an object with ``enabled: false``);
- one field per attribute, ``t{tag}_{suffix}`` (:func:`project`), typed by dynamic templates on the
  suffix, so any attribute, private ones included, is matchable with no mapping change. The suffix is
  the VR, or the family of VRs that index alike: ``PN`` (lowercased groups, for wildcards, with a
  ``lowercase`` normalizer), ``PNF`` (case-folded groups, for exact matching, with a ``words`` text
  sub-field split into name components for fuzzy matching), ``UI``, ``DA``, ``TM``, ``DT`` (normalised
  text, a ``date`` sub-field on ``DA``), ``NUM`` (``double``, for IS DS US SS UL SL FL FD SV UV), ``SQ``
  (``nested``: one hidden document per item, so "some item matches all item keys" holds) and ``STR``
  (``keyword``, every other VR);
- ``present``: the tags that have a value (empty value matching), also in each sequence item;
- bookkeeping: ``seq``/``order``/``sort_0``/``sort_1`` (ordering), ``k_*`` (grouping keys),
  ``sop_class`` and ``aux`` (inputs of computed attributes).

An attribute is projected under the suffix of its dictionary VR (the VR a query names it with,
:func:`~skypacs.query.model.resolve_attribute`: ``UN`` for private tags) and, when different, under
the suffix of the VR it was stored with, so a C-FIND key carrying the element's explicit VR finds it too.

Writes. ``index_instances`` looks up the previous place of each instance (an instance can move to
another series), numbers the batch from the counter, writes it with ``_bulk`` and ``refresh``, then
rebuilds each affected series, study and patient document from the instances index (last instance by
``seq``, exact counts from ``track_total_hits`` and composite aggregations, ModalitiesInStudy from the
last instance of each series). Level documents are written with external versions taken from the
counter *after* the instances were visible: when two writers refresh the same study at once, the one
that started last saw everything the other did, and the other's older version is refused (409).

Reads. One ``bool`` filter query on the level's index, sorted by the level key(s) then ``order``
(unique, so paging is stable), ``from``/``size`` with ``size = limit + 1`` to tell a truncated answer.
``from + size`` may not pass ``index.max_result_window`` (10,000): deeper pages walk there with
``search_after`` (without a point in time, so a page taken while writes land may shift).

Differences from the reference (each one is an edge the generated data does not reach):

- values longer than :data:`IGNORE_ABOVE` characters are stored but not indexed: no key matches them;
- wildcard person-name matching compares lowercased text where the reference's regex ignores case:
  letters that are case variants without one lowercase form (``ſ``/``s``, ``ς``/``σ``, Kelvin ``K``)
  do not match each other, and ``?`` cannot stand for ``İ`` (two characters when lowercased);
- infinite numbers are not indexed (JSON cannot carry them), so ``inf`` matches nothing;
- a ``null`` inside a multi-valued attribute is not indexed; the reference compares it as ``"None"``;
- a key whose VR is neither the tag's dictionary VR nor the VR it was stored with (a C-FIND key with a
  wrong VR) finds nothing where the reference would still try it;
- OpenSearch's own limits: ``indices.query.bool.max_clause_count`` (CS lists), ``index.max_terms_count``
  (UID lists), the wildcard automaton's determinization limit (very complex patterns fail with a
  BackendError), and the mapping limits in :func:`index_settings`;
- under concurrent writers, "indexed last" is the instance that reserved its ``seq`` last; a level
  document deleted and re-created within ``index.gc_deletes`` (60 s) by a writer stalled longer than
  that may be stale until the group is touched again.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from opensearchpy.exceptions import NotFoundError, OpenSearchException

from skypacs.errors import BackendError, DocumentsRejected, InvalidQuery
from skypacs.ports import DicomJson, InstanceRecord
from skypacs.query.attributes import INSTANCE_AVAILABILITY
from skypacs.query.matcher import (
    DATE_TIME_VRS,
    MODALITY,
    NUMERIC_VRS,
    PATIENT_ID,
    SERIES_UID,
    SOP_CLASS,
    STUDY_UID,
    SearchPage,
    # The reference's own normalisation, so that the index and the matcher cannot drift apart:
    _is_universal,
    _normalize_temporal,
    _person_name_groups,
    _temporal_bound,
    first,
    patient_document,
    series_document,
    shape,
    sort_key,
    study_document,
)
from skypacs.query.model import AttributeMatch, Level, Query, resolve_attribute

OpenSearchClient = Any
"""``opensearchpy.OpenSearch`` (injected; :func:`opensearch_client` builds one)."""

MAX_RESULT_WINDOW = 10_000
"""OpenSearch's default ``index.max_result_window``: ``from + size`` of one search may not pass it."""
IGNORE_ABOVE = 8191
"""Longest keyword value indexed, in characters (8191 x 4 UTF-8 bytes stays under Lucene's 32,766-byte
term limit). Longer values are kept in ``dicom`` and returned, but no key matches them."""
TOTAL_FIELDS_LIMIT = 20_000
"""``index.mapping.total_fields.limit``: one field per attribute kind, private tags of every vendor."""
NESTED_FIELDS_LIMIT = 2_000
"""``index.mapping.nested_fields.limit``: distinct sequence attributes (default 50)."""
NESTED_OBJECTS_LIMIT = 100_000
"""``index.mapping.nested_objects.limit``: sequence items in one document (default 10,000; RT Structure
Sets with many contours pass it)."""
BULK_CHUNK = 500
"""Documents per ``_bulk`` request."""
COMPOSITE_PAGE = 1_000
"""Buckets per composite aggregation page when counting distinct studies/series/SOP classes."""

LEVEL_INDEX = {Level.IMAGE: "instances", Level.SERIES: "series", Level.STUDY: "studies", Level.PATIENT: "patients"}
SEQUENCE_INDEX = "sequence"
SEQUENCE_ID = "sequence"

PN_NORMALIZER = "skypacs_lowercase"
PN_ANALYZER = "skypacs_pn_components"
PN_COMPONENT_SEPARATORS = r"[\^ =]+"
"""Where a person name splits into components for fuzzy matching (as the reference's ``_fuzzy_name``)."""

_ONLINE = {"vr": "CS", "Value": ["ONLINE"]}


# ----------------------------------------------------------------------------------------- fields

PN, PNF, UI, DA, TM, DT, NUM, SQ, STR = "PN", "PNF", "UI", "DA", "TM", "DT", "NUM", "SQ", "STR"


def kind_of(vr: str | None) -> str:
    """The field suffix of a VR: the VR itself where it indexes its own way, else its family."""
    if vr in (PN, UI, SQ) or vr in DATE_TIME_VRS:
        return str(vr)
    if vr in NUMERIC_VRS:
        return NUM
    return STR


def field_name(tag: str, kind: str, path: str = "") -> str:
    """``t00100010_PN``; inside a sequence item the full path, ``t00400275_SQ.t00400009_STR``."""
    return f"{path}t{tag}_{kind}"


@lru_cache(maxsize=8192)
def query_vr(tag: str) -> str | None:
    """The VR a query names ``tag`` with (the dictionary's, ``UN`` for private tags)."""
    try:
        return resolve_attribute(tag)[1]
    except InvalidQuery:
        return None


def _is_tag(name: str) -> bool:
    return len(name) == 8 and all(c in "0123456789ABCDEF" for c in name)


def element_kinds(tag: str, stored_vr: Any) -> list[str]:
    kinds = [kind_of(query_vr(tag))]
    if isinstance(stored_vr, str) and kind_of(stored_vr) not in kinds:
        kinds.append(kind_of(stored_vr))
    return kinds


# ------------------------------------------------------------------------------------- mappings


def index_settings(*, shards: int = 1, replicas: int | None = None) -> dict[str, Any]:
    """Settings of a level index: the limits a DICOM-shaped mapping needs and the PN analysis chain."""
    index: dict[str, Any] = {
        "number_of_shards": shards,
        "max_result_window": MAX_RESULT_WINDOW,
        "mapping": {
            "total_fields": {"limit": TOTAL_FIELDS_LIMIT},
            "nested_fields": {"limit": NESTED_FIELDS_LIMIT},
            "nested_objects": {"limit": NESTED_OBJECTS_LIMIT},
        },
    }
    if replicas is not None:
        index["number_of_replicas"] = replicas
    return {
        "index": index,
        "analysis": {
            "normalizer": {PN_NORMALIZER: {"type": "custom", "filter": ["lowercase"]}},
            "tokenizer": {PN_ANALYZER: {"type": "pattern", "pattern": PN_COMPONENT_SEPARATORS}},
            # No lowercase filter: the values are case-folded in Python (str.casefold), as the reference does.
            "analyzer": {PN_ANALYZER: {"type": "custom", "tokenizer": PN_ANALYZER}},
        },
    }


def _keyword(**extra: Any) -> dict[str, Any]:
    return {"type": "keyword", "ignore_above": IGNORE_ABOVE, **extra}


def dynamic_templates() -> list[dict[str, Any]]:
    """Field types by name: ``present`` and ``item`` in sequence items, then one template per suffix."""
    templates: list[tuple[str, str, dict[str, Any]]] = [
        ("present", "present", {"type": "keyword"}),
        ("item", "item", {"type": "long"}),
        ("sequences", f"t*_{SQ}", {"type": "nested"}),
        ("person_names", f"t*_{PN}", _keyword(normalizer=PN_NORMALIZER)),
        (
            "person_names_folded",
            f"t*_{PNF}",
            _keyword(fields={"words": {"type": "text", "analyzer": PN_ANALYZER, "norms": False, "index_options": "docs"}}),
        ),
        ("uids", f"t*_{UI}", _keyword()),
        ("dates", f"t*_{DA}", _keyword(fields={"date": {"type": "date", "format": "yyyyMMdd", "ignore_malformed": True}})),
        ("times", f"t*_{TM}", _keyword()),
        ("date_times", f"t*_{DT}", _keyword()),
        ("numbers", f"t*_{NUM}", {"type": "double"}),
        ("strings", f"t*_{STR}", _keyword()),
    ]
    return [{name: {"match": pattern, "mapping": mapping}} for name, pattern, mapping in templates]


def index_mappings() -> dict[str, Any]:
    """Mappings of a level index (the same for the four levels)."""
    return {
        "dynamic": True,
        "date_detection": False,
        "numeric_detection": False,
        "dynamic_templates": dynamic_templates(),
        "properties": {
            "dicom": {"type": "object", "enabled": False},
            "aux": {"type": "object", "enabled": False},
            "present": {"type": "keyword"},
            "seq": {"type": "long"},
            "order": {"type": "long"},
            "sort_0": {"type": "keyword"},
            "sort_1": {"type": "keyword"},
            "k_patient": {"type": "keyword"},
            "k_study": {"type": "keyword"},
            "k_series": {"type": "keyword"},
            "sop_class": _keyword(),
        },
    }


def index_body(*, shards: int = 1, replicas: int | None = None) -> dict[str, Any]:
    return {"settings": index_settings(shards=shards, replicas=replicas), "mappings": index_mappings()}


def sequence_index_body() -> dict[str, Any]:
    return {
        "settings": {"index": {"number_of_shards": 1}},
        "mappings": {"dynamic": False, "properties": {"value": {"type": "long", "index": False}}},
    }


# ------------------------------------------------------------------------------------ projection


def _unique(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, dict):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if math.isnan(number) or math.isinf(number):
        return None  # NaN equals nothing; JSON cannot carry an infinity
    return number + 0.0  # -0.0 == 0.0 in Python, but not as a Lucene double point


def _strings(values: Sequence[Any]) -> Iterator[str]:
    for value in values:
        if value is not None and not isinstance(value, dict):
            yield str(value)


def project_values(kind: str, values: Sequence[Any]) -> dict[str, Any]:
    """The searchable form of one element's values under one suffix (empty when none applies).

    Values are normalised here, in Python, exactly as the reference compares them: text loses trailing
    spaces, names are lowercased (wildcards) and case-folded (exact), dates and times are normalised.
    """
    if kind == PN:
        groups = [g.rstrip(" ") for value in values for g in _person_name_groups(value)]
        if not groups:
            return {}
        return {PN: _unique(g.lower() for g in groups), PNF: _unique(g.casefold() for g in groups)}
    if kind == SQ:
        items = [{**project(item), "item": n} for n, item in enumerate(values) if isinstance(item, dict)]
        return {SQ: items} if items else {}
    if kind == UI:
        projected: list[Any] = _unique(_strings(values))
    elif kind in DATE_TIME_VRS:
        projected = _unique(t for v in _strings(values) if (t := _normalize_temporal(kind, v)))
    elif kind == NUM:
        projected = _unique(n for v in values if (n := _number(v)) is not None)
    else:
        projected = _unique(v.rstrip(" ") for v in _strings(values))
    return {kind: projected} if projected else {}


def project(dataset: DicomJson) -> dict[str, Any]:
    """One field per attribute (and suffix) of a dataset, plus ``present``: the searchable projection."""
    fields: dict[str, Any] = {}
    present: list[str] = []
    for tag, element in dataset.items():
        if not _is_tag(tag) or not isinstance(element, dict):
            continue  # never a query key: queries name attributes by 8 upper-case hex digits
        values = element.get("Value") or []
        if not values:
            continue
        present.append(tag)
        for kind in element_kinds(tag, element.get("vr")):
            for suffix, projected in project_values(kind, values).items():
                fields[field_name(tag, suffix)] = projected
    fields["present"] = present
    return fields


def doc_id(key: str) -> str:
    """A document id for a level key. OpenSearch ids are 1-512 bytes: an empty key (instances without
    a Patient ID), one too long, or one starting with ``#`` becomes ``#`` + its SHA-256."""
    if key and not key.startswith("#") and len(key.encode("utf-8")) <= 512:
        return key
    return "#" + hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class GroupKeys:
    """The ids of the series, study and patient an instance belongs to (the reference's grouping)."""

    series: str
    study: str
    patient: str

    @classmethod
    def of(cls, metadata: DicomJson) -> GroupKeys:
        return cls(
            series=doc_id(f"{first(metadata, STUDY_UID)}/{first(metadata, SERIES_UID)}"),
            study=doc_id(str(first(metadata, STUDY_UID) or "")),
            patient=doc_id(str(first(metadata, PATIENT_ID) or "")),
        )

    @classmethod
    def from_source(cls, source: dict[str, Any]) -> GroupKeys:
        return cls(series=source["k_series"], study=source["k_study"], patient=source["k_patient"])


def _sort_fields(level: Level, document: DicomJson) -> dict[str, str]:
    return {f"sort_{n}": value for n, value in enumerate(sort_key(level, document))}


def instance_source(metadata: DicomJson, seq: int) -> dict[str, Any]:
    """The instances-index document: the metadata as stored, searchable as the IMAGE level sees it
    (with InstanceAvailability ONLINE, which the reference adds to every instance)."""
    keys = GroupKeys.of(metadata)
    source = project({**metadata, INSTANCE_AVAILABILITY: _ONLINE})
    source.update(_sort_fields(Level.IMAGE, metadata))
    source.update(
        dicom=metadata, seq=seq, order=seq, k_series=keys.series, k_study=keys.study, k_patient=keys.patient,
        aux={"modality": first(metadata, MODALITY)},
    )
    sop_class = first(metadata, SOP_CLASS)
    if sop_class:
        source["sop_class"] = str(sop_class)
    return source


def level_source(level: Level, document: DicomJson, order: int) -> dict[str, Any]:
    """A series/study/patient document; ``order`` is the first ``seq`` of its members, which is where
    the reference places the group among equal keys."""
    source = project(document)
    source.update(_sort_fields(level, document))
    source.update(dicom=document, order=order)
    return source


# ----------------------------------------------------------------------------------- translation


def escape_wildcard(pattern: str) -> str:
    """DICOM has no escape: ``*`` and ``?`` are always wildcards; only Lucene's escape character needs one."""
    return pattern.replace("\\", "\\\\")


def _has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def _text_clause(field: str, pattern: str) -> dict[str, Any]:
    if _has_wildcard(pattern):
        return {"wildcard": {field: {"value": escape_wildcard(pattern)}}}
    return {"term": {field: pattern}}


def _any_of(clauses: list[dict[str, Any]]) -> dict[str, Any]:
    if not clauses:
        return {"match_none": {}}
    if len(clauses) == 1:
        return clauses[0]
    return {"bool": {"should": clauses, "minimum_should_match": 1}}


def _values_clause(field: str, values: list[Any]) -> dict[str, Any]:
    values = _unique(values)
    if not values:
        return {"match_none": {}}
    if len(values) == 1:
        return {"term": {field: values[0]}}
    return {"terms": {field: values}}


def person_name_clause(tag: str, value: str, fuzzy: bool, path: str = "") -> dict[str, Any]:
    """Case-insensitive over every name group: exact against the case-folded groups, wildcards against
    the lowercased ones; with fuzzy matching, also any name component by prefix."""
    clause: dict[str, Any]
    if _has_wildcard(value):
        clause = {"wildcard": {field_name(tag, PN, path): {"value": escape_wildcard(value.lower())}}}
    else:
        clause = {"term": {field_name(tag, PNF, path): value.casefold()}}
    if fuzzy:
        prefix = value.rstrip("*").casefold()
        if prefix and not any(c in prefix for c in "*?^ "):
            return _any_of([clause, {"prefix": {field_name(tag, PNF, path) + ".words": {"value": prefix}}}])
    return clause


def temporal_clause(field: str, vr: str, value: str) -> dict[str, Any]:
    """DA/TM/DT as the reference compares them: normalised strings, so a ``keyword`` range.

    A range's upper bound covers the precision given (``-10`` includes 10:59:59): the bound is the
    reference's own, the value followed by U+FFFF when it is shorter than the full form. A single
    time or date-time matches by prefix (``10`` matches 10:xx); a single date exactly.
    """
    if "-" in value and not (vr == DT and value.count("-") == 1 and value.rfind("-") > 8):
        low, _, high = value.partition("-")
        if not (low or high):
            return {"match_none": {}}
        bounds: dict[str, str] = {}
        if low:
            bounds["gte"] = _temporal_bound(vr, low, upper=False)
        if high:
            bounds["lte"] = _temporal_bound(vr, high, upper=True)
        return {"range": {field: bounds}}
    normalized = _normalize_temporal(vr, value)
    if vr == DA:
        return {"term": {field: normalized}}
    if not normalized:
        return {"exists": {"field": field}}  # every non-empty value starts with ""
    return {"prefix": {field: {"value": normalized}}}


def number_clause(field: str, value: str) -> dict[str, Any]:
    """Numeric equality with any of ``\\``-separated values. The reference stops at the first part
    that is not a number (``any`` over a generator that raises), so only the parts before it count."""
    numbers: list[float] = []
    for part in value.split("\\"):
        try:
            number = float(part)
        except (ValueError, OverflowError):
            break
        if not (math.isnan(number) or math.isinf(number)):
            numbers.append(number + 0.0)
    return _values_clause(field, numbers)


def value_clause(tag: str, vr: str, value: str, fuzzy: bool, path: str = "") -> dict[str, Any]:
    """A non-universal, non-empty single-attribute match, by the match's VR (as ``value_matches``)."""
    kind = kind_of(vr)
    field = field_name(tag, kind, path)
    if kind == PN:
        return person_name_clause(tag, value, fuzzy, path)
    if kind == UI:
        return _values_clause(field, value.split("\\"))
    if kind in DATE_TIME_VRS:
        return temporal_clause(field, kind, value)
    if kind == NUM:
        return number_clause(field, value)
    if vr == "CS" and "\\" in value:
        parts = value.split("\\")
        plain = [p for p in parts if not _has_wildcard(p)]
        clauses = [_values_clause(field, plain)] if plain else []
        clauses += [_text_clause(field, p) for p in _unique(parts) if _has_wildcard(p)]
        return _any_of(clauses)
    return _text_clause(field, value)


def match_clause(match: AttributeMatch, fuzzy: bool = False, path: str = "") -> dict[str, Any] | None:
    """One matching key as a filter clause, or ``None`` when it matches everything (universal).

    ``path`` is the nested path of the enclosing sequence item (``"t00400275_SQ."``)."""
    if match.vr == SQ or match.items:
        # A sequence key: some item matches all the item keys (PS3.4 C.2.2.2.6). With only universal
        # item keys it always matches, even with no item; a sequence key of its own is universal.
        if not match.items or all(_is_universal(item) for item in match.items):
            return None
        nested_path = field_name(match.tag, SQ, path)
        inner = [c for item in match.items if (c := match_clause(item, fuzzy, nested_path + ".")) is not None]
        return {
            "nested": {
                "path": nested_path,
                "query": {"bool": {"filter": inner}},
                "score_mode": "none",
                "ignore_unmapped": True,
            }
        }
    if _is_universal(match):
        return None
    if match.value == '""':
        return {"bool": {"must_not": [{"term": {f"{path}present": match.tag}}]}}
    return value_clause(match.tag, match.vr, match.value, fuzzy, path)


def query_dsl(query: Query) -> dict[str, Any]:
    clauses = [c for match in query.matches if (c := match_clause(match, query.fuzzy)) is not None]
    return {"bool": {"filter": clauses}} if clauses else {"match_all": {}}


def sort_dsl(level: Level) -> list[dict[str, str]]:
    """The reference's order: the level key(s), then ``order`` (first ``seq``), unique for ``search_after``."""
    keys = ["sort_0", "sort_1"] if level == Level.SERIES else ["sort_0"]
    return [{key: "asc"} for key in keys] + [{"order": "asc"}]


def search_body(
    query: Query,
    *,
    size: int,
    from_: int = 0,
    search_after: list[Any] | None = None,
    source: bool = True,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "query": query_dsl(query),
        "sort": sort_dsl(query.level),
        "size": size,
        "track_total_hits": False,
        "_source": ["dicom"] if source else False,
    }
    if search_after is not None:
        body["search_after"] = search_after
    elif from_:
        body["from"] = from_
    return body


@dataclass(frozen=True)
class Page:
    """One search request of a paging plan: skip (``_source`` off) or collect hits."""

    size: int
    from_: int = 0
    collect: bool = True


def paging_plan(offset: int, limit: int, window: int = MAX_RESULT_WINDOW) -> tuple[str, list[Page]]:
    """How to fetch hits ``[offset, offset + limit + 1)`` (one more than asked, to tell truncation).

    Within the result window: one ``from``/``size`` request. Beyond it: ``search_after`` pages of at
    most ``window`` hits, first skipping ``offset`` hits (sources off), then collecting.
    """
    wanted = limit + 1
    if offset + wanted <= window:
        return "from_size", [Page(size=wanted, from_=offset)]
    pages: list[Page] = []
    for remaining, collect in ((offset, False), (wanted, True)):
        while remaining > 0:
            pages.append(Page(size=min(remaining, window), collect=collect))
            remaining -= pages[-1].size
    return "search_after", pages


def page_from_hits(query: Query, hits: list[dict[str, Any]]) -> SearchPage:
    """``hits`` are at most ``limit + 1`` sources from ``offset`` on: shaped as the reference does."""
    items = []
    for hit in hits[: query.limit]:
        document = hit["_source"]["dicom"]
        if query.level == Level.IMAGE:
            document = {**document, INSTANCE_AVAILABILITY: _ONLINE}
        items.append(shape(query, document))
    return SearchPage(items, len(hits) > query.limit)


# ------------------------------------------------------------------------ level refresh (pure)


def _group_body(key_field: str, key: str, aggs: dict[str, Any]) -> dict[str, Any]:
    return {
        "query": {"term": {key_field: key}},
        "size": 1,
        "sort": [{"seq": "desc"}],
        "_source": ["dicom"],
        "track_total_hits": True,
        "aggs": {"first_seq": {"min": {"field": "seq"}}, **aggs},
    }


def composite(field: str, *, after: dict[str, Any] | None = None, **sub_aggs: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"size": COMPOSITE_PAGE, "sources": [{"key": {"terms": {"field": field}}}]}
    if after is not None:
        body["after"] = after
    aggregation: dict[str, Any] = {"composite": body}
    if sub_aggs:
        aggregation["aggs"] = sub_aggs
    return aggregation


def next_composite_page(body: dict[str, Any], name: str, after: dict[str, Any]) -> dict[str, Any]:
    """The request for the next page of composite aggregation ``name`` of a group search."""
    aggregation = dict(body["aggs"][name])
    aggregation["composite"] = {**aggregation["composite"], "after": after}
    return {"query": body["query"], "size": 0, "track_total_hits": False, "aggs": {name: aggregation}}


LAST_MODALITY = {"top_hits": {"size": 1, "sort": [{"seq": "desc"}], "_source": ["aux.modality"]}}


def series_group_body(key: str) -> dict[str, Any]:
    return _group_body("k_series", key, {})


def study_group_body(key: str) -> dict[str, Any]:
    return _group_body(
        "k_study",
        key,
        {"series": composite("k_series", last=LAST_MODALITY), "sop_classes": composite("sop_class")},
    )


def patient_group_body(key: str) -> dict[str, Any]:
    return _group_body("k_patient", key, {"studies": composite("k_study"), "series": composite("k_series")})


def last_of_group(response: dict[str, Any]) -> tuple[int, DicomJson, int] | None:
    """(instances in the group, the last one's metadata, first seq), or None for an empty group."""
    hits = response["hits"]
    total = hits["total"]["value"] if isinstance(hits["total"], dict) else hits["total"]
    if not total or not hits["hits"]:
        return None
    return int(total), hits["hits"][0]["_source"]["dicom"], int(response["aggregations"]["first_seq"]["value"])


def last_modality(bucket: dict[str, Any]) -> Any:
    hits = bucket["last"]["hits"]["hits"]
    return ((hits[0].get("_source") or {}).get("aux") or {}).get("modality") if hits else None


# ------------------------------------------------------------------------------------- adapter


@contextmanager
def _backend(what: str) -> Iterator[None]:
    """Translate the client's errors into :class:`BackendError` (the queue or the caller retries)."""
    try:
        yield
    except OpenSearchException as exc:
        status = getattr(exc, "status_code", None)
        error = getattr(exc, "error", None)
        # Never ``str(exc)``: OpenSearch's reasons may quote a value, which can be patient data.
        raise BackendError(f"OpenSearch {what} failed ({status} {error})") from exc


def bulk_chunks(operations: list[list[dict[str, Any]]], size: int = BULK_CHUNK) -> Iterator[list[dict[str, Any]]]:
    """``_bulk`` bodies of at most ``size`` operations; an action line is never parted from its source."""
    for start in range(0, len(operations), size):
        yield [line for operation in operations[start : start + size] for line in operation]


def rejected_documents(response: dict[str, Any]) -> dict[str, str]:
    """Document id -> error type of the items of a ``_bulk`` response refused for what they hold (4xx
    other than 429): retrying them cannot help. Other failures (429, 5xx) are transient."""
    rejected: dict[str, str] = {}
    if not response.get("errors"):
        return rejected
    for item in response["items"]:
        ((_, result),) = item.items()
        status = int(result.get("status", 500))
        if 400 <= status < 500 and status != 429:
            rejected[str(result.get("_id"))] = str((result.get("error") or {}).get("type"))
    return rejected


def bulk_failures(response: dict[str, Any], *, versioned: bool = False) -> list[tuple[str, str, int, str]]:
    """(operation, index, status, error type) of each failed item of a ``_bulk`` response. For level
    documents (``versioned``) a refused older version (409) is expected: a newer refresh already wrote;
    so is deleting a level document that is not there (404)."""
    failures: list[tuple[str, str, int, str]] = []
    if not response.get("errors"):
        return failures
    for item in response["items"]:
        ((operation, result),) = item.items()
        status = int(result.get("status", 500))
        if status < 300 or (versioned and status == 409) or (operation == "delete" and status == 404):
            continue
        failures.append((operation, str(result.get("_index")), status, str((result.get("error") or {}).get("type"))))
    return failures


class OpenSearchQueryIndex:
    """The OpenSearch QueryIndex. ``client`` is an ``opensearchpy.OpenSearch`` (SigV4 on AWS: see
    :func:`opensearch_client`); ``prefix`` names the indices; ``create_indices`` creates missing ones."""

    def __init__(
        self,
        client: OpenSearchClient,
        *,
        prefix: str = "skypacs",
        create_indices: bool = True,
        shards: int = 1,
        replicas: int | None = None,
        max_result_window: int = MAX_RESULT_WINDOW,
        refresh: bool | str = True,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.indices = {level: f"{prefix}-{name}" for level, name in LEVEL_INDEX.items()}
        self.sequence_index = f"{prefix}-{SEQUENCE_INDEX}"
        self.shards, self.replicas = shards, replicas
        self.window = max_result_window
        """Deepest ``from + size``; must not exceed the indices' ``index.max_result_window``."""
        self.refresh = refresh
        """``True`` (refresh now) or ``"wait_for"``: a write is searchable when the call returns, which
        the level refresh relies on; ``wait_for`` trades latency (up to the refresh interval) for fewer
        small segments under heavy ingest."""
        if create_indices:
            self.ensure_indices()

    # ---------------------------------------------------------------------------- administration

    def ensure_indices(self) -> None:
        # The instances index holds ~30-100 documents per study: it alone needs more primary shards as the
        # archive grows (~50 GB each); the series, study and patient indices stay small.
        bodies = {
            name: index_body(shards=self.shards if level == Level.IMAGE else 1, replicas=self.replicas)
            for level, name in self.indices.items()
        }
        bodies[self.sequence_index] = sequence_index_body()
        for name, body in bodies.items():
            with _backend("create index"):
                if self.client.indices.exists(index=name):
                    continue
                try:
                    self.client.indices.create(index=name, body=body)
                except OpenSearchException as exc:
                    if getattr(exc, "error", None) != "resource_already_exists_exception":
                        raise  # another process may have created it meanwhile: that one is fine

    def drop_indices(self) -> None:
        """Delete every index of this prefix (tests; re-indexing from the catalog)."""
        with _backend("delete index"):
            for name in [*self.indices.values(), self.sequence_index]:
                self.client.indices.delete(index=name, ignore_unavailable=True)

    # -------------------------------------------------------------------------------- write side

    def index_instance(self, record: InstanceRecord) -> None:
        self.index_instances([record])

    def index_instances(self, records: Sequence[InstanceRecord]) -> None:
        """Index a batch with ``_bulk``, then rebuild each affected series, study and patient once:
        the bulk path (the indexer's SQS batches, imports, re-index)."""
        if not records:
            return
        ids = [doc_id(r.SOPInstanceUID) for r in records]
        affected: dict[GroupKeys, None] = dict.fromkeys(self._previous_groups(ids))
        first_seq = self._next_sequence(len(records)) - len(records) + 1
        operations = []
        for n, (record, id_) in enumerate(zip(records, ids, strict=True)):
            source = instance_source(record.metadata, first_seq + n)
            affected[GroupKeys.from_source(source)] = None
            operations.append([{"index": {"_index": self.indices[Level.IMAGE], "_id": id_}}, source])
        rejected = self._bulk(operations, "index instances", tolerate_rejected=True)
        self._refresh_levels(list(affected))
        if rejected:
            by_id = {id_: record.SOPInstanceUID for id_, record in zip(ids, records, strict=True)}
            reasons = {by_id.get(id_, id_): kind for id_, kind in rejected.items()}
            raise DocumentsRejected(
                f"OpenSearch refused {len(reasons)} of {len(records)} instance document(s): "
                f"{', '.join(sorted(set(reasons.values())))}",
                reasons,
            )

    def remove_instance(self, sop_instance_uid: str) -> None:
        id_ = doc_id(sop_instance_uid)
        previous = self._previous_groups([id_])
        if not previous:
            return  # removing an absent instance is not an error (idempotent retries)
        with _backend("remove instance"):
            try:
                self.client.delete(index=self.indices[Level.IMAGE], id=id_, refresh=self.refresh)
            except NotFoundError:
                pass
        self._refresh_levels(previous)

    def get_document(self, sop_instance_uid: str) -> DicomJson | None:
        with _backend("get document"):
            try:
                response = self.client.get(
                    index=self.indices[Level.IMAGE], id=doc_id(sop_instance_uid), _source_includes="dicom"
                )
            except NotFoundError:
                return None
        if not response.get("found"):
            return None
        document: DicomJson = response["_source"]["dicom"]
        return document

    def _previous_groups(self, ids: list[str]) -> list[GroupKeys]:
        """Where the instances are now (an instance indexed again may move to another series)."""
        with _backend("look up instances"):
            response = self.client.mget(
                index=self.indices[Level.IMAGE], body={"ids": _unique(ids)}, _source_includes="k_series,k_study,k_patient"
            )
        return [GroupKeys.from_source(doc["_source"]) for doc in response["docs"] if doc.get("found")]

    def _next_sequence(self, count: int) -> int:
        """Reserve ``count`` numbers and return the last: an atomic scripted update of one counter."""
        with _backend("sequence"):
            response = self.client.update(
                index=self.sequence_index,
                id=SEQUENCE_ID,
                body={
                    "script": {"source": "ctx._source.value += params.n", "lang": "painless", "params": {"n": count}},
                    "upsert": {"value": count},
                },
                retry_on_conflict=20,
                _source="true",
            )
        return int(response["get"]["_source"]["value"])

    def _refresh_levels(self, groups: list[GroupKeys]) -> None:
        """Rebuild the level documents of ``groups`` from the instances index (now searchable), all
        searches in one ``_msearch``, each document versioned by a number reserved after the instance
        writes (see the module docstring)."""
        version = self._next_sequence(1)
        requests: list[tuple[Level, str, dict[str, Any]]] = []
        requests += [(Level.SERIES, key, series_group_body(key)) for key in _unique(g.series for g in groups)]
        requests += [(Level.STUDY, key, study_group_body(key)) for key in _unique(g.study for g in groups)]
        requests += [(Level.PATIENT, key, patient_group_body(key)) for key in _unique(g.patient for g in groups)]
        responses = self._msearch([body for _, _, body in requests])
        operations = []
        for (level, key, body), response in zip(requests, responses, strict=True):
            meta = {"_index": self.indices[level], "_id": key, "version": version, "version_type": "external"}
            built = self._level_document(level, body, response)
            if built is None:
                operations.append([{"delete": meta}])
            else:
                operations.append([{"index": meta}, level_source(level, *built)])
        self._bulk(operations, "refresh levels", versioned=True)

    def _level_document(
        self, level: Level, body: dict[str, Any], response: dict[str, Any]
    ) -> tuple[DicomJson, int] | None:
        """The level document and its ``order`` from a group search, or None when the group is empty."""
        found = last_of_group(response)
        if found is None:
            return None
        total, last, order = found
        if level == Level.SERIES:
            return series_document(last, total), order
        if level == Level.STUDY:
            series = self._buckets(body, response, "series")
            sop_classes = [bucket["key"]["key"] for bucket in self._buckets(body, response, "sop_classes")]
            modalities = [last_modality(bucket) for bucket in series]
            return study_document(last, modalities, sop_classes, len(series), total), order
        studies = len(self._buckets(body, response, "studies"))
        series_count = len(self._buckets(body, response, "series"))
        return patient_document(last, studies, series_count, total), order

    def _buckets(self, body: dict[str, Any], response: dict[str, Any], name: str) -> list[dict[str, Any]]:
        """Every bucket of a composite aggregation, following ``after_key`` past the first page."""
        page = response["aggregations"][name]
        buckets = list(page["buckets"])
        while len(page["buckets"]) >= COMPOSITE_PAGE and page.get("after_key"):
            follow = next_composite_page(body, name, page["after_key"])
            page = self._search(self.indices[Level.IMAGE], follow)["aggregations"][name]
            buckets += page["buckets"]
        return buckets

    def _search(self, index: str, body: dict[str, Any]) -> dict[str, Any]:
        with _backend("search"):
            response: dict[str, Any] = self.client.search(index=index, body=body)
        return response

    def _msearch(self, bodies: list[dict[str, Any]], chunk: int = 100) -> list[dict[str, Any]]:
        index = self.indices[Level.IMAGE]
        responses: list[dict[str, Any]] = []
        for start in range(0, len(bodies), chunk):
            lines = [line for body in bodies[start : start + chunk] for line in ({"index": index}, body)]
            with _backend("search"):
                answer = self.client.msearch(body=lines)
            for response in answer["responses"]:
                if "error" in response:
                    error = response["error"]
                    kind = error.get("type") if isinstance(error, dict) else None
                    raise BackendError(f"OpenSearch search failed ({response.get('status')} {kind})")
                responses.append(response)
        return responses

    def _bulk(
        self,
        operations: list[list[dict[str, Any]]],
        what: str,
        *,
        versioned: bool = False,
        tolerate_rejected: bool = False,
    ) -> dict[str, str]:
        """Send ``operations``; raise for failed items, except (``tolerate_rejected``) documents refused
        for their content, which are returned (id -> error type) so that the rest of a batch stands."""
        rejected: dict[str, str] = {}
        for body in bulk_chunks(operations):
            with _backend(what):
                response = self.client.bulk(body=body, refresh=self.refresh)
            failures = bulk_failures(response, versioned=versioned)
            if tolerate_rejected:
                rejected |= rejected_documents(response)
                failures = [f for f in failures if not (400 <= f[2] < 500 and f[2] != 429)]
            if failures:
                operation, index, status, kind = failures[0]
                raise BackendError(
                    f"OpenSearch refused {len(failures)} operation(s) of {what}, e.g. {operation} in {index}: "
                    f"{status} {kind}"
                )
        return rejected

    # -------------------------------------------------------------------------------- query side

    def search(self, query: Query) -> SearchPage:
        index = self.indices[query.level]
        how, pages = paging_plan(query.offset, query.limit, self.window)
        if how == "from_size":
            (page,) = pages
            body = search_body(query, size=page.size, from_=page.from_)
            return page_from_hits(query, self._search(index, body)["hits"]["hits"])
        collected: list[dict[str, Any]] = []
        after: list[Any] | None = None
        for page in pages:
            body = search_body(query, size=page.size, search_after=after, source=page.collect)
            hits = self._search(index, body)["hits"]["hits"]
            if page.collect:
                collected += hits
            if len(hits) < page.size:
                break  # no more matches: fewer than offset (nothing to show) or the last page
            after = hits[-1]["sort"]
        return page_from_hits(query, collected)


# -------------------------------------------------------------------------------------- client


def opensearch_client(
    endpoint: str,
    *,
    region: str | None = None,
    service: str = "es",
    session: Any = None,
    timeout: float = 30,
    verify_certs: bool = True,
    pool_maxsize: int = 10,
) -> OpenSearchClient:
    """A client for ``endpoint`` (``https://host[:port]``, or a bare domain endpoint host).

    With ``region``, requests are signed with SigV4 using the boto3 credentials of ``session`` (or the
    default chain: the Lambda role on AWS); ``service`` is ``es`` for an OpenSearch Service domain.
    Without it, the URL may carry basic-auth credentials (a self-managed or test cluster).
    """
    from opensearchpy import OpenSearch, RequestsAWSV4SignerAuth, RequestsHttpConnection

    url = endpoint if "://" in endpoint else f"https://{endpoint}"
    options: dict[str, Any] = {
        "hosts": [url],
        "timeout": timeout,
        "max_retries": 3,
        "retry_on_timeout": True,
        "verify_certs": verify_certs,
        "ssl_show_warn": verify_certs,
        "connection_class": RequestsHttpConnection,
        "pool_maxsize": pool_maxsize,
    }
    if region:
        import boto3

        credentials = (session or boto3.Session()).get_credentials()
        options["http_auth"] = RequestsAWSV4SignerAuth(credentials, region, service)
    return OpenSearch(**options)


__all__ = [
    "MAX_RESULT_WINDOW",
    "OpenSearchQueryIndex",
    "doc_id",
    "dynamic_templates",
    "index_body",
    "index_mappings",
    "index_settings",
    "instance_source",
    "kind_of",
    "level_source",
    "match_clause",
    "opensearch_client",
    "paging_plan",
    "project",
    "query_dsl",
    "search_body",
    "sort_dsl",
]
