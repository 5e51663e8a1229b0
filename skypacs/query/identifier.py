"""A C-FIND request Identifier as a :class:`~skypacs.query.model.Query` (PS3.4 C.4.1.1.3.1, C.6).

Every element of the Identifier is a key: its value, as the raw DICOM matching string, is a matching
key ("" = universal matching, which makes it a return key only), and every key is returned. Text is
decoded with the Identifier's Specific Character Set (Latin-1, UTF-8, ISO 2022...), so the query holds
Unicode whatever character set the SCU used.

The search is hierarchical (PS3.4 C.4.1.3.1.1; relational queries, C.4.1.3.2, are an extended
negotiation the gateway does not offer): the Identifier must carry a single value for the Unique Key
of every level above the Query/Retrieve Level (PS3.4 C.4.1.2.1); the Unique Key of the query level itself is
optional and may hold single value, universal or list of UID matching (PS3.4 C.2.2.1.1). Keys of
other levels are accepted as they are (a key the level's records do not hold matches nothing unless
it is universal).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.valuerep import VR

from skypacs.errors import InvalidQuery
from skypacs.model import tag_hex
from skypacs.query.model import AttributeMatch, InformationModel, Level, Query

FIND_LIMIT = 1_000_000
"""C-FIND has no paging (PS3.4 C.4.1): one query answers with every match, up to this many."""

LEVELS: dict[InformationModel, tuple[Level, ...]] = {
    InformationModel.PATIENT_ROOT: (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE),  # PS3.4 C.6.1
    InformationModel.STUDY_ROOT: (Level.STUDY, Level.SERIES, Level.IMAGE),  # PS3.4 C.6.2
}

UNIQUE_KEYS: dict[Level, str] = {
    Level.PATIENT: "PatientID",
    Level.STUDY: "StudyInstanceUID",
    Level.SERIES: "SeriesInstanceUID",
    Level.IMAGE: "SOPInstanceUID",
}

NOT_MATCHED = frozenset(
    tag_hex(keyword)
    for keyword in (
        "SpecificCharacterSet",  # how the Identifier is encoded, not a key (PS3.4 C.4.1.1.3.1)
        "QueryRetrieveLevel",
        "QueryRetrieveView",
        "RetrieveAETitle",  # a return key the SCP fills in (PS3.4 C.4.1.1.3.2)
        "TimezoneOffsetFromUTC",  # how to read the Identifier's dates and times (PS3.4 C.4.1.1.3.1)
    )
)
"""Identifier attributes that qualify the request or the response: returned, never matched."""

QUERY_RETRIEVE_LEVEL = 0x00080052

AMBIGUOUS_VRS = {"US or SS or OW": "US", "US or SS": "US", "US or OW": "US", "OB or OW": "OB"}
KNOWN_VRS = frozenset(vr.value for vr in VR) - frozenset(AMBIGUOUS_VRS)
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
CHARSET_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})
"""Text VRs whose values use the Specific Character Set (PS3.5 6.1.2.3); the others are ASCII."""
SINGLE_VALUED_TEXT_VRS = frozenset({"LT", "ST", "UT", "UR"})
"""Text VRs where a backslash is a character, not a value separator (PS3.5 6.2)."""
BACKSLASH = 0x5C
TEXT_DELIMITERS = {0x0D, 0x0A, 0x09, 0x0C, BACKSLASH}
PN_DELIMITERS = TEXT_DELIMITERS | {0x5E, 0x3D}
"""Where ISO 2022 code extensions return to the initial character set (PS3.5 6.1.2.5.3)."""


def query_from_identifier(identifier: Dataset, model: InformationModel) -> Query:
    """The query a C-FIND Identifier asks for, in ``model``; :class:`InvalidQuery` if it is not one."""
    level = _level(identifier, model)
    encodings = _encodings(identifier)
    matches: list[AttributeMatch] = []
    include: set[str] = set()
    for tag, item in _elements(identifier):
        key = f"{int(tag):08X}"
        include.add(key)
        if key not in NOT_MATCHED:
            matches.append(_match(identifier, tag, item, encodings))
    query = Query(
        level=level,
        matches=tuple(matches),
        include=frozenset(include),
        limit=FIND_LIMIT,
        model=model,
    )
    _check_unique_keys(query, model)
    return query


def _level(identifier: Dataset, model: InformationModel) -> Level:
    item = identifier.get_item(QUERY_RETRIEVE_LEVEL) if QUERY_RETRIEVE_LEVEL in identifier else None
    if item is None:
        name = ""
    elif isinstance(item, RawDataElement):
        name = _decode(item.value or b"", "CS", [])
    else:
        name = "\\".join(item.value) if isinstance(item.value, MultiValue) else str(item.value or "")
    if not name or "\\" in name:
        raise InvalidQuery("the Identifier needs one QueryRetrieveLevel (0008,0052)")
    levels = LEVELS[model]
    if name not in {level.value for level in levels}:
        allowed = ", ".join(level.value for level in levels)
        raise InvalidQuery(f"QueryRetrieveLevel {name[:16]!r} is not one of {allowed} ({model.value})")
    return Level(name)


def _encodings(identifier: Dataset) -> list[str]:
    values = identifier.get("SpecificCharacterSet") or []
    names = [str(v) for v in values] if isinstance(values, MultiValue | list) else [str(values)]
    return convert_encodings([name for name in names if name] or ["ISO_IR 6"])


def _elements(dataset: Dataset) -> Iterable[tuple[BaseTag, DataElement | RawDataElement]]:
    for tag in list(dataset.keys()):
        if tag.element != 0:  # group lengths are an encoding artefact, not keys
            yield tag, dataset.get_item(tag)


def _match(
    dataset: Dataset, tag: BaseTag, item: DataElement | RawDataElement, encodings: list[str]
) -> AttributeMatch:
    key = f"{int(tag):08X}"
    vr = _vr(tag, item)
    if item.VR and vr not in KNOWN_VRS:
        raise InvalidQuery(f"key {_name(tag)} has an unknown VR {str(item.VR)[:8]!r}")
    if isinstance(item, RawDataElement) and vr in TEXT_VRS:
        # Decoded here rather than by pydicom: the matching string exactly as sent, and no pydicom
        # validation warning (which logs the value: a patient's name) for a key that is no valid value
        # (a date range, a UID with a wildcard).
        return AttributeMatch(key, vr, _decode(item.value or b"", vr, encodings))
    try:
        element = dataset[tag]  # pydicom converts numbers, tags, sequences, private VRs
    except Exception as exc:  # a value pydicom cannot decode, e.g. a malformed number
        raise InvalidQuery(f"cannot read the value of key {_name(tag)}") from exc
    vr = AMBIGUOUS_VRS.get(str(element.VR), str(element.VR))
    if vr not in KNOWN_VRS:
        raise InvalidQuery(f"key {_name(tag)} has an unknown VR {str(element.VR)[:8]!r}")
    if vr == "SQ":
        # Sequence matching (PS3.4 C.2.2.2.6): the keys of the first item; no item = a return key.
        first = element.value[0] if element.value else None
        keys = () if first is None else tuple(_match(first, t, i, encodings) for t, i in _elements(first))
        return AttributeMatch(key, vr, "", keys)
    return AttributeMatch(key, vr, _text(element, vr, encodings))


def _name(tag: BaseTag) -> str:
    return f"({tag.group:04X},{tag.element:04X})"


def _vr(tag: BaseTag, item: DataElement | RawDataElement) -> str:
    if item.VR:
        return AMBIGUOUS_VRS.get(str(item.VR), str(item.VR))
    try:  # implicit VR: the dictionary's, for public tags; pydicom works out private ones
        return AMBIGUOUS_VRS.get(dictionary_VR(tag), dictionary_VR(tag)) if not tag.is_private else ""
    except KeyError:
        return ""


def _decode(value: bytes, vr: str, encodings: list[str]) -> str:
    """Raw text bytes as the matching string: decoded in the Identifier's character set, padding off."""
    if vr == "PN":
        text = decode_bytes(value, encodings, PN_DELIMITERS)
    elif vr in CHARSET_VRS:
        text = decode_bytes(value, encodings, TEXT_DELIMITERS)
    else:
        text = value.decode("ascii", errors="replace")  # the default repertoire only (PS3.5 6.1.2.2)
    if vr in SINGLE_VALUED_TEXT_VRS:
        return text.rstrip("\x00 ")
    return "\\".join(part.strip("\x00 ") for part in text.split("\\"))


