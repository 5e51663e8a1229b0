"""Rendered images and thumbnails: what a viewer shows, decoded back with Pillow."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from skypacs.errors import CannotTranscode, InvalidQuery, NotFound
from skypacs.imaging.render import (
    RENDERED_MEDIA_TYPES,
    RenderOptions,
    Viewport,
    Window,
    render,
    thumbnail,
)
from tests.conftest import dicom_file
from tests.dicom_files import SAMPLES

NO_PIXELS = {"test-SR.dcm", "rtplan.dcm", "waveform_ecg.dcm"}
IMAGE_SAMPLES = [s.name for s in SAMPLES if s.name not in NO_PIXELS]


def _data(name: str) -> bytes:
    return dicom_file(name).read_bytes()


def _rendered(
    data: bytes, media_type: str = "image/png", frame: int | None = None, **query: str
) -> np.ndarray:
    options = RenderOptions.from_query(list(query.items()))
    image = Image.open(io.BytesIO(render(io.BytesIO(data), frame, media_type, options)))
    assert image.format == {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF"}[media_type]
    return np.asarray(image.convert("RGB") if image.mode == "P" else image)


def _changed(name: str, **changes: object) -> bytes:
    ds = pydicom.dcmread(dicom_file(name))
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize("media_type", RENDERED_MEDIA_TYPES)
@pytest.mark.parametrize("name", IMAGE_SAMPLES)
def test_every_image_kind_renders_at_its_size(name: str, media_type: str) -> None:
    header = pydicom.dcmread(dicom_file(name), stop_before_pixels=True)

    pixels = _rendered(_data(name), media_type)

    assert pixels.shape[:2] == (header.Rows, header.Columns)
    assert pixels.std() > 5, "not one flat grey"


def test_window_parameter_changes_the_output() -> None:
    data = _data("CT_small.dcm")
    soft = _rendered(data, window="40,400,linear")
    bone = _rendered(data, window="500,2000,linear")
    assert not np.array_equal(soft, bone)
    assert (soft == 255).mean() > (bone == 255).mean()  # the narrow window saturates more


def test_window_functions_differ() -> None:
    data = _data("CT_small.dcm")
    linear = _rendered(data, window="100,400,linear")
    exact = _rendered(data, window="100,400,linear-exact")
    sigmoid = _rendered(data, window="100,400,sigmoid")
    assert not np.array_equal(linear, sigmoid)
    assert np.abs(linear.astype(int) - exact.astype(int)).max() <= 2  # nearly the same curve


def test_dataset_window_is_the_default() -> None:
    data = _data("MR_small.dcm")  # Window Center 600, Width 1600
    assert np.array_equal(_rendered(data), _rendered(data, window="600,1600,linear"))


def test_enhanced_multi_frame_uses_its_functional_group_window() -> None:
    data = _data("eCT_Supplemental.dcm")
    ds = pydicom.dcmread(dicom_file("eCT_Supplemental.dcm"), stop_before_pixels=True)
    voi = ds.SharedFunctionalGroupsSequence[0].FrameVOILUTSequence[0]
    center, width = voi.WindowCenter, voi.WindowWidth
    center = center[0] if isinstance(center, pydicom.multival.MultiValue) else center
    width = width[0] if isinstance(width, pydicom.multival.MultiValue) else width
    assert np.array_equal(
        _rendered(data, frame=2), _rendered(data, frame=2, window=f"{center},{width},linear")
    )


def test_monochrome1_is_inverted() -> None:
    normal = _rendered(_data("CT_small.dcm"), window="40,400")
    inverted = _rendered(_changed("CT_small.dcm", PhotometricInterpretation="MONOCHROME1"), window="40,400")
    assert np.array_equal(inverted, 255 - normal)


def test_colour_images_render_in_colour() -> None:
    for name in ("US1_UNCR.dcm", "SC_rgb_jpeg_dcmtk.dcm", "color3d_jpeg_baseline.dcm"):
        pixels = _rendered(_data(name))
        assert pixels.ndim == 3 and pixels.shape[2] == 3
        assert np.abs(pixels[..., 0].astype(int) - pixels[..., 2].astype(int)).max() > 50, name


def test_ybr_jpeg_renders_the_same_colours_as_pydicom() -> None:
    expected = pydicom.dcmread(dicom_file("SC_rgb_jpeg_dcmtk.dcm")).pixel_array
    assert np.array_equal(_rendered(_data("SC_rgb_jpeg_dcmtk.dcm")), expected)


def test_palette_colour() -> None:
    ds = pydicom.dcmread(dicom_file("OT-PAL-8-face.dcm"), force=True)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)

    pixels = _rendered(out.getvalue())

    assert pixels.shape == (ds.Rows, ds.Columns, 3)
    assert np.abs(pixels[..., 0].astype(int) - pixels[..., 2].astype(int)).max() > 50


def test_frames_of_a_multi_frame_instance() -> None:
    data = _data("emri_small_RLE.dcm")
    first, fifth = _rendered(data, frame=1), _rendered(data, frame=5)
    assert not np.array_equal(first, fifth)
    assert np.array_equal(_rendered(data, frame=None), first)  # instance rendering is frame 1
    with pytest.raises(NotFound, match="10 frame"):
        _rendered(data, frame=11)
    with pytest.raises(InvalidQuery):
        _rendered(data, frame=0)


def test_viewport_scales_with_aspect_preserved() -> None:
    data = _data("693_UNCR.dcm")  # 512 x 512
    assert _rendered(data, viewport="64,32").shape == (32, 32)
    assert _rendered(data, viewport="1024,2048").shape == (1024, 1024)


def test_viewport_source_region_and_flip() -> None:
    data = _data("693_UNCR.dcm")
    region = _rendered(data, viewport="100,100,0,0,256,128")
    assert region.shape == (50, 100)
    flipped = _rendered(data, viewport="256,128,256,0,-256,128")
    assert np.array_equal(flipped, _rendered(data, viewport="256,128,0,0,256,128")[:, ::-1])


def test_quality_changes_jpeg_size() -> None:
    data = _data("693_UNCR.dcm")
    low = render(io.BytesIO(data), None, "image/jpeg", RenderOptions.from_query([("quality", "10")]))
    high = render(io.BytesIO(data), None, "image/jpeg", RenderOptions.from_query([("quality", "95")]))
    assert len(low) < len(high) / 2


def test_thumbnail_fits_in_128() -> None:
    square = Image.open(io.BytesIO(thumbnail(io.BytesIO(_data("693_UNCR.dcm")), "image/jpeg")))
    wide = Image.open(io.BytesIO(thumbnail(io.BytesIO(_data("US1_UNCR.dcm")), "image/png")))
    tall = Image.open(io.BytesIO(thumbnail(io.BytesIO(_data("JPEG2000.dcm")), "image/jpeg")))
    assert square.size == (128, 128)
    assert wide.size == (128, 96)
    assert tall.size == (32, 128)


def test_thumbnail_viewport() -> None:
    options = RenderOptions.from_query([("viewport", "64,64")])
    image = Image.open(io.BytesIO(thumbnail(io.BytesIO(_data("US1_UNCR.dcm")), "image/png", options)))
    assert image.size == (64, 48)


@pytest.mark.parametrize("name", sorted(NO_PIXELS))
def test_non_images_cannot_be_rendered(name: str) -> None:
    with pytest.raises(CannotTranscode, match="no pixel data"):
        render(io.BytesIO(_data(name)), None, "image/jpeg", RenderOptions())


def test_unsupported_media_type() -> None:
    with pytest.raises(CannotTranscode, match="image/tiff"):
        render(io.BytesIO(_data("CT_small.dcm")), None, "image/tiff", RenderOptions())


def test_from_query_parses_the_parameters() -> None:
    options = RenderOptions.from_query(
        [("window", "40,400,SIGMOID"), ("viewport", "512,256,10,20,100,-50"), ("quality", "75"),
         ("annotation", "patient"), ("charset", "UTF-8")]
    )  # fmt: skip
    assert options.window == Window(40.0, 400.0, "sigmoid")
    assert options.viewport == Viewport(512, 256, 10.0, 20.0, 100.0, -50.0)
    assert options.quality == 75
    assert RenderOptions.from_query([]) == RenderOptions()
    assert RenderOptions.from_query([("window", "40,400")]).window == Window(40.0, 400.0, "linear")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("window", "abc,400,linear"),
        ("window", "40"),
        ("window", "40,0,linear"),
        ("window", "40,400,gamma"),
        ("window", "40,nan,linear"),
        ("viewport", "0,10"),
        ("viewport", "10"),
        ("viewport", "10,10,0,0,0,10"),
        ("viewport", "-5,10"),
        ("quality", "0"),
        ("quality", "101"),
        ("quality", "high"),
    ],
)
def test_from_query_rejects_bad_values_clearly(name: str, value: str) -> None:
    with pytest.raises(InvalidQuery, match=name):
        RenderOptions.from_query([(name, value)])
