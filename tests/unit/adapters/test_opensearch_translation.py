"""The OpenSearch adapter without a server: mappings, projection and query translation, exactly.

No OpenSearch runs on the build machines (DESIGN.md), so every decision that shapes an answer is a
pure function, and these tests pin the DSL each kind of match produces. Whether OpenSearch then
answers as the reference matcher does is proven against a live cluster by
``tests/contract/test_opensearch_live.py`` (when ``SKYPACS_TEST_OPENSEARCH_URL`` is set). The request
flow of the adapter is checked with a recording stub client that only returns canned answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from opensearchpy.exceptions import ConnectionError as OpenSearchConnectionError
from opensearchpy.exceptions import NotFoundError

from skypacs.adapters.opensearch_index import (
    BULK_CHUNK,
    IGNORE_ABOVE,
    MAX_RESULT_WINDOW,
    OpenSearchQueryIndex,
    Page,
    bulk_chunks,
    bulk_failures,
    doc_id,
    dynamic_templates,
    escape_wildcard,
    field_name,
    index_body,
    index_mappings,
    index_settings,
    instance_source,
    kind_of,
    last_modality,
    last_of_group,
    level_source,
    match_clause,
    next_composite_page,
    opensearch_client,
    page_from_hits,
    paging_plan,
    patient_group_body,
    project,
    query_dsl,
    search_body,
    series_group_body,
    sort_dsl,
    study_group_body,
)
from skypacs.errors import BackendError, DocumentsRejected
from skypacs.ports import InstanceRecord
from skypacs.query.model import AttributeMatch, Level, Query, attribute_match, query_from_qido


def e(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def clause(path: str, value: str, fuzzy: bool = False) -> dict[str, Any] | None:
    return match_clause(attribute_match(path, value), fuzzy)


# ------------------------------------------------------------------------------------- mappings


@pytest.mark.parametrize(
    "vr,kind",
    [
        ("PN", "PN"), ("UI", "UI"), ("DA", "DA"), ("TM", "TM"), ("DT", "DT"), ("SQ", "SQ"),
        ("IS", "NUM"), ("DS", "NUM"), ("US", "NUM"), ("SS", "NUM"), ("UL", "NUM"), ("SL", "NUM"),
        ("FL", "NUM"), ("FD", "NUM"), ("SV", "NUM"), ("UV", "NUM"),
        ("CS", "STR"), ("LO", "STR"), ("SH", "STR"), ("LT", "STR"), ("ST", "STR"), ("UT", "STR"), ("UC", "STR"),
        ("UR", "STR"), ("AE", "STR"), ("AS", "STR"), ("AT", "STR"), ("UN", "STR"), ("OB", "STR"), (None, "STR"),
    ],
)
def test_each_vr_has_a_field_suffix(vr: str | None, kind: str) -> None:
    assert kind_of(vr) == kind


def test_field_names_carry_the_tag_and_suffix_and_their_nested_path() -> None:
    assert field_name("00100010", "PN") == "t00100010_PN"
    assert field_name("00400009", "STR", "t00400275_SQ.") == "t00400275_SQ.t00400009_STR"


def _template(name: str) -> dict[str, Any]:
    for template in dynamic_templates():
        if name in template:
            return template[name]
    raise AssertionError(name)


def test_dynamic_templates_type_every_suffix() -> None:
    assert _template("sequences") == {"match": "t*_SQ", "mapping": {"type": "nested"}}
    assert _template("numbers") == {"match": "t*_NUM", "mapping": {"type": "double"}}
    for name, suffix in (("uids", "UI"), ("times", "TM"), ("date_times", "DT"), ("strings", "STR")):
        assert _template(name) == {"match": f"t*_{suffix}", "mapping": {"type": "keyword", "ignore_above": IGNORE_ABOVE}}
    assert _template("present") == {"match": "present", "mapping": {"type": "keyword"}}
    assert _template("item") == {"match": "item", "mapping": {"type": "long"}}


def test_person_names_have_a_lowercase_normalizer_and_a_components_field() -> None:
    assert _template("person_names") == {
        "match": "t*_PN",
        "mapping": {"type": "keyword", "ignore_above": IGNORE_ABOVE, "normalizer": "skypacs_lowercase"},
    }
    folded = _template("person_names_folded")
    assert folded["match"] == "t*_PNF"
    assert folded["mapping"]["type"] == "keyword"
    assert folded["mapping"]["fields"]["words"] == {
        "type": "text", "analyzer": "skypacs_pn_components", "norms": False, "index_options": "docs",
    }


def test_dates_are_keywords_with_a_date_sub_field() -> None:
    mapping = _template("dates")["mapping"]
    assert mapping["type"] == "keyword"
    assert mapping["fields"] == {"date": {"type": "date", "format": "yyyyMMdd", "ignore_malformed": True}}


def test_the_pn_suffix_template_does_not_catch_the_folded_field() -> None:
    """Templates match by name, first match wins: ``t*_PN`` must not take ``..._PNF`` fields."""
    names = [next(iter(t)) for t in dynamic_templates()]
    assert names.index("person_names") < names.index("person_names_folded")
    import fnmatch

    assert not fnmatch.fnmatchcase("t00100010_PNF", "t*_PN")


def test_settings_define_the_analysis_chain_and_the_limits() -> None:
    settings = index_settings(shards=3, replicas=2)
    assert settings["index"]["number_of_shards"] == 3
    assert settings["index"]["number_of_replicas"] == 2
    assert settings["index"]["max_result_window"] == MAX_RESULT_WINDOW
    assert settings["index"]["mapping"]["total_fields"]["limit"] >= 10_000
    assert settings["index"]["mapping"]["nested_fields"]["limit"] > 50
    assert settings["index"]["mapping"]["nested_objects"]["limit"] > 10_000
    analysis = settings["analysis"]
    assert analysis["normalizer"]["skypacs_lowercase"] == {"type": "custom", "filter": ["lowercase"]}
    assert analysis["tokenizer"]["skypacs_pn_components"] == {"type": "pattern", "pattern": r"[\^ =]+"}
    # values are case-folded in Python; a lowercase filter would fold them again differently
    assert analysis["analyzer"]["skypacs_pn_components"] == {"type": "custom", "tokenizer": "skypacs_pn_components"}
    assert "number_of_replicas" not in index_settings()["index"]


def test_mappings_store_dicom_unindexed_and_type_bookkeeping_fields() -> None:
    mappings = index_mappings()
    assert mappings["dynamic"] is True
    assert mappings["date_detection"] is False and mappings["numeric_detection"] is False
    properties = mappings["properties"]
    assert properties["dicom"] == {"type": "object", "enabled": False}
    assert properties["aux"] == {"type": "object", "enabled": False}
    for keyword in ("present", "sort_0", "sort_1", "k_patient", "k_study", "k_series"):
        assert properties[keyword] == {"type": "keyword"}
    assert properties["seq"] == properties["order"] == {"type": "long"}
    json.dumps(index_body())


# ----------------------------------------------------------------------------------- projection


def test_projection_has_one_field_per_attribute_suffix() -> None:
    fields = project({
        "00080020": e("DA", "2023-01-02"),
        "00080030": e("TM", "10:30:15"),
        "0008002A": e("DT", "20230102103015-0500"),
        "00080060": e("CS", "CT "),
        "00080008": e("CS", "ORIGINAL", "PRIMARY", "ORIGINAL"),
        "0020000D": e("UI", "1.2.3"),
        "00200013": e("IS", 7),
        "00280030": e("DS", 0.5, "0.25", -0.0, float("nan"), "x"),
        "00081030": e("LO"),
    })
    assert fields == {
        "t00080020_DA": ["20230102"],
        "t00080030_TM": ["103015"],
        "t0008002A_DT": ["20230102103015-0500"],
        "t00080060_STR": ["CT"],
        "t00080008_STR": ["ORIGINAL", "PRIMARY"],
        "t0020000D_UI": ["1.2.3"],
        "t00200013_NUM": [7.0],
        "t00280030_NUM": [0.5, 0.25, 0.0],
        "present": ["00080020", "00080030", "0008002A", "00080060", "00080008", "0020000D", "00200013", "00280030"],
    }
    assert str(fields["t00280030_NUM"][2]) == "0.0"  # -0.0 is 0.0 for the reference, not for Lucene points


def test_person_names_are_projected_lowercased_and_case_folded_for_every_group() -> None:
    fields = project({"00100010": e("PN", {"Alphabetic": "Straße^Jörg  ", "Ideographic": "山田^太郎", "Phonetic": ""},
                                    "Doe^Jane")})
    assert fields["t00100010_PN"] == ["straße^jörg", "山田^太郎", "doe^jane"]
    assert fields["t00100010_PNF"] == ["strasse^jörg", "山田^太郎", "doe^jane"]


def test_sequence_items_become_nested_documents_with_their_own_presence() -> None:
    fields = project({
        "00400275": e("SQ", {"00400009": e("SH", "SPS1"), "00401001": e("SH")}, {},
                      {"0040A043": e("SQ", {"00080100": e("SH", "A1")})}),
    })
    assert fields["t00400275_SQ"] == [
        {"t00400009_STR": ["SPS1"], "present": ["00400009"], "item": 0},
        {"present": [], "item": 1},
        {"t0040A043_SQ": [{"t00080100_STR": ["A1"], "present": ["00080100"], "item": 0}],
         "present": ["0040A043"], "item": 2},
    ]


def test_private_attributes_are_projected_under_the_query_vr_and_the_stored_vr() -> None:
    """A QIDO key names a private tag with VR UN (text matching); a C-FIND key may carry its VR."""
    fields = project({
        "00091010": e("LO", "SITE-A  "),
        "00091011": e("PN", {"Alphabetic": "Priv^Ate"}),
        "00091012": e("FD", 2.5),
        "00091013": {"vr": "UN", "InlineBinary": "AAAA"},
        "not-a-tag": e("LO", "ignored"),
    })
    assert fields == {
        "t00091010_STR": ["SITE-A"],
        "t00091011_PN": ["priv^ate"],
        "t00091011_PNF": ["priv^ate"],
        "t00091012_STR": ["2.5"],
        "t00091012_NUM": [2.5],
        "present": ["00091010", "00091011", "00091012"],
    }


def test_instance_source_is_searchable_as_the_image_level_sees_it() -> None:
    metadata = {
        "00080016": e("UI", "1.2.840.10008.5.1.4.1.1.2"),
        "00080018": e("UI", "1.2.3.4"),
        "00080060": e("CS", "CT"),
        "0020000D": e("UI", "1.2.3"),
        "0020000E": e("UI", "1.2.3.1"),
    }
    source = instance_source(metadata, seq=42)
    assert source["dicom"] == metadata
    assert source["t00080056_STR"] == ["ONLINE"]  # InstanceAvailability, as the reference adds it
    assert "00080056" not in source["dicom"]
    assert (source["seq"], source["order"], source["sort_0"]) == (42, 42, "1.2.3.4")
    assert (source["k_series"], source["k_study"]) == ("1.2.3/1.2.3.1", "1.2.3")
    assert source["k_patient"] == doc_id("")  # no Patient ID: grouped with the empty ones, as the reference
    assert source["sop_class"] == "1.2.840.10008.5.1.4.1.1.2"
    assert source["aux"] == {"modality": "CT"}


def test_level_source_sorts_series_by_study_then_series() -> None:
    document = {"0020000D": e("UI", "1.2"), "0020000E": e("UI", "1.2.9"), "00201209": e("IS", 3)}
    source = level_source(Level.SERIES, document, order=5)
    assert (source["sort_0"], source["sort_1"], source["order"]) == ("1.2", "1.2.9", 5)
    assert source["dicom"] == document
    assert source["t00201209_NUM"] == [3.0]


def test_document_ids_are_level_keys_unless_an_id_cannot_hold_them() -> None:
    assert doc_id("1.2.3") == "1.2.3"
    assert doc_id("1.2/1.2.3") == "1.2/1.2.3"
    for key in ("", "#abc", "x" * 513):
        assert doc_id(key).startswith("#") and len(doc_id(key)) == 65
    assert doc_id("") != doc_id("#")


# ---------------------------------------------------------------------------------- translation


def test_universal_matching_adds_no_clause() -> None:
    assert clause("PatientName", "") is None
    assert clause("PatientName", "*") is None
    assert clause("StudyDate", "*") is None
    assert query_dsl(Query(Level.STUDY)) == {"match_all": {}}
    assert query_dsl(query_from_qido(Level.STUDY, [("PatientID", "*"), ("StudyDate", "")])) == {"match_all": {}}


def test_empty_value_matching_is_the_absence_of_a_value() -> None:
    assert clause("AccessionNumber", '""') == {"bool": {"must_not": [{"term": {"present": "00080050"}}]}}


def test_uids_match_a_single_value_or_a_list() -> None:
    assert clause("StudyInstanceUID", "1.2.3") == {"term": {"t0020000D_UI": "1.2.3"}}
    assert clause("StudyInstanceUID", "1.2.3\\1.2.4\\1.2.3") == {"terms": {"t0020000D_UI": ["1.2.3", "1.2.4"]}}
    assert clause("SOPInstanceUID", "1.2.*") == {"term": {"t00080018_UI": "1.2.*"}}  # no wildcards in UIDs


def test_code_strings_match_any_of_a_list_with_or_without_wildcards() -> None:
    assert clause("Modality", "CT") == {"term": {"t00080060_STR": "CT"}}
    assert clause("Modality", "CT\\MR") == {"terms": {"t00080060_STR": ["CT", "MR"]}}
    assert clause("Modality", "CT\\M?\\*R") == {
        "bool": {
            "should": [
                {"term": {"t00080060_STR": "CT"}},
                {"wildcard": {"t00080060_STR": {"value": "M?"}}},
                {"wildcard": {"t00080060_STR": {"value": "*R"}}},
            ],
            "minimum_should_match": 1,
        }
    }


def test_strings_match_exactly_or_by_wildcard_case_sensitively() -> None:
    assert clause("StudyDescription", "Knee [left]") == {"term": {"t00081030_STR": "Knee [left]"}}
    assert clause("StudyDescription", "*CHEST*") == {"wildcard": {"t00081030_STR": {"value": "*CHEST*"}}}
    assert clause("StudyDescription", "a?c") == {"wildcard": {"t00081030_STR": {"value": "a?c"}}}
    # a backslash is literal outside CS lists; in a wildcard query it is Lucene's escape, so it is escaped
    assert clause("StudyDescription", "A\\B") == {"term": {"t00081030_STR": "A\\B"}}
    assert clause("StudyDescription", "A\\B*") == {"wildcard": {"t00081030_STR": {"value": "A\\\\B*"}}}
    assert clause("00091010", "SITE-*") == {"wildcard": {"t00091010_STR": {"value": "SITE-*"}}}


def test_escape_wildcard_only_escapes_the_escape_character() -> None:
    assert escape_wildcard("a*b?c") == "a*b?c"
    assert escape_wildcard("a\\*") == "a\\\\*"
    assert escape_wildcard("[x]{y}") == "[x]{y}"


def test_person_names_match_case_insensitively() -> None:
    assert clause("PatientName", "MÜLLER^Jörg") == {"term": {"t00100010_PNF": "müller^jörg"}}
    assert clause("PatientName", "STRASSE") == {"term": {"t00100010_PNF": "strasse"}}
    assert clause("PatientName", "Straße") == {"term": {"t00100010_PNF": "strasse"}}  # str.casefold, as the reference
    assert clause("PatientName", "MÜ*^J?RG") == {"wildcard": {"t00100010_PN": {"value": "mü*^j?rg"}}}


def test_fuzzy_person_names_also_match_a_component_by_prefix() -> None:
    assert clause("PatientName", "smi", fuzzy=True) == {
        "bool": {
            "should": [
                {"term": {"t00100010_PNF": "smi"}},
                {"prefix": {"t00100010_PNF.words": {"value": "smi"}}},
            ],
            "minimum_should_match": 1,
        }
    }
    assert clause("PatientName", "SMI*", fuzzy=True) == {
        "bool": {
            "should": [
                {"wildcard": {"t00100010_PN": {"value": "smi*"}}},
                {"prefix": {"t00100010_PNF.words": {"value": "smi"}}},
            ],
            "minimum_should_match": 1,
        }
    }
    # no component can hold these, so fuzzy matching adds nothing (as the reference's _fuzzy_name)
    for value in ("*mi", "s?i", "smith^john", "van der"):
        assert "prefix" not in json.dumps(clause("PatientName", value, fuzzy=True))
    assert "prefix" not in json.dumps(clause("StudyDescription", "smi", fuzzy=True))


def test_dates_match_exactly_or_by_inclusive_range() -> None:
    assert clause("StudyDate", "20230102") == {"term": {"t00080020_DA": "20230102"}}
    assert clause("StudyDate", "2023.01.02") == {"term": {"t00080020_DA": "20230102"}}
    assert clause("StudyDate", "20230101-20230630") == {
        "range": {"t00080020_DA": {"gte": "20230101", "lte": "20230630"}}
    }
    assert clause("StudyDate", "-20230630") == {"range": {"t00080020_DA": {"lte": "20230630"}}}
    assert clause("StudyDate", "20230101-") == {"range": {"t00080020_DA": {"gte": "20230101"}}}
    assert clause("StudyDate", "-") == {"match_none": {}}


def test_an_upper_bound_covers_the_precision_given() -> None:
    """``-10`` includes 10:59:59.999999: a shorter bound is followed by U+FFFF, above any digit."""
    assert clause("StudyTime", "-10") == {"range": {"t00080030_TM": {"lte": "10\uffff"}}}
    assert clause("StudyTime", "0930-10:30") == {"range": {"t00080030_TM": {"gte": "0930", "lte": "1030\uffff"}}}
    assert clause("StudyTime", "-103015.123456") == {"range": {"t00080030_TM": {"lte": "103015.123456"}}}
    assert clause("StudyDate", "-202306") == {"range": {"t00080020_DA": {"lte": "202306\uffff"}}}
    assert clause("AcquisitionDateTime", "-2023") == {"range": {"t0008002A_DT": {"lte": "2023\uffff"}}}


def test_single_times_and_date_times_match_by_prefix() -> None:
    assert clause("StudyTime", "10") == {"prefix": {"t00080030_TM": {"value": "10"}}}
    assert clause("StudyTime", "10:30") == {"prefix": {"t00080030_TM": {"value": "1030"}}}
    # one hyphen after the date part is a UTC offset, not a range
    assert clause("AcquisitionDateTime", "20230102103015-0500") == {
        "prefix": {"t0008002A_DT": {"value": "20230102103015-0500"}}
    }
    assert clause("AcquisitionDateTime", "2023-2024") == {"range": {"t0008002A_DT": {"gte": "2023", "lte": "2024\uffff"}}}
    assert clause("StudyTime", " ") == {"exists": {"field": "t00080030_TM"}}


def test_numbers_match_by_numeric_equality() -> None:
    assert clause("SeriesNumber", "2") == {"term": {"t00200011_NUM": 2.0}}
    assert clause("SeriesNumber", "2\\3.50\\2.0") == {"terms": {"t00200011_NUM": [2.0, 3.5]}}
    assert clause("SeriesNumber", "-0") == {"term": {"t00200011_NUM": 0.0}}
    # the reference stops at the first part that is not a number
    assert clause("SeriesNumber", "2\\x\\3") == {"term": {"t00200011_NUM": 2.0}}
    assert clause("SeriesNumber", "x\\3") == {"match_none": {}}
    assert clause("SeriesNumber", "nan\\3") == {"term": {"t00200011_NUM": 3.0}}
    json.dumps(clause("SeriesNumber", "inf\\1"))


def test_sequence_keys_match_within_one_item() -> None:
    match = query_from_qido(
        Level.SERIES, [("00400275.00401001", "RP7"), ("00400275.00400009", "SPS*")]
    ).matches[0]
    assert match_clause(match) == {
        "nested": {
            "path": "t00400275_SQ",
            "query": {
                "bool": {
                    "filter": [
                        {"term": {"t00400275_SQ.t00401001_STR": "RP7"}},
                        {"wildcard": {"t00400275_SQ.t00400009_STR": {"value": "SPS*"}}},
                    ]
                }
            },
            "score_mode": "none",
            "ignore_unmapped": True,
        }
    }


def test_nested_sequences_and_empty_values_inside_items() -> None:
    assert clause("ContentSequence.ConceptNameCodeSequence.CodeValue", '""') == {
        "nested": {
            "path": "t0040A730_SQ",
            "query": {"bool": {"filter": [{
                "nested": {
                    "path": "t0040A730_SQ.t0040A043_SQ",
                    "query": {"bool": {"filter": [
                        {"bool": {"must_not": [{"term": {"t0040A730_SQ.t0040A043_SQ.present": "00080100"}}]}},
                    ]}},
                    "score_mode": "none",
                    "ignore_unmapped": True,
                }
            }]}},
            "score_mode": "none",
            "ignore_unmapped": True,
        }
    }
    assert clause("RequestAttributesSequence.PatientName", "doe", fuzzy=True)["nested"]["query"]["bool"]["filter"][0][
        "bool"
    ]["should"][1] == {"prefix": {"t00400275_SQ.t00100010_PNF.words": {"value": "doe"}}}


def test_sequence_keys_that_match_everything_add_no_clause() -> None:
    assert clause("RequestAttributesSequence.ScheduledProcedureStepID", "*") is None
    assert clause("RequestAttributesSequence", "anything") is None  # a sequence key of its own is universal
    assert clause("RequestAttributesSequence", '""') is None
    # an inner sequence of universal keys still needs an outer item (the reference's rule)
    inner = clause("ContentSequence.ConceptNameCodeSequence.CodeValue", "*")
    assert inner == {
        "nested": {
            "path": "t0040A730_SQ",
            "query": {"bool": {"filter": []}},
            "score_mode": "none",
            "ignore_unmapped": True,
        }
    }


def test_keys_combine_in_one_filter_and_use_the_match_vr() -> None:
    query = query_from_qido(Level.STUDY, [("PatientSex", "F"), ("PatientBirthDate", "19500101-19791231")])
    assert query_dsl(query) == {
        "bool": {
            "filter": [
                {"term": {"t00100040_STR": "F"}},
                {"range": {"t00100030_DA": {"gte": "19500101", "lte": "19791231"}}},
            ]
        }
    }
    explicit = Query(Level.IMAGE, (AttributeMatch("00091011", "PN", "priv*"),))  # a C-FIND key with its VR
    assert query_dsl(explicit) == {"bool": {"filter": [{"wildcard": {"t00091011_PN": {"value": "priv*"}}}]}}


def test_every_generated_query_translates_to_json() -> None:
    from tests.query_data import generate, queries

    records = generate(200)
    for level, params in queries(records, count=200):
        body = search_body(query_from_qido(Level(level), params), size=11)
        json.dumps(body)


# ------------------------------------------------------------------------------- sort and paging


def test_sort_is_by_level_key_then_first_indexed() -> None:
    assert sort_dsl(Level.STUDY) == [{"sort_0": "asc"}, {"order": "asc"}]
    assert sort_dsl(Level.PATIENT) == [{"sort_0": "asc"}, {"order": "asc"}]
    assert sort_dsl(Level.IMAGE) == [{"sort_0": "asc"}, {"order": "asc"}]
    assert sort_dsl(Level.SERIES) == [{"sort_0": "asc"}, {"sort_1": "asc"}, {"order": "asc"}]


def test_search_body_asks_one_more_than_the_limit() -> None:
    query = query_from_qido(Level.STUDY, [("Modality", "CT"), ("limit", "7"), ("offset", "3")])
    how, pages = paging_plan(query.offset, query.limit)
    assert (how, pages) == ("from_size", [Page(size=8, from_=3)])
    assert search_body(query, size=8, from_=3) == {
        "query": {"bool": {"filter": [{"term": {"t00080060_STR": "CT"}}]}},
        "sort": [{"sort_0": "asc"}, {"order": "asc"}],
        "size": 8,
        "track_total_hits": False,
        "_source": ["dicom"],
        "from": 3,
    }
    assert "from" not in search_body(query, size=8)


def test_paging_within_the_result_window_is_one_from_size_request() -> None:
    assert paging_plan(0, 1000) == ("from_size", [Page(size=1001)])
    assert paging_plan(8999, 1000) == ("from_size", [Page(size=1001, from_=8999)])
    assert paging_plan(0, 0) == ("from_size", [Page(size=1)])


def test_deep_offsets_walk_with_search_after() -> None:
    """``from + size`` may not pass index.max_result_window (10,000)."""
    assert paging_plan(9000, 1000) == ("search_after", [Page(size=9000, collect=False), Page(size=1001)])
    assert paging_plan(25_000, 10) == (
        "search_after",
        [Page(size=10_000, collect=False), Page(size=10_000, collect=False), Page(size=5000, collect=False),
         Page(size=11)],
    )
    assert paging_plan(5, 4, window=4) == (
        "search_after", [Page(size=4, collect=False), Page(size=1, collect=False), Page(size=4), Page(size=1)]
    )
    query = query_from_qido(Level.SERIES, [])
    body = search_body(query, size=4, search_after=["1.2", "1.2.3", 17], source=False)
    assert body["search_after"] == ["1.2", "1.2.3", 17]
    assert body["_source"] is False and "from" not in body


def _hit(sop: str) -> dict[str, Any]:
    return {"_source": {"dicom": {"00080018": e("UI", sop), "00100010": e("PN", {"Alphabetic": "X"})}}}


def test_hits_are_shaped_as_the_reference_and_the_extra_hit_means_truncated() -> None:
    query = query_from_qido(Level.IMAGE, [("limit", "2")])
    page = page_from_hits(query, [_hit("1"), _hit("2"), _hit("3")])
    assert page.truncated is True
    assert page.items == [
        {"00080018": e("UI", "1"), "00080056": e("CS", "ONLINE")},
        {"00080018": e("UI", "2"), "00080056": e("CS", "ONLINE")},
    ]
    assert page_from_hits(query, [_hit("1"), _hit("2")]).truncated is False
    study = page_from_hits(query_from_qido(Level.STUDY, []), [_hit("1")])
    assert study.items == [{"00100010": e("PN", {"Alphabetic": "X"})}]


# ---------------------------------------------------------------------------- level refresh (pure)


def test_group_searches_find_the_last_instance_and_exact_counts() -> None:
    body = series_group_body("1.2/1.2.3")
    assert body == {
        "query": {"term": {"k_series": "1.2/1.2.3"}},
        "size": 1,
        "sort": [{"seq": "desc"}],
        "_source": ["dicom"],
        "track_total_hits": True,
        "aggs": {"first_seq": {"min": {"field": "seq"}}},
    }
    study = study_group_body("1.2")
    assert study["query"] == {"term": {"k_study": "1.2"}}
    assert study["aggs"]["series"]["composite"]["sources"] == [{"key": {"terms": {"field": "k_series"}}}]
    assert study["aggs"]["series"]["aggs"]["last"]["top_hits"] == {
        "size": 1, "sort": [{"seq": "desc"}], "_source": ["aux.modality"]
    }
    assert study["aggs"]["sop_classes"]["composite"]["sources"] == [{"key": {"terms": {"field": "sop_class"}}}]
    patient = patient_group_body("P1")
    assert set(patient["aggs"]) == {"first_seq", "studies", "series"}
    follow = next_composite_page(study, "series", {"key": "1.2/9"})
    assert follow["size"] == 0 and follow["query"] == study["query"]
    assert follow["aggs"]["series"]["composite"]["after"] == {"key": "1.2/9"}
    assert "after" not in study["aggs"]["series"]["composite"]  # the first request is left as it was


def test_group_responses_are_read() -> None:
    response = {
        "hits": {"total": {"value": 3, "relation": "eq"}, "hits": [{"_source": {"dicom": {"a": 1}}}]},
        "aggregations": {"first_seq": {"value": 11.0}},
    }
    assert last_of_group(response) == (3, {"a": 1}, 11)
    assert last_of_group({"hits": {"total": {"value": 0}, "hits": []}, "aggregations": {}}) is None
    assert last_modality({"last": {"hits": {"hits": [{"_source": {"aux": {"modality": "MR"}}}]}}}) == "MR"
    assert last_modality({"last": {"hits": {"hits": [{"_source": {}}]}}}) is None


def test_bulk_chunks_keep_actions_with_their_sources() -> None:
    operations = [[{"index": {"_id": str(n)}}, {"n": n}] if n % 2 else [{"delete": {"_id": str(n)}}]
                  for n in range(BULK_CHUNK + 3)]
    chunks = list(bulk_chunks(operations))
    assert len(chunks) == 2
    assert sum(1 for line in chunks[0] if "index" in line or "delete" in line) == BULK_CHUNK
    assert chunks[1] == [{"delete": {"_id": str(BULK_CHUNK)}}, {"index": {"_id": str(BULK_CHUNK + 1)}},
                         {"n": BULK_CHUNK + 1}, {"delete": {"_id": str(BULK_CHUNK + 2)}}]


def test_bulk_failures_tolerate_only_stale_level_versions_and_missing_deletes() -> None:
    response = {"errors": True, "items": [
        {"index": {"_index": "x-series", "status": 201}},
        {"index": {"_index": "x-series", "status": 409, "error": {"type": "version_conflict_engine_exception"}}},
        {"delete": {"_index": "x-studies", "status": 404}},
        {"index": {"_index": "x-instances", "status": 400, "error": {"type": "mapper_parsing_exception",
                                                                       "reason": "value 'Doe^John'"}}},
    ]}
    assert bulk_failures(response, versioned=True) == [("index", "x-instances", 400, "mapper_parsing_exception")]
    assert [f[2] for f in bulk_failures(response)] == [409, 400]
    assert bulk_failures({"errors": False, "items": []}) == []


# --------------------------------------------------------------------- adapter with a stub client


class StubIndices:
    def __init__(self, existing: set[str]) -> None:
        self.existing = existing
        self.created: dict[str, dict[str, Any]] = {}

    def exists(self, index: str) -> bool:
        return index in self.existing or index in self.created

    def create(self, index: str, body: dict[str, Any]) -> None:
        self.created[index] = body


class StubClient:
    """Records each call and answers from ``answers[method]`` (a value, or a function of the call)."""

    def __init__(self, existing: set[str] = frozenset(), **answers: Any) -> None:  # type: ignore[assignment]
        self.indices = StubIndices(set(existing))
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.answers = answers

    def __getattr__(self, method: str) -> Callable[..., Any]:
        def call(**kwargs: Any) -> Any:
            self.calls.append((method, kwargs))
            answer = self.answers[method]
            if isinstance(answer, list):
                answer = answer.pop(0)
            if isinstance(answer, BaseException):
                raise answer
            return answer(**kwargs) if callable(answer) else answer

        return call

    def methods(self) -> list[str]:
        return [method for method, _ in self.calls]


def _record(sop: str) -> InstanceRecord:
    return InstanceRecord(
        StudyInstanceUID="1.2", SeriesInstanceUID="1.2.3", SOPInstanceUID=sop, SOPClassUID="1.2.840.10008.5.1.4.1.1.2",
        TransferSyntaxUID="1.2.840.10008.1.2.1", PatientID="P1", key="k", size=1, etag="e", stored_at="t",
        metadata={"00080018": e("UI", sop), "00080060": e("CS", "CT"), "00100020": e("LO", "P1"),
                  "0020000D": e("UI", "1.2"), "0020000E": e("UI", "1.2.3")},
    )


def test_only_the_instances_index_takes_more_shards() -> None:
    client = StubClient()
    OpenSearchQueryIndex(client, prefix="x", shards=36)
    shards = {name: body["settings"]["index"]["number_of_shards"] for name, body in client.indices.created.items()}
    assert shards == {"x-instances": 36, "x-series": 1, "x-studies": 1, "x-patients": 1, "x-sequence": 1}


def test_missing_indices_are_created_with_the_mappings() -> None:
    client = StubClient(existing={"x-series"})
    OpenSearchQueryIndex(client, prefix="x", replicas=0)
    assert set(client.indices.created) == {"x-instances", "x-studies", "x-patients", "x-sequence"}
    assert client.indices.created["x-instances"] == index_body(replicas=0)


def _group_response(total: int, dicom: dict[str, Any], aggs: dict[str, Any]) -> dict[str, Any]:
    return {
        "hits": {"total": {"value": total, "relation": "eq"}, "hits": [{"_source": {"dicom": dicom}}] if total else []},
        "aggregations": {"first_seq": {"value": 1.0 if total else None}, **aggs},
    }


def _indexing_client(instance_bulk: dict[str, Any]) -> StubClient:
    rec = _record("1.2.3.2")
    counter = iter([2, 3])
    return StubClient(
        existing={"x-instances", "x-series", "x-studies", "x-patients", "x-sequence"},
        mget={"docs": []},
        update=lambda **kw: {"get": {"_source": {"value": next(counter)}}},
        bulk=[instance_bulk, {"errors": False, "items": []}],
        msearch={"responses": [_group_response(1, rec.metadata, {}), _group_response(1, rec.metadata, {
            "series": {"buckets": [{"key": {"key": "1.2/1.2.3"}, "doc_count": 1,
                                    "last": {"hits": {"hits": [{"_source": {"aux": {"modality": "CT"}}}]}}}]},
            "sop_classes": {"buckets": [{"key": {"key": "1.2.840.10008.5.1.4.1.1.2"}, "doc_count": 1}]},
        }), _group_response(1, rec.metadata, {
            "studies": {"buckets": [{"key": {"key": "1.2"}, "doc_count": 1}]},
            "series": {"buckets": [{"key": {"key": "1.2/1.2.3"}, "doc_count": 1}]},
        })]},
    )


def test_a_document_refused_for_its_content_fails_alone_and_the_levels_are_still_rebuilt() -> None:
    client = _indexing_client({"errors": True, "items": [
        {"index": {"_index": "x-instances", "_id": "1.2.3.1", "status": 400,
                   "error": {"type": "illegal_argument_exception", "reason": "Limit of nested objects"}}},
        {"index": {"_index": "x-instances", "_id": "1.2.3.2", "status": 201}},
    ]})
    with pytest.raises(DocumentsRejected) as refused:
        OpenSearchQueryIndex(client, prefix="x").index_instances([_record("1.2.3.1"), _record("1.2.3.2")])
    assert refused.value.rejected == {"1.2.3.1": "illegal_argument_exception"}
    assert "nested" not in str(refused.value)  # reasons can quote values: only the error type is kept
    assert client.methods() == ["mget", "update", "bulk", "update", "msearch", "bulk"]  # the series still counts


def test_a_throttled_document_fails_the_whole_batch_for_a_retry() -> None:
    client = _indexing_client({"errors": True, "items": [
        {"index": {"_index": "x-instances", "_id": "1.2.3.1", "status": 429,
                   "error": {"type": "es_rejected_execution_exception"}}},
        {"index": {"_index": "x-instances", "_id": "1.2.3.2", "status": 201}},
    ]})
    with pytest.raises(BackendError) as failed:
        OpenSearchQueryIndex(client, prefix="x").index_instances([_record("1.2.3.1"), _record("1.2.3.2")])
    assert not isinstance(failed.value, DocumentsRejected)
    assert client.methods() == ["mget", "update", "bulk"]


def test_indexing_writes_instances_then_versioned_level_documents() -> None:
    counter = iter([2, 3])
    rec1, rec2 = _record("1.2.3.1"), _record("1.2.3.2")
    series = _group_response(2, rec2.metadata, {})
    study = _group_response(2, rec2.metadata, {
        "series": {"buckets": [{"key": {"key": "1.2/1.2.3"}, "doc_count": 2,
                                "last": {"hits": {"hits": [{"_source": {"aux": {"modality": "CT"}}}]}}}]},
        "sop_classes": {"buckets": [{"key": {"key": "1.2.840.10008.5.1.4.1.1.2"}, "doc_count": 2}]},
    })
    patient = _group_response(2, rec2.metadata, {
        "studies": {"buckets": [{"key": {"key": "1.2"}, "doc_count": 2}]},
        "series": {"buckets": [{"key": {"key": "1.2/1.2.3"}, "doc_count": 2}]},
    })
    client = StubClient(
        existing={"x-instances", "x-series", "x-studies", "x-patients", "x-sequence"},
        mget={"docs": [{"_id": "1.2.3.1", "found": False}, {"_id": "1.2.3.2", "found": False}]},
        update=lambda **kw: {"get": {"_source": {"value": next(counter)}}},
        bulk={"errors": False, "items": []},
        msearch={"responses": [series, study, patient]},
    )
    OpenSearchQueryIndex(client, prefix="x").index_instances([rec1, rec2])
    assert client.methods() == ["mget", "update", "bulk", "update", "msearch", "bulk"]
    (_, reserve), (_, instances), (_, ticket), (_, searches), (_, levels) = client.calls[1:]
    assert reserve["body"]["script"]["params"] == {"n": 2} and reserve["retry_on_conflict"] > 0
    assert instances["refresh"] is True
    assert [line["index"]["_id"] for line in instances["body"][::2]] == ["1.2.3.1", "1.2.3.2"]
    assert [line["seq"] for line in instances["body"][1::2]] == [1, 2]
    assert ticket["body"]["script"]["params"] == {"n": 1}
    assert searches["body"][::2] == [{"index": "x-instances"}] * 3
    assert searches["body"][1::2] == [series_group_body("1.2/1.2.3"), study_group_body("1.2"), patient_group_body("P1")]
    actions = levels["body"][::2]
    assert [(a["index"]["_index"], a["index"]["_id"]) for a in actions] == [
        ("x-series", "1.2/1.2.3"), ("x-studies", "1.2"), ("x-patients", "P1")
    ]
    assert all(a["index"]["version"] == 3 and a["index"]["version_type"] == "external" for a in actions)
    series_doc, study_doc, patient_doc = (source["dicom"] for source in levels["body"][1::2])
    assert series_doc["00201209"] == e("IS", 2)  # NumberOfSeriesRelatedInstances
    assert study_doc["00080061"] == e("CS", "CT")  # ModalitiesInStudy
    assert study_doc["00201206"] == e("IS", 1) and study_doc["00201208"] == e("IS", 2)
    assert patient_doc["00201200"] == e("IS", 1)  # NumberOfPatientRelatedStudies


def test_an_emptied_group_deletes_its_level_document() -> None:
    empty = _group_response(0, {}, {})
    client = StubClient(
        existing={"x-instances", "x-series", "x-studies", "x-patients", "x-sequence"},
        mget={"docs": [{"_id": "1.2.3.1", "found": True,
                        "_source": {"k_series": "1.2/1.2.3", "k_study": "1.2", "k_patient": "P1"}}]},
        delete={"result": "deleted"},
        update={"get": {"_source": {"value": 9}}},
        msearch={"responses": [empty, empty, empty]},
        bulk={"errors": True, "items": [{"delete": {"_index": "x-series", "status": 404}}]},
    )
    OpenSearchQueryIndex(client, prefix="x").remove_instance("1.2.3.1")
    assert client.methods() == ["mget", "delete", "update", "msearch", "bulk"]
    assert client.calls[1][1] == {"index": "x-instances", "id": "1.2.3.1", "refresh": True}
    assert client.calls[-1][1]["body"] == [
        {"delete": {"_index": "x-series", "_id": "1.2/1.2.3", "version": 9, "version_type": "external"}},
        {"delete": {"_index": "x-studies", "_id": "1.2", "version": 9, "version_type": "external"}},
        {"delete": {"_index": "x-patients", "_id": "P1", "version": 9, "version_type": "external"}},
    ]


def test_removing_an_absent_instance_writes_nothing() -> None:
    client = StubClient(existing={"x-instances", "x-series", "x-studies", "x-patients", "x-sequence"},
                        mget={"docs": [{"_id": "9", "found": False}]})
    OpenSearchQueryIndex(client, prefix="x").remove_instance("9")
    assert client.methods() == ["mget"]


def test_get_document_returns_the_stored_metadata_or_none() -> None:
    existing = {"x-instances", "x-series", "x-studies", "x-patients", "x-sequence"}
    client = StubClient(existing=existing, get={"found": True, "_source": {"dicom": {"a": 1}}})
    assert OpenSearchQueryIndex(client, prefix="x").get_document("1.2") == {"a": 1}
    assert client.calls[0][1] == {"index": "x-instances", "id": "1.2", "_source_includes": "dicom"}
    missing = StubClient(existing=existing, get=NotFoundError(404, "not_found", {}))
    assert OpenSearchQueryIndex(missing, prefix="x").get_document("1.2") is None


def test_search_pages_with_from_size_then_search_after() -> None:
    existing = {"x-instances", "x-series", "x-studies", "x-patients", "x-sequence"}

    def hits(n: int, start: int) -> dict[str, Any]:
        return {"hits": {"hits": [{**_hit(str(start + i)), "sort": [str(start + i), start + i]} for i in range(n)]}}

    client = StubClient(existing=existing, search=[hits(3, 0)])
    page = OpenSearchQueryIndex(client, prefix="x").search(query_from_qido(Level.IMAGE, [("limit", "2")]))
    assert len(page.items) == 2 and page.truncated
    assert client.calls[0][1]["index"] == "x-instances" and client.calls[0][1]["body"]["size"] == 3

    deep = StubClient(existing=existing, search=[hits(4, 0), hits(1, 4), hits(2, 5)])
    index = OpenSearchQueryIndex(deep, prefix="x", max_result_window=4)
    page = index.search(query_from_qido(Level.IMAGE, [("limit", "4"), ("offset", "5")]))
    assert [item["00080018"]["Value"][0] for item in page.items] == ["5", "6"]
    assert page.truncated is False
    bodies = [kwargs["body"] for _, kwargs in deep.calls]
    assert [(b["size"], b["_source"], b.get("search_after")) for b in bodies] == [
        (4, False, None), (1, False, ["3", 3]), (4, ["dicom"], ["4", 4])
    ]


def test_fewer_matches_than_the_offset_give_an_empty_page() -> None:
    existing = {"x-instances", "x-series", "x-studies", "x-patients", "x-sequence"}
    client = StubClient(existing=existing, search=[{"hits": {"hits": [{"_source": {}, "sort": ["1", 1]}]}}])
    index = OpenSearchQueryIndex(client, prefix="x", max_result_window=4)
    page = index.search(query_from_qido(Level.STUDY, [("offset", "10"), ("limit", "2")]))
    assert (page.items, page.truncated) == ([], False)
    assert len(client.calls) == 1


def test_client_errors_become_backend_errors_without_values() -> None:
    existing = {"x-instances", "x-series", "x-studies", "x-patients", "x-sequence"}
    client = StubClient(existing=existing, search=OpenSearchConnectionError("N/A", "connection refused", None))
    with pytest.raises(BackendError) as raised:
        OpenSearchQueryIndex(client, prefix="x").search(query_from_qido(Level.STUDY, [("PatientName", "Doe")]))
    assert "Doe" not in str(raised.value)

    refusing = StubClient(
        existing=existing,
        mget={"docs": [{"_id": "1", "found": False}]},
        update={"get": {"_source": {"value": 1}}},
        bulk=[{"errors": True, "items": [{"index": {"_index": "x-instances", "_id": "1", "status": 400,
                                                      "error": {"type": "mapper_parsing_exception", "reason": "Doe"}}}]},
              {"errors": False, "items": []}],
        msearch={"responses": [_group_response(0, {}, {})] * 3},
    )
    with pytest.raises(DocumentsRejected) as refused:
        OpenSearchQueryIndex(refusing, prefix="x").index_instance(_record("1"))
    assert "mapper_parsing_exception" in str(refused.value) and "Doe" not in str(refused.value)
    assert refused.value.rejected == {"1": "mapper_parsing_exception"}


def test_the_client_signs_requests_with_sigv4_on_aws() -> None:
    from botocore.credentials import Credentials
    from opensearchpy import RequestsAWSV4SignerAuth, RequestsHttpConnection

    class Session:
        def get_credentials(self) -> Credentials:
            return Credentials("AKIDEXAMPLE", "secret", "token")

    client = opensearch_client("search-pacs.eu-west-1.es.amazonaws.com", region="eu-west-1", session=Session())
    connection = client.transport.get_connection()
    assert isinstance(connection, RequestsHttpConnection)
    assert connection.host == "https://search-pacs.eu-west-1.es.amazonaws.com:443"
    assert isinstance(connection.session.auth, RequestsAWSV4SignerAuth)
    assert connection.session.auth.service == "es"

    plain = opensearch_client("http://localhost:9200")
    assert plain.transport.get_connection().session.auth is None
