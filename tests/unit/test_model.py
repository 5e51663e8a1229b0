import pydicom
from pydicom.dataset import Dataset

from skypacs.model import BULK_DATA_THRESHOLD, dataset_to_dicom_json, first_value, subset, tag_hex
from tests.conftest import dicom_file


def test_tag_hex() -> None:
    assert tag_hex("StudyInstanceUID") == "0020000D"
    assert tag_hex(0x00100010) == "00100010"
    assert tag_hex("0020000d") == "0020000D"


def test_dicom_json_of_a_real_ct_keeps_attributes_and_references_pixel_data() -> None:
    ds = pydicom.dcmread(dicom_file("CT_small.dcm"))
    js = dataset_to_dicom_json(ds)
    assert js["00080060"] == {"vr": "CS", "Value": ["CT"]}
    assert js["00100010"]["Value"] == [{"Alphabetic": "CompressedSamples^CT1"}]
    assert js["7FE00010"] == {"vr": "OW", "BulkDataURI": "bulkdata/7FE00010"}
    assert first_value(js, "PatientName") == "CompressedSamples^CT1"
    assert first_value(js, "Rows") == 128
    assert first_value(js, "NotThere" if False else "AccessionNumber") in (None, "")


def test_large_binary_values_become_references_and_small_ones_stay_inline() -> None:
    ds = Dataset()
    ds.add_new(0x00091010, "OB", b"\x01" * (BULK_DATA_THRESHOLD + 1))
    ds.add_new(0x00091011, "OB", b"\x01\x02")
    js = dataset_to_dicom_json(ds)
    assert js["00091010"] == {"vr": "OB", "BulkDataURI": "bulkdata/00091010"}
    assert js["00091011"] == {"vr": "OB", "InlineBinary": "AQI="}


def test_sequences_nest_and_bulk_paths_name_the_item() -> None:
    item = Dataset()
    item.add_new(0x00091010, "OB", b"\x00" * 5000)
    item.CodeValue = "T-1234"
    ds = Dataset()
    ds.add_new(0x00400260, "SQ", [item])
    js = dataset_to_dicom_json(ds)
    (encoded,) = js["00400260"]["Value"]
    assert encoded["00080100"]["Value"] == ["T-1234"]
    assert encoded["00091010"]["BulkDataURI"] == "bulkdata/00400260/1/00091010"


def test_deferred_values_are_never_read() -> None:
    """A header read with deferral: large values become references without touching the file."""
    ds = pydicom.dcmread(dicom_file("CT_small.dcm"), stop_before_pixels=True, defer_size=100)
    ds.filename = "/nonexistent/so/any/read/would/fail.dcm"
    js = dataset_to_dicom_json(ds)
    assert js["00431029"] == {"vr": "OB", "BulkDataURI": "bulkdata/00431029"}


def test_subset() -> None:
    js = {"0020000D": {"vr": "UI", "Value": ["1.2"]}, "00080018": {"vr": "UI", "Value": ["1.2.3"]}}
    assert subset(js, frozenset({"0020000D"})) == {"0020000D": {"vr": "UI", "Value": ["1.2"]}}
