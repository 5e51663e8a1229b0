import pytest

from skypacs.errors import InvalidUID
from skypacs.uids import check_uid, is_valid_uid


@pytest.mark.parametrize("uid", ["1.2", "1.2.840.10008.5.1.4.1.1.2", "0.0", "2.25.1234567890123456789", "1." + "2" * 62])
def test_valid(uid: str) -> None:
    assert is_valid_uid(uid)


@pytest.mark.parametrize(
    "uid", ["", "1", "1.", ".1", "1..2", "1.02", "1.2.a", "1.2 ", " 1.2", "1.2\x00", "1." + "2" * 63, "1,2"]
)
def test_invalid(uid: str) -> None:
    assert not is_valid_uid(uid)


def test_check_uid_names_the_attribute() -> None:
    with pytest.raises(InvalidUID, match="StudyInstanceUID 1.2.abc is not a valid UID"):
        check_uid("StudyInstanceUID", "1.2.abc")
