"""query_from_identifier: C-FIND Identifiers (as they arrive off the wire) to queries."""

from __future__ import annotations

import io
import warnings
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom.dsutils import decode, encode

from skypacs.errors import InvalidQuery
from skypacs.query.identifier import FIND_LIMIT, query_from_identifier
from skypacs.query.matcher import reference_search
from skypacs.query.model import AttributeMatch, InformationModel, Level

PATIENT_ROOT, STUDY_ROOT = InformationModel.PATIENT_ROOT, InformationModel.STUDY_ROOT
STUDY, SERIES = "1.2.826.0.1.3680043.10.1.1", "1.2.826.0.1.3680043.10.1.1.1"


def build(level: str | None = "STUDY", charset: str | list[str] | None = None, **keys: Any) -> Dataset:
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    with warnings.catch_warnings():  # matching keys are not always valid values (ranges, wildcards)
        warnings.simplefilter("ignore", UserWarning)
        if level is not None:
            ds.QueryRetrieveLevel = level
        for keyword, value in keys.items():
            setattr(ds, keyword, value)
    return ds


def wire(ds: Dataset, *, implicit: bool = True) -> Dataset:
    """The Identifier as the SCP gets it: encoded by the SCU, decoded (lazily) by pynetdicom."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        data = encode(ds, implicit, True)
    assert data is not None
    return decode(io.BytesIO(data), implicit, True)


def values(ds: Dataset, model: InformationModel = STUDY_ROOT, **kwargs: Any) -> dict[str, str]:
    query = query_from_identifier(wire(ds, **kwargs), model)
    return {match.keyword: match.value for match in query.matches}


# ------------------------------------------------------------------------------ level and model


@pytest.mark.parametrize(
    ("model", "level"),
    [(PATIENT_ROOT, "PATIENT"), (PATIENT_ROOT, "STUDY"), (PATIENT_ROOT, "SERIES"), (PATIENT_ROOT, "IMAGE"),
     (STUDY_ROOT, "STUDY"), (STUDY_ROOT, "SERIES"), (STUDY_ROOT, "IMAGE")],
)
def test_every_level_of_both_models(model: InformationModel, level: str) -> None:
    keys = {"PatientID": "P1", "StudyInstanceUID": STUDY, "SeriesInstanceUID": SERIES, "SOPInstanceUID": ""}
    query = query_from_identifier(wire(build(level, **keys)), model)
    assert query.level == Level(level) and query.model == model
    assert query.limit == FIND_LIMIT and query.offset == 0 and not query.include_all


@pytest.mark.parametrize(
    ("model", "level"),
    [(STUDY_ROOT, None), (STUDY_ROOT, ""), (STUDY_ROOT, "PATIENT"), (PATIENT_ROOT, "INSTANCE"),
     (STUDY_ROOT, "study"), (STUDY_ROOT, ["STUDY", "SERIES"])],
)
def test_missing_or_unknown_level_is_invalid(model: InformationModel, level: Any) -> None:
    with pytest.raises(InvalidQuery, match="QueryRetrieveLevel"):
        query_from_identifier(wire(build(level, PatientName="")), model)


# -------------------------------------------------------------------------- hierarchical search


@pytest.mark.parametrize(
    ("model", "level", "keys", "missing"),
    [
        (PATIENT_ROOT, "STUDY", {"StudyInstanceUID": ""}, "PatientID"),
        (PATIENT_ROOT, "SERIES", {"PatientID": "P1", "SeriesInstanceUID": ""}, "StudyInstanceUID"),
        (PATIENT_ROOT, "IMAGE", {"PatientID": "P1", "StudyInstanceUID": STUDY}, "SeriesInstanceUID"),
        (PATIENT_ROOT, "IMAGE", {"StudyInstanceUID": STUDY, "SeriesInstanceUID": SERIES}, "PatientID"),
        (STUDY_ROOT, "SERIES", {"PatientID": "P1"}, "StudyInstanceUID"),
        (STUDY_ROOT, "IMAGE", {"StudyInstanceUID": STUDY, "SOPInstanceUID": ""}, "SeriesInstanceUID"),
        (STUDY_ROOT, "IMAGE", {"StudyInstanceUID": "", "SeriesInstanceUID": SERIES}, "StudyInstanceUID"),
        (STUDY_ROOT, "IMAGE", {"StudyInstanceUID": "*", "SeriesInstanceUID": SERIES}, "StudyInstanceUID"),
        (STUDY_ROOT, "SERIES", {"StudyInstanceUID": '""'}, "StudyInstanceUID"),
    ],
)
def test_unique_keys_above_the_level_are_required(
    model: InformationModel, level: str, keys: dict[str, str], missing: str
) -> None:
    with pytest.raises(InvalidQuery, match=f"^{missing} is required at {level} level") as raised:
        query_from_identifier(wire(build(level, **keys)), model)
    assert len(str(raised.value)) > 0


@pytest.mark.parametrize(
    ("model", "level", "keys", "message"),
    [
        (STUDY_ROOT, "SERIES", {"StudyInstanceUID": [STUDY, "1.2.3"]},
         "StudyInstanceUID must be one value, not a list"),
        (PATIENT_ROOT, "STUDY", {"PatientID": "P*"}, "PatientID must be one value, not a wildcard"),
        (PATIENT_ROOT, "STUDY", {"PatientID": "P?"}, "PatientID must be one value, not a wildcard"),
        (STUDY_ROOT, "IMAGE", {"StudyInstanceUID": STUDY, "SeriesInstanceUID": "1.2.*"}, "not a wildcard"),
        (PATIENT_ROOT, "PATIENT", {"PatientID": ["P1", "P2"]}, "PatientID takes a single value, not a list"),
    ],
)
def test_unique_keys_need_single_values(
    model: InformationModel, level: str, keys: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidQuery, match=message):
        query_from_identifier(wire(build(level, **keys)), model)


def test_the_query_levels_own_unique_key_is_optional_and_may_be_universal_or_a_uid_list() -> None:
    without = query_from_identifier(wire(build("STUDY", PatientName="")), STUDY_ROOT)
    assert without.match_for("0020000D") is None
    assert values(build("STUDY", StudyInstanceUID=""))["StudyInstanceUID"] == ""
    assert values(build("STUDY", StudyInstanceUID=[STUDY, "1.2.3"]))["StudyInstanceUID"] == f"{STUDY}\\1.2.3"
    assert values(build("PATIENT", PatientID="P*"), PATIENT_ROOT)["PatientID"] == "P*"
    series = values(build("SERIES", StudyInstanceUID=STUDY, SeriesInstanceUID=[SERIES, "1.2.3"]))
    assert series["SeriesInstanceUID"] == f"{SERIES}\\1.2.3"


def test_error_messages_name_keys_never_values() -> None:
    with pytest.raises(InvalidQuery) as raised:
        query_from_identifier(wire(build("STUDY", PatientID="Secret*", PatientName="Doe^Jane")), PATIENT_ROOT)
    assert "Secret" not in str(raised.value) and "Doe" not in str(raised.value)
    assert str(raised.value).startswith("PatientID must be one value")


# ------------------------------------------------------------------------------------- the keys


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "explicit"])
def test_every_element_is_a_key_with_its_raw_matching_string(implicit: bool) -> None:
    ds = build(
        "STUDY", charset="ISO_IR 192",
        StudyInstanceUID="", PatientName="Doe^J*", PatientID="", StudyDate="20200101-20201231",
        StudyTime="-1200", ModalitiesInStudy=["CT", "MR"], AccessionNumber='""',
        NumberOfStudyRelatedInstances="", PatientBirthDate="19700101", StudyDescription="Head?w/o contrast",
    )
    found = values(ds, implicit=implicit)
    assert found == {
        "StudyInstanceUID": "", "PatientName": "Doe^J*", "PatientID": "", "StudyDate": "20200101-20201231",
        "StudyTime": "-1200", "ModalitiesInStudy": "CT\\MR", "AccessionNumber": '""',
        "NumberOfStudyRelatedInstances": "", "PatientBirthDate": "19700101",
        "StudyDescription": "Head?w/o contrast",
    }
    query = query_from_identifier(wire(ds, implicit=implicit), STUDY_ROOT)
    assert {match.vr for match in query.matches if match.keyword == "ModalitiesInStudy"} == {"CS"}
    assert query.match_for("00100010") == AttributeMatch("00100010", "PN", "Doe^J*")


def test_every_element_is_returned_and_request_qualifiers_are_not_matched() -> None:
    ds = build("STUDY", charset="ISO_IR 100", StudyInstanceUID="", RetrieveAETitle="", PatientName="",
               TimezoneOffsetFromUTC="+0100")
    query = query_from_identifier(wire(ds), STUDY_ROOT)
    assert query.include == {"00080005", "00080052", "00080054", "00080201", "0020000D", "00100010"}
    assert {match.keyword for match in query.matches} == {"StudyInstanceUID", "PatientName"}


def test_group_lengths_are_ignored() -> None:
    ds = build("STUDY", StudyInstanceUID="")
    ds.add_new(0x00080000, "UL", 30)
    ds.add_new(0x00200000, "UL", 8)
    query = query_from_identifier(wire(ds, implicit=False), STUDY_ROOT)
    assert query.include == {"00080052", "0020000D"}


def test_numbers_tags_and_other_non_text_values() -> None:
    ds = build("IMAGE", StudyInstanceUID=STUDY, SeriesInstanceUID=SERIES, Rows=512, InstanceNumber="7",
               FrameIncrementPointer=0x00181063, SliceThickness="1.50")
    for implicit in (True, False):
        found = values(ds, implicit=implicit)
        assert (found["Rows"], found["InstanceNumber"]) == ("512", "7")
        assert found["FrameIncrementPointer"] == "00181063"
        assert float(found["SliceThickness"]) == 1.5


def test_binary_values_cannot_be_matched_but_may_be_returned() -> None:
    ds = build("IMAGE", StudyInstanceUID=STUDY, SeriesInstanceUID=SERIES)
    ds.add_new(0x00291010, "OB", b"")
    assert values(ds, implicit=False)["00291010"] == ""
    ds.add_new(0x00420011, "OB", b"\x01\x02")
    with pytest.raises(InvalidQuery, match=r"\(0042,0011\): binary values"):
        query_from_identifier(wire(ds, implicit=False), STUDY_ROOT)


def test_sequence_keys_come_from_the_first_item() -> None:
    item = build(None, RequestedProcedureID="RP1*", ScheduledProcedureStepID="")
    ignored = build(None, RequestedProcedureID="other")
    ds = build("SERIES", StudyInstanceUID=STUDY, RequestAttributesSequence=Sequence([item, ignored]),
               ReferencedSeriesSequence=Sequence([]))
    for implicit in (True, False):
        query = query_from_identifier(wire(ds, implicit=implicit), STUDY_ROOT)
        sequence = query.match_for("00400275")
        assert sequence is not None and sequence.vr == "SQ" and sequence.value == ""
        assert set(sequence.items) == {
            AttributeMatch("00401001", "SH", "RP1*"), AttributeMatch("00400009", "SH", "")
        }
        assert query.match_for("00081115") == AttributeMatch("00081115", "SQ", "", ())


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "explicit"])
def test_private_tags_are_keys(implicit: bool) -> None:
    ds = build("IMAGE", StudyInstanceUID=STUDY, SeriesInstanceUID=SERIES)
    block = ds.private_block(0x0011, "SKYPACS TEST", create=True)
    block.add_new(0x01, "LO", "SITE-A")
    block.add_new(0x02, "LO", "")
    found = values(ds, implicit=implicit)
    assert (found["00110010"], found["00111001"], found["00111002"]) == ("SKYPACS TEST", "SITE-A", "")
    vr = query_from_identifier(wire(ds, implicit=implicit), STUDY_ROOT).match_for("00111001").vr  # type: ignore[union-attr]
    assert vr == ("UN" if implicit else "LO")  # implicit VR: unknown to the SCP, matched as text


def test_an_unknown_vr_is_invalid() -> None:
    in_memory = build("STUDY", StudyInstanceUID="")
    in_memory.add_new(0x00100010, "XX", "Doe")
    with pytest.raises(InvalidQuery, match=r"\(0010,0010\) has an unknown VR 'XX'"):
        query_from_identifier(in_memory, STUDY_ROOT)
    raw = b"\x08\x00\x52\x00CS\x06\x00STUDY \x10\x00\x10\x00XX\x04\x00ABCD"
    with pytest.raises(InvalidQuery, match="unknown VR"):
        query_from_identifier(decode(io.BytesIO(raw), False, True), STUDY_ROOT)


def test_identifiers_built_in_memory_work_too() -> None:
    ds = build("STUDY", charset="ISO_IR 192", PatientName="Müller^*", ModalitiesInStudy=["CT", "MR"])
    ds.StudyInstanceUID = ""
    found = {m.keyword: m.value for m in query_from_identifier(ds, STUDY_ROOT).matches}
    assert found == {"PatientName": "Müller^*", "ModalitiesInStudy": "CT\\MR", "StudyInstanceUID": ""}


# ----------------------------------------------------------------------------- character sets


@pytest.mark.parametrize(
    ("charset", "name"),
    [
        ("ISO_IR 100", "Müller^Hans"),
        ("ISO_IR 192", "Müller^Hans"),
        ("ISO_IR 192", "Nguyễn^Văn"),
        ("ISO_IR 144", "Иванов^Иван"),
        (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎"),
    ],
)
@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "explicit"])
def test_values_are_decoded_with_the_identifiers_character_set(
    charset: Any, name: str, implicit: bool
) -> None:
    ds = build("PATIENT", charset=charset, PatientName=name, PatientID="", OtherPatientNames=[name, "Doe^J"])
    assert values(ds, PATIENT_ROOT, implicit=implicit)["PatientName"] == name
    assert values(ds, PATIENT_ROOT, implicit=implicit)["OtherPatientNames"] == f"{name}\\Doe^J"


def test_a_latin1_query_finds_names_stored_from_any_character_set() -> None:
    def instance(sop: str, name: str) -> dict[str, Any]:
        return {
            "00080018": {"vr": "UI", "Value": [sop]}, "0020000D": {"vr": "UI", "Value": [f"1.2.{sop}"]},
            "0020000E": {"vr": "UI", "Value": [f"1.2.{sop}.1"]}, "00100020": {"vr": "LO", "Value": [sop]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": name}]},
        }

    stored = [instance("1", "Müller^Hans"), instance("2", "MÜLLER^JÖRG"), instance("3", "Muller^Max")]
    for charset in ("ISO_IR 100", "ISO_IR 192"):
        request = build("STUDY", charset=charset, PatientName="müller*")
        query = query_from_identifier(wire(request), STUDY_ROOT)
        assert [item["00100020"]["Value"] for item in reference_search(query, stored).items] == [["1"], ["2"]]
