import pytest

from skypacs.errors import InvalidQuery
from skypacs.query.model import DEFAULT_MAX_LIMIT, Level, query_from_qido


def test_keywords_tags_and_sequence_paths() -> None:
    query = query_from_qido(Level.STUDY, [
        ("PatientName", "Smith*"), ("00100020", "P1"),
        ("RequestAttributesSequence.ScheduledProcedureStepID", "S1"), ("00400275.00401001", "R1"),
    ])
    tags = {m.tag: m for m in query.matches}
    assert tags["00100010"].vr == "PN" and tags["00100010"].value == "Smith*"
    assert tags["00100020"].value == "P1"
    (sequence,) = [m for m in query.matches if m.vr == "SQ"]
    assert {item.tag for item in sequence.items} == {"00400009", "00401001"}  # one item, both keys


def test_includefield_fuzzy_limit_offset() -> None:
    query = query_from_qido(Level.SERIES, [
        ("includefield", "StudyDescription,00100030"), ("includefield", "all"),
        ("fuzzymatching", "true"), ("limit", "5000"), ("offset", "10"),
    ])
    assert query.include == {"00081030", "00100030"} and query.include_all and query.fuzzy
    assert query.limit == DEFAULT_MAX_LIMIT and query.offset == 10


def test_uid_lists_by_comma_and_scope() -> None:
    query = query_from_qido(Level.SERIES, [("SeriesInstanceUID", "1.2,1.3")], study_instance_uid="9.9")
    tags = {m.tag: m.value for m in query.matches}
    assert tags["0020000E"] == "1.2\\1.3" and tags["0020000D"] == "9.9"


@pytest.mark.parametrize("params,message", [
    ([("NoSuchKeyword", "x")], "unknown attribute"),
    ([("limit", "-1")], "must not be negative"),
    ([("limit", "ten")], "whole number"),
    ([("fuzzymatching", "maybe")], "true or false"),
    ([("PatientName.PatientID", "x")], "not a sequence"),
    ([("PatientID", "a"), ("00100020", "b")], "given twice"),
])
def test_bad_parameters_are_clear_errors(params: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(InvalidQuery, match=message):
        query_from_qido(Level.STUDY, params)
