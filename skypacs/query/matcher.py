"""The reference matcher: the definition of what a query returns, over plain DICOM JSON.

Slow and obviously correct by design: every QueryIndex adapter must return exactly what
:func:`reference_search` returns for the same instances (the differential tests check it).

Matching (PS3.4 C.2.2.2, PS3.18 8.3.4.1):
- ``""`` or ``"*"``: universal matching; ``'""'``: empty value matching (absent or zero-length);
- UI: single value or a list (``\\``-separated); CS: a ``\\``-separated list means any of them;
- DA/TM/DT: single value, or a range ``a-b``, ``-b``, ``a-`` (inclusive; times compare by the
  precision given: ``-10`` includes 10:59:59);
- strings: ``*`` and ``?`` wildcards, else exact and case-sensitive, except person names, which match
  case-insensitively against every component group; ``fuzzymatching`` lets a person-name key match any
  name component by prefix (``smi`` matches ``Smith^John`` and ``Doe^Smilla``);
- numbers: numeric equality; sequences: some item matches all the item keys;
- a multi-valued attribute matches when any of its values matches.

Results are ordered by the level's key (Patient ID, Study/Series/SOP Instance UID), then paged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from skypacs.model import tag_hex
from skypacs.ports import DicomJson
from skypacs.query.attributes import (
    COMPUTED_PATIENT,
    COMPUTED_SERIES,
    COMPUTED_STUDY,
    DEFAULTS,
    INSTANCE_AVAILABILITY,
    LEVEL_KEY,
    LEVEL_TAGS,
)
from skypacs.query.model import AttributeMatch, Level, Query

NUMERIC_VRS = frozenset({"IS", "DS", "US", "SS", "UL", "SL", "FL", "FD", "SV", "UV"})
DATE_TIME_VRS = frozenset({"DA", "TM", "DT"})

STUDY_UID, SERIES_UID, SOP_UID = tag_hex("StudyInstanceUID"), tag_hex("SeriesInstanceUID"), tag_hex("SOPInstanceUID")
PATIENT_ID, MODALITY, SOP_CLASS = tag_hex("PatientID"), tag_hex("Modality"), tag_hex("SOPClassUID")


def first(doc: DicomJson, tag: str) -> Any:
    values = (doc.get(tag) or {}).get("Value")
    return values[0] if values else None


# ---------------------------------------------------------------------------------------------- values


@lru_cache(maxsize=4096)
def _wildcard(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(regex, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def _text_matches(pattern: str, candidate: str, ignore_case: bool) -> bool:
    candidate = candidate.rstrip(" ")
    if "*" in pattern or "?" in pattern:
        return _wildcard(pattern, ignore_case).fullmatch(candidate) is not None
    if ignore_case:
        return pattern.casefold() == candidate.casefold()
    return pattern == candidate


def _normalize_temporal(vr: str, value: str) -> str:
    value = value.strip()
    if vr == "DA":
        return value.replace("-", "").replace(".", "")[:8] if len(value) != 8 else value
    if vr == "TM":
        return value.replace(":", "")
    return value


def _temporal_bound(vr: str, value: str, upper: bool) -> str:
    value = _normalize_temporal(vr, value)
    if not upper:
        return value
    # An upper bound covers everything within the precision given: "-10" includes 10:59:59.999999.
    full = {"DA": 8, "TM": 13, "DT": 21}[vr]
    return value + "\uffff" if len(value) < full else value


def _temporal_matches(vr: str, query: str, candidate: str) -> bool:
    candidate = _normalize_temporal(vr, candidate)
    if not candidate:
        return False
    if "-" in query and not (vr == "DT" and query.count("-") == 1 and query.rfind("-") > 8):
        low, _, high = query.partition("-")
        if low and candidate < _temporal_bound(vr, low, upper=False):
            return False
        if high and candidate > _temporal_bound(vr, high, upper=True):
            return False
        return bool(low or high)
    query = _normalize_temporal(vr, query)
    if vr in ("TM", "DT"):
        return candidate.startswith(query) if len(query) < len(candidate) else candidate == query
    return candidate == query


def _person_name_groups(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [str(value[group]) for group in ("Alphabetic", "Ideographic", "Phonetic") if value.get(group)]
    return [str(value)] if value is not None else []


def _fuzzy_name(query: str, name: str) -> bool:
    prefix = query.rstrip("*").casefold()
    if not prefix or any(c in prefix for c in "*?^ "):
        return False
    return any(part.startswith(prefix) for part in re.split(r"[\^ =]+", name.casefold()) if part)


def value_matches(vr: str, query: str, candidate: Any, fuzzy: bool = False) -> bool:
    """Does one stored value match the query string (already known not to be universal or empty)?"""
    if vr == "PN":
        return any(
            _text_matches(query, name, ignore_case=True) or (fuzzy and _fuzzy_name(query, name))
            for name in _person_name_groups(candidate)
        )
    if vr == "UI":
        return str(candidate) in query.split("\\")
    if vr in DATE_TIME_VRS:
        return _temporal_matches(vr, query, str(candidate))
    if vr in NUMERIC_VRS:
        try:
            return any(float(part) == float(candidate) for part in query.split("\\"))
        except (TypeError, ValueError):
            return False
    if vr == "CS" and "\\" in query:
        return any(_text_matches(part, str(candidate), ignore_case=False) for part in query.split("\\"))
    if isinstance(candidate, dict):  # a sequence item or binary value: never equal to a string
        return False
    return _text_matches(query, str(candidate), ignore_case=False)


def element_matches(match: AttributeMatch, element: dict[str, Any] | None, fuzzy: bool = False) -> bool:
    values = (element or {}).get("Value") or []
    if match.vr == "SQ" or match.items:
        if not match.items:
            return True
        if not values:
            return all(_is_universal(item) for item in match.items)
        return any(
            all(element_matches(key, item.get(key.tag), fuzzy) for key in match.items) for item in values
        )
    if _is_universal(match):
        return True
    if match.value == '""':
        return not values
    return any(value_matches(match.vr, match.value, value, fuzzy) for value in values)


def _is_universal(match: AttributeMatch) -> bool:
    return not match.items and match.value in ("", "*")


def document_matches(query: Query, doc: DicomJson) -> bool:
    return all(element_matches(match, doc.get(match.tag), query.fuzzy) for match in query.matches)


# ------------------------------------------------------------------------------------------- levels


def _number(value: int) -> dict[str, Any]:
    return {"vr": "IS", "Value": [value]}


def _values(vr: str, values: Iterable[str]) -> dict[str, Any]:
    ordered = sorted(set(values))
    return {"vr": vr, "Value": ordered} if ordered else {"vr": vr}


def series_document(last: DicomJson, instances: int) -> DicomJson:
    document = {tag: element for tag, element in last.items() if tag in LEVEL_TAGS[Level.SERIES]}
    document[tag_hex("NumberOfSeriesRelatedInstances")] = _number(instances)
    return document


def study_document(
    last: DicomJson, modalities: Iterable[str], sop_classes: Iterable[str], series: int, instances: int
) -> DicomJson:
    document = {tag: element for tag, element in last.items() if tag in LEVEL_TAGS[Level.STUDY]}
    document[tag_hex("ModalitiesInStudy")] = _values("CS", (m for m in modalities if m))
    document[tag_hex("SOPClassesInStudy")] = _values("UI", (c for c in sop_classes if c))
    document[tag_hex("NumberOfStudyRelatedSeries")] = _number(series)
    document[tag_hex("NumberOfStudyRelatedInstances")] = _number(instances)
    document[INSTANCE_AVAILABILITY] = {"vr": "CS", "Value": ["ONLINE"]}
    return document


def patient_document(last: DicomJson, studies: int, series: int, instances: int) -> DicomJson:
    document = {tag: element for tag, element in last.items() if tag in LEVEL_TAGS[Level.PATIENT]}
    document[tag_hex("NumberOfPatientRelatedStudies")] = _number(studies)
    document[tag_hex("NumberOfPatientRelatedSeries")] = _number(series)
    document[tag_hex("NumberOfPatientRelatedInstances")] = _number(instances)
    return document


def level_documents(level: Level, instances: Iterable[DicomJson]) -> list[DicomJson]:
    """One document per patient/study/series/instance, built from instance metadata: the level's
    attributes (those of the instance indexed last win) plus the computed attributes."""
    if level == Level.IMAGE:
        return [{**doc, INSTANCE_AVAILABILITY: {"vr": "CS", "Value": ["ONLINE"]}} for doc in instances]
    groups: dict[str, list[DicomJson]] = {}
    for doc in instances:
        if level == Level.SERIES:
            group_key = f"{first(doc, STUDY_UID)}/{first(doc, SERIES_UID)}"
        else:
            group_key = str(first(doc, PATIENT_ID if level == Level.PATIENT else STUDY_UID) or "")
        groups.setdefault(group_key, []).append(doc)
    documents = []
    for members in groups.values():
        last = members[-1]
        series = {(first(m, STUDY_UID), first(m, SERIES_UID)) for m in members}
        if level == Level.SERIES:
            documents.append(series_document(last, len(members)))
        elif level == Level.STUDY:
            modalities = {}
            for member in members:  # ModalitiesInStudy: each series' modality as its last instance says
                modalities[first(member, SERIES_UID)] = first(member, MODALITY)
            sop_classes = [first(m, SOP_CLASS) for m in members]
            documents.append(study_document(last, modalities.values(), sop_classes, len(series), len(members)))
        else:
            studies = {first(m, STUDY_UID) for m in members}
            documents.append(patient_document(last, len(studies), len(series), len(members)))
    return documents


def sort_key(level: Level, doc: DicomJson) -> tuple[str, ...]:
    if level == Level.SERIES:
        return (str(first(doc, STUDY_UID) or ""), str(first(doc, SERIES_UID) or ""))
    return (str(first(doc, LEVEL_KEY[level]) or ""),)


def shape(query: Query, doc: DicomJson) -> DicomJson:
    """The attributes a response carries: the level's defaults, the matched keys, the include fields
    (or everything with ``includefield=all``), in tag order."""
    if query.include_all:
        wanted = set(doc)
    else:
        wanted = set(DEFAULTS[query.level]) | set(query.include) | {m.tag for m in query.matches}
        wanted.add(LEVEL_KEY[query.level])
    return {tag: doc[tag] for tag in sorted(wanted) if tag in doc}


@dataclass(frozen=True)
class SearchPage:
    items: list[DicomJson]
    truncated: bool


def page(query: Query, matching: list[DicomJson]) -> SearchPage:
    window = matching[query.offset : query.offset + query.limit]
    return SearchPage([shape(query, doc) for doc in window], len(matching) > query.offset + query.limit)


def reference_search(query: Query, instances: Iterable[DicomJson]) -> SearchPage:
    """What ``query`` returns over ``instances`` (instance metadata in the order they were indexed)."""
    documents = level_documents(query.level, instances)
    matching = sorted((d for d in documents if document_matches(query, d)), key=lambda d: sort_key(query.level, d))
    return page(query, matching)


COMPUTED = COMPUTED_PATIENT | COMPUTED_STUDY | COMPUTED_SERIES