def _text(element: DataElement, vr: str, encodings: list[str]) -> str:
    """The raw matching string of a converted element: values as DICOM writes them, several joined
    by backslashes."""
    value: Any = element.value
    if value is None or value == "" or value == b"":
        return ""
    if vr == "UN" and isinstance(value, bytes):
        # A key pydicom cannot type (a private tag under implicit VR): its bytes, read as text.
        return decode_bytes(value, encodings, TEXT_DELIMITERS).rstrip("\x00 ")
    if vr in BINARY_VRS:
        raise InvalidQuery(f"key {_name(element.tag)}: binary values cannot be matched")
    values = list(value) if isinstance(value, MultiValue | list) else [value]
    return "\\".join(_one(v, vr) for v in values)


def _one(value: Any, vr: str) -> str:
    if vr == "AT" or isinstance(value, BaseTag):
        return f"{int(value):08X}"
    return str(value)


def _check_unique_keys(query: Query, model: InformationModel) -> None:
    """Hierarchical search: a single value for each Unique Key above the query level (PS3.4 C.4.1.2.1)."""
    levels = LEVELS[model]
    for above in levels[: levels.index(query.level)]:
        keyword = UNIQUE_KEYS[above]
        match = query.match_for(tag_hex(keyword))
        # The keyword comes first: an Error Comment keeps only 64 characters.
        why = f"at {query.level.value} level ({above.value} unique key; hierarchical search, {model.value})"
        if match is None or match.value in ("", "*", '""'):
            raise InvalidQuery(f"{keyword} is required {why}")
        if "\\" in match.value:
            raise InvalidQuery(f"{keyword} must be one value, not a list, {why}")
        if "*" in match.value or "?" in match.value:
            raise InvalidQuery(f"{keyword} must be one value, not a wildcard, {why}")
    own = query.match_for(tag_hex(UNIQUE_KEYS[query.level]))
    if own is not None and own.vr != "UI" and "\\" in own.value:
        # List matching is for UIDs only (PS3.4 C.2.2.2.2); a Patient ID list is not a query.
        raise InvalidQuery(f"{UNIQUE_KEYS[query.level]} takes a single value, not a list")


__all__ = ["FIND_LIMIT", "LEVELS", "UNIQUE_KEYS", "query_from_identifier"]
