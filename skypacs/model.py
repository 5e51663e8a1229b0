"""DICOM JSON (PS3.18 Annex F), the one internal metadata form.

A pydicom ``Dataset`` appears only in parsing; everything after it travels as DICOM JSON dicts. Bulk
data never enters the catalog or the index: binary values larger than :data:`BULK_DATA_THRESHOLD`, and
values that were not read at all (deferred by the header reader), become ``BulkDataURI`` references
relative to the instance (``bulkdata/{tag path}``), which the retrieve service resolves.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag

from skypacs.ports import DicomJson

BULK_DATA_THRESHOLD = 1024
"""Binary values (OB, OW, OF, OD, OL, OV, UN) larger than this many bytes are kept out of metadata."""

BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})


def tag_hex(keyword_or_tag: str | int) -> str:
    """``"StudyInstanceUID"`` or ``0x0020000D`` -> ``"0020000D"`` (the DICOM JSON key)."""
    if isinstance(keyword_or_tag, str):
        if len(keyword_or_tag) == 8 and all(c in "0123456789abcdefABCDEF" for c in keyword_or_tag):
            return keyword_or_tag.upper()
        tag = tag_for_keyword(keyword_or_tag)
        if tag is None:
            raise KeyError(f"unknown DICOM keyword {keyword_or_tag!r}")
        return f"{tag:08X}"
    return f"{keyword_or_tag:08X}"


def first_value(metadata: DicomJson, keyword_or_tag: str | int) -> Any:
    """The first value of an attribute, or ``None`` when absent or empty.

    Person names come back as their ``Alphabetic`` string, which is what matching and display need.
    """
    element = metadata.get(tag_hex(keyword_or_tag))
    if not element:
        return None
    values = element.get("Value")
    if not values:
        return None
    value = values[0]
    if isinstance(value, dict) and element.get("vr") == "PN":
        return value.get("Alphabetic")
    return value


def subset(metadata: DicomJson, tags: frozenset[str]) -> DicomJson:
    """The attributes of ``metadata`` whose tags are in ``tags`` (for level records)."""
    return {tag: element for tag, element in metadata.items() if tag in tags}


def _bulk_uri(path: str) -> str:
    return f"bulkdata/{path}"


def dataset_to_dicom_json(dataset: Dataset, _path: str = "") -> DicomJson:
    """Convert a parsed header to DICOM JSON, leaving bulk data as BulkDataURI references.

    Elements the reader deferred (value not read because it is large) are never loaded: they become
    references too, so converting never triggers a read of bulk bytes from the object store.
    """
    result: DicomJson = {}
    for raw in raw_elements(dataset):
        tag: BaseTag = Tag(raw.tag)
        key = f"{tag:08X}"
        path = f"{_path}{key}"
        deferred = getattr(raw, "value", b"") is None and getattr(raw, "length", 0) not in (0,)
        if deferred:
            vr = raw.VR or "UN"
            result[key] = {"vr": vr, "BulkDataURI": _bulk_uri(path)}
            continue
        element = dataset[tag]
        result[key] = _element_to_json(element, path)
    return result


def raw_elements(dataset: Dataset) -> Iterator[DataElement | RawDataElement]:
    """Elements as read, without loading deferred values (``Dataset.elements()`` would load them)."""
    for tag in dataset.keys():  # noqa: SIM118 - iterating a Dataset yields elements, not tags
        yield dataset.get_item(tag, keep_deferred=True)


def _element_to_json(element: DataElement, path: str) -> dict[str, Any]:
    vr = element.VR
    if vr == "SQ":
        items = []
        for index, item in enumerate(element.value or []):
            items.append(dataset_to_dicom_json(item, f"{path}/{index + 1}/"))
        return {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
    if vr in BINARY_VRS:
        value = element.value
        if value is None or len(value) == 0:
            return {"vr": vr}
        if len(value) > BULK_DATA_THRESHOLD or element.tag in _ALWAYS_BULK:
            return {"vr": vr, "BulkDataURI": _bulk_uri(path)}
    # pydicom implements Annex F for every VR, including PN groups, AT, IS/DS numbers and InlineBinary.
    return element.to_json_dict(bulk_data_element_handler=None, bulk_data_threshold=BULK_DATA_THRESHOLD)


_ALWAYS_BULK = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
