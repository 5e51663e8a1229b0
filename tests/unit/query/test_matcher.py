"""The reference matcher, rule by rule (PS3.4 C.2.2.2, PS3.18 8.3.4.1)."""

from __future__ import annotations

from typing import Any

import pytest

from skypacs.query.matcher import element_matches, reference_search
from skypacs.query.model import AttributeMatch, Level, query_from_qido


def el(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def pn(alphabetic: str, ideographic: str | None = None) -> dict[str, Any]:
    value = {"Alphabetic": alphabetic}
    if ideographic:
        value["Ideographic"] = ideographic
    return el("PN", value)


@pytest.mark.parametrize(
    "vr,query,element,expected",
    [
        ("LO", "", None, True),  # universal matching: absent attributes match too
        ("LO", "*", el("LO", "x"), True),
        ("LO", '""', None, True),  # empty value matching
        ("LO", '""', el("LO"), True),
        ("LO", '""', el("LO", "x"), False),
        ("UI", "1.2.3", el("UI", "1.2.3"), True),
        ("UI", "1.2.3", el("UI", "1.2.30"), False),
        ("UI", "1.2\\1.2.3", el("UI", "1.2.3"), True),  # UID list
        ("CS", "CT\\MR", el("CS", "MR"), True),
        ("CS", "ct", el("CS", "CT"), False),  # case-sensitive outside person names
        ("LO", "CHEST", el("LO", "CHEST "), True),  # trailing padding ignored
        ("LO", "*chest*", el("LO", "CHEST"), False),
        ("LO", "CH?ST", el("LO", "CHEST"), True),
        ("LO", "Knee [left]", el("LO", "Knee [left]"), True),  # regex/GLOB characters are literals
        ("LO", "thorax*", el("LO", "thorax*extra"), True),
        ("PN", "smith^john", pn("Smith^John"), True),  # person names: case-insensitive
        ("PN", "SM*", pn("Smith^John"), True),
        ("PN", "山田*", pn("Yamada^Taro", "山田^太郎"), True),  # any component group
        ("PN", "Müller*", pn("MÜLLER^Jörg"), True),
        ("DA", "20200101-20201231", el("DA", "20200615"), True),
        ("DA", "20200101-20201231", el("DA", "20210101"), False),
        ("DA", "-20200101", el("DA", "20200101"), True),  # inclusive, open-ended
        ("DA", "20200101-", el("DA", "20191231"), False),
        ("DA", "20200101", el("DA", "20200101"), True),
        ("TM", "-10", el("TM", "105959"), True),  # the bound covers its precision
        ("TM", "-10", el("TM", "110000"), False),
        ("TM", "0900-1000", el("TM", "09:30:00"), True),  # old ACR-NEMA colons normalised
        ("IS", "2", el("IS", 2), True),
        ("DS", "1.25", el("DS", 1.25), True),
        ("CS", "DERIVED", el("CS", "ORIGINAL", "DERIVED"), True),  # any value of a multi-valued attribute
    ],
)
def test_value_matching(vr: str, query: str, element: dict[str, Any] | None, expected: bool) -> None:
    assert element_matches(AttributeMatch("00000000", vr, query), element) is expected


def test_fuzzy_matching_is_by_name_component_prefix() -> None:
    match = AttributeMatch("00100010", "PN", "smi")
    assert element_matches(match, pn("Doe^Smilla"), fuzzy=True)
    assert element_matches(match, pn("Smith^John"), fuzzy=True)
    assert not element_matches(match, pn("Doe^Smilla"), fuzzy=False)
    assert not element_matches(match, pn("Blacksmith^John"), fuzzy=True)


def test_sequence_matching_needs_one_item_matching_every_key() -> None:
    sequence = el("SQ", {"00400009": el("SH", "SPS1"), "00401001": el("SH", "RP1")},
                  {"00400009": el("SH", "SPS2"), "00401001": el("SH", "RP2")})
    both = AttributeMatch("00400275", "SQ", "", (AttributeMatch("00400009", "SH", "SPS1"),
                                                   AttributeMatch("00401001", "SH", "RP1")))
    crossed = AttributeMatch("00400275", "SQ", "", (AttributeMatch("00400009", "SH", "SPS1"),
                                                      AttributeMatch("00401001", "SH", "RP2")))
    assert element_matches(both, sequence)
    assert not element_matches(crossed, sequence)


def instance(study: str, series: str, sop: str, modality: str, name: str = "Doe^Jane") -> dict[str, Any]:
    return {
        "00080016": el("UI", "1.2.840.10008.5.1.4.1.1.2" if modality == "CT" else "1.2.840.10008.5.1.4.1.1.4"),
        "00080018": el("UI", sop),
        "00080060": el("CS", modality),
        "00100010": pn(name),
        "00100020": el("LO", "P1"),
        "0020000D": el("UI", study),
        "0020000E": el("UI", series),
        "00081030": el("LO", "HEAD"),
        "00280010": el("US", 512),
    }


DOCS = [
    instance("1.1", "1.1.1", "1.1.1.1", "CT"),
    instance("1.1", "1.1.1", "1.1.1.2", "CT"),
    instance("1.1", "1.1.2", "1.1.2.1", "MR"),
    instance("1.2", "1.2.1", "1.2.1.1", "MR"),
]


def test_study_level_computed_attributes_and_defaults() -> None:
    page = reference_search(query_from_qido(Level.STUDY, [("ModalitiesInStudy", "CT")]), DOCS)
    (study,) = page.items
    assert study["00080061"] == el("CS", "CT", "MR")  # ModalitiesInStudy
    assert study["00201206"] == el("IS", 2) and study["00201208"] == el("IS", 3)
    assert study["00080056"] == el("CS", "ONLINE")  # InstanceAvailability
    assert "00280010" not in study  # Rows is not a study attribute
    assert "00081030" in study  # StudyDescription is a default here


def test_series_and_patient_levels() -> None:
    series = reference_search(query_from_qido(Level.SERIES, [("StudyInstanceUID", "1.1")]), DOCS).items
    assert [s["0020000E"]["Value"][0] for s in series] == ["1.1.1", "1.1.2"]
    assert series[0]["00201209"] == el("IS", 2)  # NumberOfSeriesRelatedInstances
    (patient,) = reference_search(query_from_qido(Level.PATIENT, []), DOCS).items
    assert patient["00201200"] == el("IS", 2) and patient["00201202"] == el("IS", 3)
    assert patient["00201204"] == el("IS", 4)


def test_includefield_limit_offset_and_truncation() -> None:
    query = query_from_qido(Level.IMAGE, [("limit", "2"), ("offset", "1"), ("includefield", "00081030")])
    page = reference_search(query, DOCS)
    assert [i["00080018"]["Value"][0] for i in page.items] == ["1.1.1.2", "1.1.2.1"]
    assert page.truncated
    assert "00081030" in page.items[0]
    everything = reference_search(query_from_qido(Level.IMAGE, [("includefield", "all")]), DOCS)
    assert not everything.truncated and "00280010" in everything.items[0]
