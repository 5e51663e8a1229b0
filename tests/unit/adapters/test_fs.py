"""What the filesystem store promises beyond the contract: atomic, crash-safe writes, safe keys."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from skypacs.adapters.fs import FileSystemObjectStore
from skypacs.errors import NotFound


class TransferAborted(Exception):
    pass


class Explodes:
    """A stream that fails half-way, like a connection dropped mid-transfer."""

    def __init__(self) -> None:
        self.calls = 0

    def read(self, size: int = -1) -> bytes:
        self.calls += 1
        if self.calls > 2:
            raise TransferAborted("peer went away")
        return b"x" * 1024


def test_a_failed_write_leaves_no_object_and_no_temporary(tmp_path: Path) -> None:
    store = FileSystemObjectStore(tmp_path)
    with pytest.raises(TransferAborted):
        store.put("a/b.dcm", Explodes())  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        store.head("a/b.dcm")
    assert [p.name for p in (tmp_path / "a").iterdir()] == []


def test_a_failed_overwrite_keeps_the_previous_object_whole(tmp_path: Path) -> None:
    store = FileSystemObjectStore(tmp_path)
    store.put("a/b.dcm", b"previous")
    with pytest.raises(TransferAborted):
        store.put("a/b.dcm", Explodes())  # type: ignore[arg-type]
    assert store.read_range("a/b.dcm", 0, 100) == b"previous"


def test_temporaries_left_by_a_crash_are_invisible_and_cleaned(tmp_path: Path) -> None:
    store = FileSystemObjectStore(tmp_path)
    store.put("studies/1/x.dcm", b"ok")
    (tmp_path / "studies" / "1" / ".tmp-crashed").write_bytes(b"half")
    assert [o.key for o in store.list("studies/")] == ["studies/1/x.dcm"]
    assert store.remove_stale_temporaries() == 1
    assert sorted(os.listdir(tmp_path / "studies" / "1")) == ["x.dcm"]


@pytest.mark.parametrize("key", ["", "/etc/passwd", "../escape.dcm", "a/../../b", "a//b", "a\\b", "a/.tmp-x"])
def test_keys_cannot_escape_the_root(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError):
        FileSystemObjectStore(tmp_path).put(key, b"x")


def test_delete_prunes_empty_folders(tmp_path: Path) -> None:
    store = FileSystemObjectStore(tmp_path)
    store.put("studies/1/series/2/instances/3.dcm", b"x")
    store.delete("studies/1/series/2/instances/3.dcm")
    assert list(tmp_path.iterdir()) == []
