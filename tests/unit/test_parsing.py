import io

import pydicom
import pytest

from skypacs.adapters.fs import FileSystemObjectStore
from skypacs.errors import MissingAttribute, NotDicom, UnsupportedSOPClass
from skypacs.parsing import BLOCK_SIZE, RangedReader, parse_bytes, parse_stored_object
from tests.conftest import dicom_file
from tests.dicom_files import SAMPLES, clone


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.what)
def test_every_sample_parses_with_identity_and_key(sample) -> None:  # type: ignore[no-untyped-def]
    data = dicom_file(sample.name).read_bytes()
    parsed = parse_bytes(data)
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    assert parsed.SOPInstanceUID == ds.SOPInstanceUID
    assert parsed.key.endswith(f"/instances/{ds.SOPInstanceUID}.dcm")
    assert parsed.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    assert "7FE00010" not in parsed.metadata or "Value" not in parsed.metadata["7FE00010"]


def test_header_read_from_the_store_fetches_only_the_header(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = FileSystemObjectStore(tmp_path)
    data = dicom_file("color3d_jpeg_baseline.dcm").read_bytes()  # 6 MB, 120 JPEG frames
    info = store.put("x/us.dcm", data)
    reader = RangedReader(store, "x/us.dcm", info.size)
    parsed = parse_stored_object(store, "x/us.dcm", info.size)
    assert parsed.SOPClassUID == "1.2.840.10008.5.1.4.1.1.3.1"
    # One block for the header and one for the tail check, not 6 MB.
    stream = io.BufferedReader(reader)
    from skypacs.parsing import read_header

    read_header(stream, info.size)
    assert reader.bytes_fetched <= 3 * BLOCK_SIZE < len(data)


def test_not_dicom() -> None:
    with pytest.raises(NotDicom, match="not a DICOM Part 10 object"):
        parse_bytes(b"hello world" * 100)


def test_raw_dataset_without_file_meta_is_refused() -> None:
    with pytest.raises(NotDicom):
        parse_bytes(dicom_file("no_meta.dcm").read_bytes())


def test_truncated_pixel_data() -> None:
    with pytest.raises(NotDicom, match="truncated"):
        parse_bytes(dicom_file("MR_truncated.dcm").read_bytes())


def test_truncated_sequence_without_pixel_data() -> None:
    with pytest.raises(NotDicom, match=r"truncated: element \(300A,00B0\)"):
        parse_bytes(dicom_file("rtplan_truncated.dcm").read_bytes())


def test_truncated_encapsulated_pixel_data() -> None:
    data = dicom_file("JPEG2000.dcm").read_bytes()
    with pytest.raises(NotDicom, match="sequence delimiter"):
        parse_bytes(data[:-100])


def test_missing_series_uid() -> None:
    data = clone("CT_small.dcm", SeriesInstanceUID="")
    with pytest.raises(MissingAttribute, match="SeriesInstanceUID"):
        parse_bytes(data)


def test_non_storage_sop_class_unless_configured() -> None:
    data = clone("CT_small.dcm", SOPClassUID="1.2.3.4.5.6.999")
    with pytest.raises(UnsupportedSOPClass, match="1.2.3.4.5.6.999"):
        parse_bytes(data)
    assert parse_bytes(data, extra_sop_classes=frozenset({"1.2.3.4.5.6.999"})).SOPClassUID == "1.2.3.4.5.6.999"


def test_file_meta_naming_another_instance_is_accepted_dataset_wins() -> None:
    parsed = parse_bytes(dicom_file("rtplan.dcm").read_bytes())
    assert parsed.SOPInstanceUID == "1.2.777.777.77.7.7777.7777.20030903150023"
