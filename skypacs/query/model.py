"""The query model shared by QIDO-RS and C-FIND.

A :class:`Query` names a level, the attribute matches (each a raw DICOM matching string, interpreted by
VR in :mod:`skypacs.query.matcher`), the attributes to return, and paging. Attributes are addressed by
tag (``"00100010"``); sequence matching nests item matches under the sequence's tag.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from skypacs.errors import InvalidQuery

DEFAULT_MAX_LIMIT = 1000
"""Most results one query returns; more are signalled as truncated (QIDO Warning header)."""


class Level(str, Enum):
    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


class InformationModel(str, Enum):
    PATIENT_ROOT = "PATIENT_ROOT"
    STUDY_ROOT = "STUDY_ROOT"


@dataclass(frozen=True)
class AttributeMatch:
    """One matching key. ``value`` is the raw query string ("" = universal matching, ``'""'`` = empty
    value matching); ``items`` holds the keys of a sequence match (PS3.4 C.2.2.2.6)."""

    tag: str
    vr: str
    value: str = ""
    items: tuple[AttributeMatch, ...] = ()

    @property
    def keyword(self) -> str:
        return keyword_for_tag(int(self.tag, 16)) or self.tag


@dataclass(frozen=True)
class Query:
    level: Level
    matches: tuple[AttributeMatch, ...] = ()
    include_all: bool = False
    include: frozenset[str] = frozenset()
    """Extra tags to return (``includefield``); matched attributes are always returned."""
    fuzzy: bool = False
    limit: int = DEFAULT_MAX_LIMIT
    offset: int = 0
    model: InformationModel = InformationModel.STUDY_ROOT

    def match_for(self, tag: str) -> AttributeMatch | None:
        for match in self.matches:
            if match.tag == tag:
                return match
        return None


def resolve_attribute(name: str) -> tuple[str, str]:
    """``"PatientName"`` or ``"00100010"`` -> (tag hex, VR). Private tags are accepted by number (VR UN
    unless the dictionary knows them better, matching their value as text)."""
    name = name.strip()
    if len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name):
        tag = int(name, 16)
    else:
        found = tag_for_keyword(name)
        if found is None:
            raise InvalidQuery(f"unknown attribute {name!r}: use a DICOM keyword or an 8-digit hex tag")
        tag = found
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        vr = "UN"
    if vr in ("OB or OW", "US or SS", "US or OW", "US or SS or OW"):
        vr = vr.split(" ")[0]
    return f"{tag:08X}", vr


def attribute_match(path: str, value: str) -> AttributeMatch:
    """A match from a QIDO attribute path: ``Tag``, or ``Seq.Tag`` (dots) for sequence matching."""
    parts = [part for part in path.split(".") if part]
    if not parts:
        raise InvalidQuery("empty attribute name")
    tag, vr = resolve_attribute(parts[-1])
    match = AttributeMatch(tag, vr, value)
    for parent in reversed(parts[:-1]):
        parent_tag, parent_vr = resolve_attribute(parent)
        if parent_vr != "SQ":
            raise InvalidQuery(f"{parent} is not a sequence; it cannot hold {parts[-1]}")
        match = AttributeMatch(parent_tag, "SQ", "", (match,))
    return match


def _merge(matches: list[AttributeMatch], new: AttributeMatch) -> None:
    """Add ``new``; sequence keys for the same sequence join one item (all must match one item)."""
    for index, existing in enumerate(matches):
        if existing.tag == new.tag:
            if existing.vr == "SQ" and new.vr == "SQ":
                items = list(existing.items)
                for item in new.items:
                    _merge(items, item)
                matches[index] = AttributeMatch(existing.tag, "SQ", "", tuple(items))
                return
            raise InvalidQuery(f"attribute {existing.keyword} is given twice")
    matches.append(new)


def _non_negative_int(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise InvalidQuery(f"{name} must be a whole number, got {value!r}") from None
    if number < 0:
        raise InvalidQuery(f"{name} must not be negative, got {number}")
    return number


def query_from_qido(
    level: Level,
    params: Sequence[tuple[str, str]],
    *,
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    max_limit: int = DEFAULT_MAX_LIMIT,
) -> Query:
    """Build a query from QIDO-RS parameters (already percent-decoded), PS3.18 8.3.4.

    ``includefield`` may repeat and hold comma-separated names or ``all``; ``limit`` is capped at
    ``max_limit``; a UID list may be separated by commas or backslashes.
    """
    matches: list[AttributeMatch] = []
    include: set[str] = set()
    include_all, fuzzy, limit, offset = False, False, max_limit, 0
    for name, value in params:
        key = name.strip()
        if key == "includefield":
            for field_name in value.split(","):
                if field_name.strip() == "all":
                    include_all = True
                elif field_name.strip():
                    include.add(attribute_match(field_name, "").tag.split(".")[0])
        elif key == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise InvalidQuery(f"fuzzymatching must be true or false, got {value!r}")
            fuzzy = value.lower() == "true"
        elif key == "limit":
            limit = min(_non_negative_int("limit", value), max_limit)
        elif key == "offset":
            offset = _non_negative_int("offset", value)
        else:
            match = attribute_match(key, value)
            if match.vr == "UI" and "," in value:
                match = AttributeMatch(match.tag, match.vr, value.replace(",", "\\"), match.items)
            _merge(matches, match)
    for uid, keyword in ((study_instance_uid, "StudyInstanceUID"), (series_instance_uid, "SeriesInstanceUID")):
        if uid is not None:
            tag, _ = resolve_attribute(keyword)
            matches = [m for m in matches if m.tag != tag]
            matches.append(AttributeMatch(tag, "UI", uid))
    return Query(
        level=level,
        matches=tuple(matches),
        include_all=include_all,
        include=frozenset(include),
        fuzzy=fuzzy,
        limit=limit,
        offset=offset,
    )


__all__ = [
    "DEFAULT_MAX_LIMIT",
    "AttributeMatch",
    "InformationModel",
    "Level",
    "Query",
    "attribute_match",
    "query_from_qido",
    "resolve_attribute",
]
