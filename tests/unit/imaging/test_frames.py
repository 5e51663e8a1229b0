"""Frames of stored instances read from a real filesystem store, checked against pydicom's own decode."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels.utils import pack_bits, pixel_array
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from skypacs.adapters.fs import FileSystemObjectStore
from skypacs.errors import DamagedObject, InvalidQuery, NotFound
from skypacs.imaging import frames as frames_module
from skypacs.imaging.frames import Frame, decode_frames, number_of_frames, read_frames
from skypacs.ports import ObjectInfo
from tests.conftest import dicom_file
from tests.dicom_files import SAMPLES

NO_PIXELS = {"test-SR.dcm", "rtplan.dcm", "waveform_ecg.dcm"}
IMAGE_SAMPLES = [s.name for s in SAMPLES if s.name not in NO_PIXELS]


class CountingStore(FileSystemObjectStore):
    """A filesystem store that counts ranged reads, as S3 would bill round trips."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, fsync=False)
        self.reads = 0
        self.bytes_read = 0

    def read_range(self, key: str, start: int, length: int) -> bytes:
        data = super().read_range(key, start, length)
        self.reads += 1
        self.bytes_read += len(data)
        return data


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    return CountingStore(tmp_path / "objects")


def _put(store: FileSystemObjectStore, name: str, data: bytes | None = None) -> tuple[str, int]:
    data = dicom_file(name).read_bytes() if data is None else data
    info: ObjectInfo = store.put(f"objects/{name}", data)
    return info.key, info.size


