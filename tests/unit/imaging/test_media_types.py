"""PS3.18 8.7.3 media types and transfer syntaxes."""

from __future__ import annotations

import pytest
from pydicom.uid import (
    HEVCMP51,
    HTJ2K,
    JPEG2000,
    JPEG2000MC,
    MPEG2MPML,
    MPEG4HP41,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from skypacs.imaging.media_types import (
    COMPRESSED_BULKDATA_MEDIA_TYPES,
    default_transfer_syntax,
    frame_media_type,
    is_allowed,
    normalize_media_type,
    rendered_media_types,
    transfer_syntaxes,
)


@pytest.mark.parametrize(
    ("uid", "media_type"),
    [
        (ExplicitVRLittleEndian, "application/octet-stream"),
        (ImplicitVRLittleEndian, "application/octet-stream"),
        (ExplicitVRBigEndian, "application/octet-stream"),
        (DeflatedExplicitVRLittleEndian, "application/octet-stream"),
        (JPEGBaseline8Bit, "image/jpeg"),
        (JPEGExtended12Bit, "image/jpeg"),
        (JPEGLossless, "image/jpeg"),
        (JPEGLosslessSV1, "image/jpeg"),
        (JPEGLSLossless, "image/jls"),
        (JPEGLSNearLossless, "image/jls"),
        (JPEG2000Lossless, "image/jp2"),
        (JPEG2000, "image/jp2"),
        (JPEG2000MC, "image/jpx"),
        (RLELossless, "image/dicom-rle"),
        (HTJ2KLossless, "image/jphc"),
        (HTJ2K, "image/jphc"),
        (MPEG2MPML, "video/mpeg"),
        (MPEG4HP41, "video/mp4"),
        (HEVCMP51, "video/mp4"),
        ("1.2.3.4.5", "application/octet-stream"),
    ],
)
def test_frame_media_type(uid: str, media_type: str) -> None:
    assert frame_media_type(uid) == media_type


@pytest.mark.parametrize(
    ("media_type", "default"),
    [
        ("application/octet-stream", ExplicitVRLittleEndian),
        ("application/dicom", ExplicitVRLittleEndian),
        ("image/jpeg", JPEGLosslessSV1),
        ("image/jls", JPEGLSLossless),
        ("image/jp2", JPEG2000Lossless),
        ("image/dicom-rle", RLELossless),
        ("image/x-dicom-rle", RLELossless),
        ("IMAGE/JPHC; q=0.5", HTJ2KLossless),
        ("video/mpeg", MPEG2MPML),
        ("video/mp4", MPEG4HP41),
        ("image/png", None),
    ],
)
def test_default_transfer_syntax(media_type: str, default: str | None) -> None:
    assert default_transfer_syntax(media_type) == default


def test_every_compressed_media_type_has_exactly_one_default() -> None:
    media_types = {row.media_type for row in COMPRESSED_BULKDATA_MEDIA_TYPES}
    for media_type in media_types:
        defaults = [r for r in COMPRESSED_BULKDATA_MEDIA_TYPES if r.media_type == media_type and r.default]
        assert len(defaults) == 1, media_type


def test_syntaxes_of_a_media_type_default_first() -> None:
    assert transfer_syntaxes("image/jpeg") == (
        JPEGLosslessSV1,
        JPEGBaseline8Bit,
        JPEGExtended12Bit,
        JPEGLossless,
    )
    assert is_allowed("image/jpeg", JPEGBaseline8Bit)
    assert not is_allowed("image/jpeg", JPEG2000)
    # PS3.18 8.7.3: Implicit VR Little Endian and Big Endian are not used by web services.
    assert not is_allowed("application/dicom", ImplicitVRLittleEndian)
    assert not is_allowed("application/dicom", ExplicitVRBigEndian)


def test_normalize_and_rendered() -> None:
    assert (
        normalize_media_type(" Image/X-DICOM-RLE ; transfer-syntax=1.2.840.10008.1.2.5") == "image/dicom-rle"
    )
    assert rendered_media_types("single-frame image")[0] == "image/jpeg"
