"""Transcoding stored objects: every sample to Explicit VR Little Endian, lossless round trips, refusals."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    MPEG2MPML,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from skypacs.errors import CannotTranscode, DamagedObject
from skypacs.imaging.transcode import can_transcode, transcode_dataset, transcode_part10
from tests.conftest import dicom_file
from tests.dicom_files import SAMPLES

PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _read(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def _has_pixels(ds: Dataset) -> bool:
    return any(keyword in ds for keyword in PIXEL_TAGS)


def _metadata(ds: Dataset) -> dict[str, object]:
    """The attributes a user compares, without pixel data and the encoding-dependent ones."""
    result = ds.to_json_dict(bulk_data_threshold=10**9)
    for tag in ("7FE00010", "00280004", "00280006", "00282110"):
        result.pop(tag, None)
    return result


@pytest.mark.parametrize("name", [s.name for s in SAMPLES])
def test_every_sample_to_explicit_little_endian_keeps_its_pixels(name: str) -> None:
    raw = dicom_file(name).read_bytes()
    original = _read(raw)

    out = _read(transcode_part10(raw, ExplicitVRLittleEndian))

    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert out.SOPInstanceUID == original.SOPInstanceUID
    if _has_pixels(original):
        assert not out["PixelData"].is_undefined_length
        np.testing.assert_array_equal(out.pixel_array, original.pixel_array)
    else:
        assert _metadata(out) == _metadata(original)


@pytest.mark.parametrize(
    "target",
    [
        RLELossless,
        JPEGLSLossless,
        JPEGLSNearLossless,
        JPEG2000Lossless,
        JPEG2000,
        ExplicitVRBigEndian,
        ImplicitVRLittleEndian,
        DeflatedExplicitVRLittleEndian,
    ],
)
@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "MR_small_bigendian.dcm", "emri_small.dcm", "US1_UNCR.dcm", "JPEG-LL.dcm"]
)
def test_lossless_round_trips_preserve_pixel_values(name: str, target: str) -> None:
    raw = dicom_file(name).read_bytes()
    original = _read(raw)

    encoded = transcode_part10(raw, target)
    back = _read(transcode_part10(encoded, ExplicitVRLittleEndian))

    assert _read(encoded).file_meta.TransferSyntaxUID == target
    np.testing.assert_array_equal(back.pixel_array, original.pixel_array)
    assert back.SOPInstanceUID == original.SOPInstanceUID


def test_big_endian_output_is_what_a_big_endian_writer_produces() -> None:
    little = dicom_file("MR_small.dcm").read_bytes()
    reference = _read(dicom_file("MR_small_bigendian.dcm").read_bytes())

    big = _read(transcode_part10(little, ExplicitVRBigEndian))

    assert big.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    assert big.PixelData == reference.PixelData
    assert big.Rows == reference.Rows and big.WindowWidth == reference.WindowWidth


def test_decompressing_ybr_jpeg_leaves_a_consistent_lossy_rgb_dataset() -> None:
    raw = dicom_file("SC_rgb_jpeg_dcmtk.dcm").read_bytes()
    original = _read(raw)
    assert original.PhotometricInterpretation == "YBR_FULL"

    out = _read(transcode_part10(raw, ExplicitVRLittleEndian))

    assert out.PhotometricInterpretation == "RGB"
    assert out.PlanarConfiguration == 0
    assert out.LossyImageCompression == "01"
    assert len(out.PixelData) == out.Rows * out.Columns * 3
    np.testing.assert_array_equal(out.pixel_array, original.pixel_array)


def test_multi_frame_jpeg_decompresses_every_frame() -> None:
    raw = dicom_file("color3d_jpeg_baseline.dcm").read_bytes()
    original = _read(raw)

    out = _read(transcode_part10(raw, ExplicitVRLittleEndian))

    assert out.NumberOfFrames == 120
    assert out.PhotometricInterpretation == "RGB"
    for index in (0, 59, 119):
        np.testing.assert_array_equal(
            pydicom.pixels.pixel_array(out, index=index), pydicom.pixels.pixel_array(original, index=index)
        )


def test_same_transfer_syntax_returns_the_same_bytes() -> None:
    raw = dicom_file("JPEG2000.dcm").read_bytes()
    assert transcode_part10(raw, JPEG2000) == raw
    assert transcode_part10(io.BytesIO(raw), JPEG2000) == raw


def test_a_lossless_bitstream_is_relabelled_not_reencoded() -> None:
    raw = dicom_file("MR2_J2KR.dcm").read_bytes()
    original = _read(raw)
    assert original.file_meta.TransferSyntaxUID == JPEG2000Lossless

    out = _read(transcode_part10(raw, JPEG2000))

    assert out.file_meta.TransferSyntaxUID == JPEG2000
    assert out.PixelData == original.PixelData


def test_jpeg_2000_target_is_encoded_reversibly() -> None:
    raw = dicom_file("CT_small.dcm").read_bytes()
    out = _read(transcode_part10(raw, JPEG2000))
    assert out.file_meta.TransferSyntaxUID == JPEG2000
    assert "LossyImageCompression" not in out or out.LossyImageCompression != "01"
    np.testing.assert_array_equal(out.pixel_array, _read(raw).pixel_array)


def test_objects_without_pixel_data_only_change_encoding() -> None:
    raw = dicom_file("test-SR.dcm").read_bytes()
    for target in (JPEGBaseline8Bit, ExplicitVRBigEndian, ImplicitVRLittleEndian):
        out = _read(transcode_part10(raw, target))
        assert out.file_meta.TransferSyntaxUID == target
        assert out.ContentSequence == _read(raw).ContentSequence


def test_transcode_dataset_works_in_place() -> None:
    ds = pydicom.dcmread(dicom_file("emri_small_RLE.dcm"))
    expected = ds.pixel_array.copy()

    result = transcode_dataset(ds, JPEGLSLossless)

    assert result is ds
    assert ds.file_meta.TransferSyntaxUID == JPEGLSLossless
    assert len(list(generate_frames(ds.PixelData, number_of_frames=10))) == 10
    np.testing.assert_array_equal(ds.pixel_array, expected)


def test_no_encoder_is_refused_with_a_clear_message() -> None:
    raw = dicom_file("CT_small.dcm").read_bytes()
    with pytest.raises(CannotTranscode, match="no encoder for JPEG Baseline"):
        transcode_part10(raw, JPEGBaseline8Bit)
    with pytest.raises(CannotTranscode, match="no encoder"):
        transcode_part10(raw, HTJ2K)


def test_no_decoder_is_refused() -> None:
    ds = pydicom.dcmread(dicom_file("CT_small.dcm"))
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 16])
    with pytest.raises(CannotTranscode, match="no decoder"):
        transcode_dataset(ds, ExplicitVRLittleEndian)


def test_pixel_data_the_encoder_cannot_take_is_refused() -> None:
    raw = dicom_file("rtdose.dcm").read_bytes()  # 32-bit samples: beyond RLE/JPEG-LS/JPEG 2000 encoders
    with pytest.raises(CannotTranscode, match="RLE Lossless"):
        transcode_part10(raw, RLELossless)


def test_undecodable_pixel_data_is_a_damaged_object() -> None:
    ds = pydicom.dcmread(dicom_file("SC_rgb_jpeg_dcmtk.dcm"))
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xdb" + b"\x13" * 200])
    with pytest.raises(DamagedObject, match="JPEG Baseline"):
        transcode_dataset(ds, ExplicitVRLittleEndian)


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        (ExplicitVRLittleEndian, ExplicitVRLittleEndian, True),
        (ExplicitVRLittleEndian, ExplicitVRBigEndian, True),
        (DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian, True),
        (JPEGBaseline8Bit, ExplicitVRLittleEndian, True),
        (JPEGBaseline8Bit, JPEGLSLossless, True),
        (ExplicitVRLittleEndian, JPEG2000, True),
        (ExplicitVRLittleEndian, RLELossless, True),
        (JPEGLosslessSV1, JPEGLossless, True),
        (ExplicitVRLittleEndian, JPEGBaseline8Bit, False),
        (ExplicitVRLittleEndian, JPEGLosslessSV1, False),
        (ExplicitVRLittleEndian, HTJ2K, False),
        (MPEG2MPML, ExplicitVRLittleEndian, False),
        (MPEG2MPML, MPEG2MPML, True),
    ],
)
def test_can_transcode_answers_from_the_uids(source: str, target: str, expected: bool) -> None:
    assert can_transcode(source, target) is expected
