"""WADO-RS negotiation: which transfer syntax and media type each Accept a real client sends gets."""

from __future__ import annotations

import pytest
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)

from skypacs.dicomweb.http import Headers, NotAcceptable, Request
from skypacs.dicomweb.wado import choose_syntax, dicom_choices, frame_answer, parse_frame_numbers
from skypacs.errors import InvalidQuery


def _request(accept: str | None = None, query: list[tuple[str, str]] | None = None) -> Request:
    headers = Headers({"Accept": accept} if accept is not None else {})
    return Request("GET", "/studies/1", query=query or [], headers=headers)


def test_no_accept_or_star_gets_explicit_vr_little_endian_in_multipart() -> None:
    for accept in (None, "*/*", 'multipart/related; type="application/dicom"'):
        assert dicom_choices(_request(accept), single_part=False) == (True, [(ExplicitVRLittleEndian, 1.0)])


def test_transfer_syntax_star_means_as_stored() -> None:
    multipart, choices = dicom_choices(
        _request('multipart/related; type="application/dicom"; transfer-syntax=*'), single_part=False)
    assert multipart
    assert choose_syntax(JPEGBaseline8Bit, choices) == JPEGBaseline8Bit


def test_quality_orders_the_choices_and_the_accept_parameter_overrides_the_header() -> None:
    accept = (f'multipart/related; type="application/dicom"; transfer-syntax={RLELossless}; q=0.5, '
              f'multipart/related; type="application/dicom"; transfer-syntax={JPEG2000Lossless}; q=0.9')
    _, choices = dicom_choices(_request(accept), single_part=False)
    assert [syntax for syntax, _ in choices] == [JPEG2000Lossless, RLELossless]
    _, choices = dicom_choices(_request("image/png", query=[("accept", "*/*")]), single_part=False)
    assert choices == [(ExplicitVRLittleEndian, 1.0)]


def test_single_part_application_dicom_only_for_one_instance() -> None:
    assert dicom_choices(_request("application/dicom"), single_part=True)[0] is False
    with pytest.raises(NotAcceptable, match="multipart/related"):
        dicom_choices(_request("application/dicom"), single_part=False)
    with pytest.raises(NotAcceptable):
        dicom_choices(_request("image/jpeg, application/dicom+json"), single_part=True)


def test_choose_syntax_transcodes_only_where_a_codec_exists() -> None:
    assert choose_syntax(JPEGBaseline8Bit, [(ExplicitVRLittleEndian, 1.0)]) == ExplicitVRLittleEndian
    assert choose_syntax(ImplicitVRLittleEndian, [(ExplicitVRLittleEndian, 1.0)]) == ExplicitVRLittleEndian
    assert choose_syntax(ExplicitVRLittleEndian, [(JPEGBaseline8Bit, 1.0)]) is None  # no JPEG encoder
    assert choose_syntax(ExplicitVRLittleEndian, [(JPEGBaseline8Bit, 1.0), ("*", 0.1)]) == ExplicitVRLittleEndian


OHIF = "multipart/related; type=application/octet-stream; transfer-syntax=*"


@pytest.mark.parametrize(
    ("stored", "accept", "decode", "content_type"),
    [
        (ExplicitVRLittleEndian, None, False, f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"),
        (ImplicitVRLittleEndian, None, False, f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"),
        (ExplicitVRBigEndian, None, True, f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"),
        (JPEGBaseline8Bit, None, True, f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"),
        (JPEGBaseline8Bit, OHIF, False, f"application/octet-stream; transfer-syntax={JPEGBaseline8Bit}"),
        (JPEGBaseline8Bit, 'multipart/related; type="image/jpeg"', False,
         f"image/jpeg; transfer-syntax={JPEGBaseline8Bit}"),
        (JPEG2000Lossless, 'multipart/related; type="image/*"', False,
         f"image/jp2; transfer-syntax={JPEG2000Lossless}"),
        (RLELossless, f"multipart/related; type=image/jpeg, {OHIF}; q=0.5", False,
         f"application/octet-stream; transfer-syntax={RLELossless}"),
        (ExplicitVRLittleEndian, OHIF, False, f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"),
    ],
)
def test_frame_answers(stored: str, accept: str | None, decode: bool, content_type: str) -> None:
    answer = frame_answer(_request(accept), stored, single_frame=False)
    assert (answer.decode, answer.content_type, answer.multipart) == (decode, content_type, True)


def test_frames_in_a_media_type_the_stored_syntax_is_not_are_406() -> None:
    with pytest.raises(NotAcceptable, match="image/jpeg"):
        frame_answer(_request('multipart/related; type="image/jp2"'), JPEGBaseline8Bit, single_frame=False)


def test_a_single_frame_may_be_a_bare_image() -> None:
    answer = frame_answer(_request("image/jpeg"), JPEGBaseline8Bit, single_frame=True)
    assert answer.multipart is False and answer.content_type.startswith("image/jpeg")


def test_frame_numbers() -> None:
    assert parse_frame_numbers("1,3, 5") == [1, 3, 5]
    for bad in ("0", "", "1,,2", "a", "-1", "1.5"):
        with pytest.raises(InvalidQuery):
            parse_frame_numbers(bad)
