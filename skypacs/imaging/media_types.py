"""Media types of DICOMweb payloads and the transfer syntaxes behind them (PS3.18 8.7.3 and 8.7.4).

The tables are data, transcribed from PS3.18 Tables 8.7.3-2 (instances), 8.7.3-4 (uncompressed bulk
data), 8.7.3-5 (compressed bulk data) and 8.7.4-1 (rendered), so that content negotiation in
``skypacs.dicomweb`` and frame retrieval here agree on one reading of the standard. The single-frame,
multi-frame and video resource categories share one list of image/video bulk data types: PS3.18 gives
them the same media type / transfer syntax pairs, and a frame is served as a single-frame image.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import (
    HEVCM10P51,
    HEVCMP51,
    HTJ2K,
    JPEG2000,
    JPEG2000MC,
    MPEG2MPHL,
    MPEG2MPHLF,
    MPEG2MPML,
    MPEG2MPMLF,
    MPEG4HP41,
    MPEG4HP41BD,
    MPEG4HP41BDF,
    MPEG4HP41F,
    MPEG4HP42STEREO,
    MPEG4HP42STEREOF,
    MPEG4HP422D,
    MPEG4HP422DF,
    MPEG4HP423D,
    MPEG4HP423DF,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEG2000MCLossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

DICOM = "application/dicom"
OCTET_STREAM = "application/octet-stream"
JPEG = "image/jpeg"
JPEG_LS = "image/jls"
JPEG_2000 = "image/jp2"
JPEG_2000_PART2 = "image/jpx"
HTJ2K_MEDIA_TYPE = "image/jphc"
JPEG_XL = "image/jxl"
DICOM_RLE = "image/dicom-rle"
MPEG = "video/mpeg"
MP4 = "video/mp4"

MEDIA_TYPE_ALIASES = {"image/x-dicom-rle": DICOM_RLE, "image/x-jls": JPEG_LS, "image/jpg": JPEG}
"""Older or informal names some clients still send, mapped to the name PS3.18 uses."""

# JPEG XL (Sup 232, PS3.5 2024): pydicom 3.0 has no constants for it yet.
JPEGXLLossless = UID("1.2.840.10008.1.2.4.110")
JPEGXLJPEGRecompression = UID("1.2.840.10008.1.2.4.111")
JPEGXL = UID("1.2.840.10008.1.2.4.112")

NATIVE_TRANSFER_SYNTAXES = frozenset(
    {ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian}
)
"""Syntaxes whose pixel data are not encapsulated: their frames are served as application/octet-stream."""


@dataclass(frozen=True)
class MediaTypeSyntax:
    """One row of a PS3.18 media type table: ``default`` is the "D" of its Optionality column."""

    media_type: str
    transfer_syntax_uid: str
    default: bool = False


INSTANCE_MEDIA_TYPES: tuple[MediaTypeSyntax, ...] = (
    # Table 8.7.3-2: application/dicom in any transfer syntax the origin server supports; Explicit VR
    # Little Endian is the default. Implicit VR LE and Big Endian shall not be used (PS3.18 8.7.3).
    MediaTypeSyntax(DICOM, ExplicitVRLittleEndian, default=True),
    MediaTypeSyntax(DICOM, DeflatedExplicitVRLittleEndian),
    *(
        MediaTypeSyntax(DICOM, uid)
        for uid in (
            JPEGLosslessSV1,
            JPEGBaseline8Bit,
            JPEGExtended12Bit,
            JPEGLossless,
            RLELossless,
            JPEGLSLossless,
            JPEGLSNearLossless,
            JPEG2000Lossless,
            JPEG2000,
            JPEG2000MCLossless,
            JPEG2000MC,
            HTJ2KLossless,
            HTJ2KLosslessRPCL,
            HTJ2K,
            JPEGXLLossless,
            JPEGXLJPEGRecompression,
            JPEGXL,
            MPEG2MPML,
            MPEG2MPMLF,
            MPEG2MPHL,
            MPEG2MPHLF,
            MPEG4HP41,
            MPEG4HP41F,
            MPEG4HP41BD,
            MPEG4HP41BDF,
            MPEG4HP422D,
            MPEG4HP422DF,
            MPEG4HP423D,
            MPEG4HP423DF,
            MPEG4HP42STEREO,
            MPEG4HP42STEREOF,
            HEVCMP51,
            HEVCM10P51,
        )
    ),
)

UNCOMPRESSED_BULKDATA_MEDIA_TYPES: tuple[MediaTypeSyntax, ...] = (
    # Table 8.7.3-4: uncompressed bulk data is little-endian octets, whatever the stored encoding.
    MediaTypeSyntax(OCTET_STREAM, ExplicitVRLittleEndian, default=True),
)

COMPRESSED_BULKDATA_MEDIA_TYPES: tuple[MediaTypeSyntax, ...] = (
    # Table 8.7.3-5.
    MediaTypeSyntax(JPEG, JPEGLosslessSV1, default=True),
    MediaTypeSyntax(JPEG, JPEGBaseline8Bit),
    MediaTypeSyntax(JPEG, JPEGExtended12Bit),
    MediaTypeSyntax(JPEG, JPEGLossless),
    MediaTypeSyntax(DICOM_RLE, RLELossless, default=True),
    MediaTypeSyntax(JPEG_LS, JPEGLSLossless, default=True),
    MediaTypeSyntax(JPEG_LS, JPEGLSNearLossless),
    MediaTypeSyntax(JPEG_2000, JPEG2000Lossless, default=True),
    MediaTypeSyntax(JPEG_2000, JPEG2000),
    MediaTypeSyntax(JPEG_2000_PART2, JPEG2000MCLossless, default=True),
    MediaTypeSyntax(JPEG_2000_PART2, JPEG2000MC),
    MediaTypeSyntax(HTJ2K_MEDIA_TYPE, HTJ2KLossless, default=True),
    MediaTypeSyntax(HTJ2K_MEDIA_TYPE, HTJ2KLosslessRPCL),
    MediaTypeSyntax(HTJ2K_MEDIA_TYPE, HTJ2K),
    MediaTypeSyntax(JPEG_XL, JPEGXLLossless, default=True),
    MediaTypeSyntax(JPEG_XL, JPEGXLJPEGRecompression),
    MediaTypeSyntax(JPEG_XL, JPEGXL),
    MediaTypeSyntax(MPEG, MPEG2MPML, default=True),
    MediaTypeSyntax(MPEG, MPEG2MPMLF),
    MediaTypeSyntax(MPEG, MPEG2MPHL),
    MediaTypeSyntax(MPEG, MPEG2MPHLF),
    MediaTypeSyntax(MP4, MPEG4HP41, default=True),
    MediaTypeSyntax(MP4, MPEG4HP41F),
    MediaTypeSyntax(MP4, MPEG4HP41BD),
    MediaTypeSyntax(MP4, MPEG4HP41BDF),
    MediaTypeSyntax(MP4, MPEG4HP422D),
    MediaTypeSyntax(MP4, MPEG4HP422DF),
    MediaTypeSyntax(MP4, MPEG4HP423D),
    MediaTypeSyntax(MP4, MPEG4HP423DF),
    MediaTypeSyntax(MP4, MPEG4HP42STEREO),
    MediaTypeSyntax(MP4, MPEG4HP42STEREOF),
    MediaTypeSyntax(MP4, HEVCMP51),
    MediaTypeSyntax(MP4, HEVCM10P51),
)

BULKDATA_MEDIA_TYPES = UNCOMPRESSED_BULKDATA_MEDIA_TYPES + COMPRESSED_BULKDATA_MEDIA_TYPES


@dataclass(frozen=True)
class RenderedMediaType:
    """One row of Table 8.7.4-1: ``requirement`` is "D" (default), "R" (required) or "O" (optional)."""

    resource_category: str
    media_type: str
    requirement: str


RENDERED_MEDIA_TYPE_TABLE: tuple[RenderedMediaType, ...] = (
    RenderedMediaType("single-frame image", "image/jpeg", "D"),
    RenderedMediaType("single-frame image", "image/gif", "R"),
    RenderedMediaType("single-frame image", "image/png", "R"),
    RenderedMediaType("single-frame image", "image/jp2", "O"),
    RenderedMediaType("multi-frame image", "image/gif", "O"),
    RenderedMediaType("video", "video/mpeg", "O"),
    RenderedMediaType("video", "video/mp4", "O"),
    RenderedMediaType("video", "video/H265", "O"),
    RenderedMediaType("text", "text/html", "D"),
    RenderedMediaType("text", "text/plain", "R"),
    RenderedMediaType("text", "application/pdf", "O"),
)


def normalize_media_type(media_type: str) -> str:
    """Lower-cased, parameters dropped, aliases resolved: ``"Image/X-DICOM-RLE; q=1"`` -> ``image/dicom-rle``."""
    base = media_type.split(";", 1)[0].strip().lower()
    return MEDIA_TYPE_ALIASES.get(base, base)


def frame_media_type(transfer_syntax_uid: str) -> str:
    """The bulk data media type of frames stored in ``transfer_syntax_uid`` as they are.

    Native syntaxes (including deflated and big endian, whose frames are served decoded to
    little-endian octets) and syntaxes the tables do not list give ``application/octet-stream``.
    """
    uid = UID(transfer_syntax_uid)
    for row in COMPRESSED_BULKDATA_MEDIA_TYPES:
        if row.transfer_syntax_uid == uid:
            return row.media_type
    return OCTET_STREAM


def transfer_syntaxes(media_type: str) -> tuple[str, ...]:
    """The transfer syntaxes PS3.18 allows for a bulk data or instance media type, default first."""
    wanted = normalize_media_type(media_type)
    rows = [row for row in INSTANCE_MEDIA_TYPES + BULKDATA_MEDIA_TYPES if row.media_type == wanted]
    rows.sort(key=lambda row: not row.default)
    return tuple(str(row.transfer_syntax_uid) for row in rows)


def default_transfer_syntax(media_type: str) -> str | None:
    """The default ("D") transfer syntax of a bulk data or instance media type; ``None`` if not one."""
    syntaxes = transfer_syntaxes(media_type)
    return syntaxes[0] if syntaxes else None


def is_allowed(media_type: str, transfer_syntax_uid: str) -> bool:
    """Whether PS3.18 pairs this media type with this transfer syntax."""
    return UID(transfer_syntax_uid) in transfer_syntaxes(media_type)


def rendered_media_types(resource_category: str) -> tuple[str, ...]:
    """Rendered media types of a resource category ("single-frame image", "multi-frame image", ...)."""
    return tuple(
        row.media_type for row in RENDERED_MEDIA_TYPE_TABLE if row.resource_category == resource_category
    )