def _to_bytes(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _count(ds: Dataset) -> int:
    return int(ds.get("NumberOfFrames") or 1)


def _some(n: int) -> list[int]:
    return sorted({1, (n + 1) // 2, n})


def _stored_frame(ds: Dataset, number: int) -> bytes:
    """What pydicom says frame ``number`` is, as stored: bitstream or little-endian native bytes."""
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        return list(generate_frames(ds.PixelData, number_of_frames=_count(ds)))[number - 1]
    values = pixel_array(ds, index=number - 1, raw=True)
    return values.astype(values.dtype.newbyteorder("<")).tobytes()


@pytest.mark.parametrize("name", IMAGE_SAMPLES)
def test_frames_as_stored_match_pydicom(store: CountingStore, name: str) -> None:
    key, size = _put(store, name)
    ds = pydicom.dcmread(dicom_file(name))
    numbers = _some(_count(ds))

    frames = read_frames(store, key, size, numbers)

    assert [f.number for f in frames] == numbers
    syntax = ds.file_meta.TransferSyntaxUID
    for frame in frames:
        assert frame.transfer_syntax_uid == (syntax if syntax.is_compressed else ExplicitVRLittleEndian)
        assert frame.data == _stored_frame(ds, frame.number)


@pytest.mark.parametrize("name", IMAGE_SAMPLES)
def test_decoded_frames_match_pydicom(store: CountingStore, name: str) -> None:
    key, size = _put(store, name)
    ds = pydicom.dcmread(dicom_file(name))
    numbers = _some(_count(ds))

    frames = decode_frames(store, key, size, numbers)

    for frame in frames:
        assert frame.transfer_syntax_uid == ExplicitVRLittleEndian
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            expected = pixel_array(ds, index=frame.number - 1)  # YBR comes out RGB, as decompress() gives
            assert frame.data == expected.astype(expected.dtype.newbyteorder("<")).tobytes()
        else:
            assert frame.data == _stored_frame(ds, frame.number)


def test_big_endian_frames_are_served_little_endian(store: CountingStore) -> None:
    key, size = _put(store, "MR_small_bigendian.dcm")
    little = pydicom.dcmread(dicom_file("MR_small.dcm"))

    (frame,) = read_frames(store, key, size, [1])

    assert frame.data == little.PixelData


def test_multi_frame_rle_reads_only_the_frames_asked(store: CountingStore) -> None:
    key, size = _put(store, "emri_small_RLE.dcm")
    reference = pydicom.dcmread(dicom_file("emri_small.dcm"))

    frames = decode_frames(store, key, size, [10, 3, 3])

    assert [f.number for f in frames] == [10, 3, 3]
    frame_length = reference.Rows * reference.Columns * 2
    assert frames[0].data == reference.PixelData[9 * frame_length : 10 * frame_length]
    assert frames[1].data == frames[2].data == reference.PixelData[2 * frame_length : 3 * frame_length]


def test_number_of_frames(store: CountingStore) -> None:
    assert number_of_frames(store, *_put(store, "color3d_jpeg_baseline.dcm")) == 120
    assert number_of_frames(store, *_put(store, "rtdose.dcm")) == 15
    assert number_of_frames(store, *_put(store, "CT_small.dcm")) == 1


def test_all_120_jpeg_frames_without_offset_table(store: CountingStore) -> None:
    key, size = _put(store, "color3d_jpeg_baseline.dcm")
    ds = pydicom.dcmread(dicom_file("color3d_jpeg_baseline.dcm"))
    expected = list(generate_frames(ds.PixelData, number_of_frames=120))

    frames = read_frames(store, key, size, list(range(1, 121)))

    assert [f.data for f in frames] == expected
    assert all(f.data.startswith(b"\xff\xd8") for f in frames)


def test_walking_fragment_headers_of_a_large_object(
    store: CountingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(frames_module, "WHOLE_OBJECT_LIMIT", 0)
    monkeypatch.setattr(frames_module, "WHOLE_FRAGMENTS_LIMIT", 0)
    key, size = _put(store, "color3d_jpeg_baseline.dcm")
    ds = pydicom.dcmread(dicom_file("color3d_jpeg_baseline.dcm"))
    expected = list(generate_frames(ds.PixelData, number_of_frames=120))

    frames = read_frames(store, key, size, [1, 77, 120])

    assert [f.data for f in frames] == [expected[0], expected[76], expected[119]]
    assert store.bytes_read < size / 4  # headers and three frames, not the whole 6 MB


def test_basic_offset_table_reads_a_fraction_of_a_large_object(store: CountingStore) -> None:
    ds = pydicom.dcmread(dicom_file("color3d_jpeg_baseline.dcm"))
    expected = list(generate_frames(ds.PixelData, number_of_frames=120))
    ds.PixelData = encapsulate(expected, has_bot=True)
    key, size = _put(store, "bot.dcm", _to_bytes(ds))
    store.reads = store.bytes_read = 0

    frames = read_frames(store, key, size, [60, 61, 120])

    assert [f.data for f in frames] == [expected[59], expected[60], expected[119]]
    assert store.reads <= 3  # header block, frames 60-61 in one read, frame 120
    assert store.bytes_read < 3 * 64 * 1024 + 4 * len(expected[0])


def test_extended_offset_table(store: CountingStore) -> None:
    ds = pydicom.dcmread(dicom_file("emri_small.dcm"))
    expected = ds.pixel_array.copy()
    ds.compress(RLELossless, encapsulate_ext=True, generate_instance_uid=False)
    assert "ExtendedOffsetTable" in ds
    key, size = _put(store, "eot.dcm", _to_bytes(ds))

    frames = decode_frames(store, key, size, [1, 7, 10])

    for frame in frames:
        assert frame.data == expected[frame.number - 1].tobytes()


def test_frames_split_over_several_fragments_without_offset_table(store: CountingStore) -> None:
    ds = pydicom.dcmread(dicom_file("color3d_jpeg_baseline.dcm"))
    bitstreams = list(generate_frames(ds.PixelData, number_of_frames=120))[:5]
    ds.PixelData = encapsulate(bitstreams, fragments_per_frame=3, has_bot=False)
    ds.NumberOfFrames = 5
    key, size = _put(store, "fragmented.dcm", _to_bytes(ds))

    frames = read_frames(store, key, size, [1, 3, 5])

    assert [f.data for f in frames] == [bitstreams[0], bitstreams[2], bitstreams[4]]


def test_bit_packed_frames_that_do_not_start_on_a_byte(store: CountingStore) -> None:
    pattern = np.random.default_rng(7).integers(0, 2, size=(4, 3, 3), dtype=np.uint8)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Rows = ds.Columns = 3
    ds.NumberOfFrames = 4
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 1
    ds.HighBit = ds.PixelRepresentation = 0
    ds.PixelData = pack_bits(pattern)
    key, size = _put(store, "bits.dcm", _to_bytes(ds))

    frames = read_frames(store, key, size, [1, 2, 4])

    for frame in frames:  # 9 bits a frame: frame 2 starts at bit 1 of byte 1
        assert frame.data == pack_bits(pattern[frame.number - 1])


def test_float_pixel_data(store: CountingStore) -> None:
    values = np.arange(2 * 4 * 5, dtype="<f4").reshape(2, 4, 5) / 3
    ds = pydicom.dcmread(dicom_file("CT_small.dcm"))
    del ds.PixelData
    for keyword in ("BitsStored", "HighBit", "PixelRepresentation", "RescaleSlope", "RescaleIntercept"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.Rows, ds.Columns, ds.NumberOfFrames, ds.BitsAllocated = 4, 5, 2, 32
    ds.FloatPixelData = values.tobytes()
    key, size = _put(store, "float.dcm", _to_bytes(ds))

    (frame,) = read_frames(store, key, size, [2])

    assert frame.data == values[1].tobytes()


def test_single_frame_read_of_a_typical_ct_is_one_request(store: CountingStore) -> None:
    key, size = _put(store, "693_UNCR.dcm")
    store.reads = 0
    (frame,) = read_frames(store, key, size, [1])
    assert store.reads == 1
    assert len(frame.data) == 512 * 512 * 2


def test_large_native_object_reads_header_block_and_frame_only(store: CountingStore) -> None:
    key, size = _put(store, "eCT_Supplemental.dcm")
    assert size > frames_module.WHOLE_OBJECT_LIMIT
    store.reads = store.bytes_read = 0

    (frame,) = read_frames(store, key, size, [2])

    assert len(frame.data) == 512 * 512 * 2
    assert store.reads <= 3
    assert store.bytes_read < size * 0.75


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_frame_numbers_from_one(store: CountingStore, bad: object) -> None:
    key, size = _put(store, "emri_small.dcm")
    with pytest.raises(InvalidQuery):
        read_frames(store, key, size, [1, bad])  # type: ignore[list-item]


def test_no_frame_numbers_is_invalid(store: CountingStore) -> None:
    with pytest.raises(InvalidQuery):
        read_frames(store, *_put(store, "emri_small.dcm"), [])


def test_frame_beyond_number_of_frames_names_the_count(store: CountingStore) -> None:
    key, size = _put(store, "emri_small.dcm")
    with pytest.raises(NotFound, match="10 frame"):
        read_frames(store, key, size, [11])
    with pytest.raises(NotFound, match="1 frame"):
        decode_frames(store, *_put(store, "CT_small.dcm"), [2])


@pytest.mark.parametrize("name", sorted(NO_PIXELS))
def test_instance_without_pixel_data(store: CountingStore, name: str) -> None:
    with pytest.raises(NotFound, match="no pixel data"):
        read_frames(store, *_put(store, name), [1])


@pytest.mark.parametrize(
    ("name", "frame"),
    [
        ("CT_small.dcm", 1),
        ("693_UNCR.dcm", 1),
        ("emri_small.dcm", 1),
        ("emri_small_RLE.dcm", 10),
        ("color3d_jpeg_baseline.dcm", 1),
        ("JPEG2000.dcm", 1),
        ("MR_small_bigendian.dcm", 1),
        ("image_dfl.dcm", 1),
    ],
)
def test_truncated_object_is_damaged(store: CountingStore, name: str, frame: int) -> None:
    data = dicom_file(name).read_bytes()[:-1000]
    key, size = _put(store, name, data)
    with pytest.raises(DamagedObject):
        read_frames(store, key, size, [frame])
    with pytest.raises(DamagedObject):
        decode_frames(store, key, size, [frame])


def test_frame_is_a_value_object() -> None:
    frame = Frame(1, b"\x00\x01", ExplicitVRLittleEndian)
    assert frame == Frame(1, b"\x00\x01", ExplicitVRLittleEndian)
    with pytest.raises(AttributeError):
        frame.number = 2  # type: ignore[misc]
