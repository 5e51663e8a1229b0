"""The ObjectStore contract: every adapter passes this suite, supplying only the ``object_store`` fixture."""

from __future__ import annotations

import hashlib
import io

import pytest

from skypacs.errors import NotFound
from skypacs.ports import ObjectStore

KEY = "studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5.dcm"


class ObjectStoreContract:
    def test_put_then_read_back_the_same_bytes(self, object_store: ObjectStore) -> None:
        data = b"DICM" * 1000
        info = object_store.put(KEY, data)
        assert info.key == KEY and info.size == len(data)
        assert info.etag == hashlib.md5(data).hexdigest()
        with object_store.open(KEY) as stream:
            assert stream.read() == data

    def test_put_from_a_stream(self, object_store: ObjectStore) -> None:
        data = bytes(range(256)) * 10_000
        info = object_store.put(KEY, io.BytesIO(data))
        assert info.size == len(data)
        assert object_store.head(KEY) == info

    def test_head_reports_size_and_etag(self, object_store: ObjectStore) -> None:
        info = object_store.put(KEY, b"abc")
        assert object_store.head(KEY) == info

    def test_equal_bytes_give_equal_etags_and_different_bytes_differ(self, object_store: ObjectStore) -> None:
        a = object_store.put("a/x.dcm", b"same")
        b = object_store.put("b/x.dcm", b"same")
        c = object_store.put("c/x.dcm", b"other")
        assert a.etag == b.etag != c.etag

    def test_overwrite_replaces_the_whole_object(self, object_store: ObjectStore) -> None:
        object_store.put(KEY, b"x" * 5000)
        object_store.put(KEY, b"short")
        assert object_store.read_range(KEY, 0, 10_000) == b"short"

    def test_read_range(self, object_store: ObjectStore) -> None:
        object_store.put(KEY, b"0123456789")
        assert object_store.read_range(KEY, 2, 3) == b"234"
        assert object_store.read_range(KEY, 8, 100) == b"89"
        assert object_store.read_range(KEY, 10, 5) == b""

    def test_missing_object_is_not_found(self, object_store: ObjectStore) -> None:
        with pytest.raises(NotFound):
            object_store.head("nothing/here.dcm")
        with pytest.raises(NotFound):
            object_store.open("nothing/here.dcm")
        with pytest.raises(NotFound):
            object_store.read_range("nothing/here.dcm", 0, 1)

    def test_delete_is_idempotent(self, object_store: ObjectStore) -> None:
        object_store.put(KEY, b"x")
        object_store.delete(KEY)
        object_store.delete(KEY)
        with pytest.raises(NotFound):
            object_store.head(KEY)

    def test_move(self, object_store: ObjectStore) -> None:
        object_store.put(KEY, b"payload")
        info = object_store.move(KEY, "quarantine/1/x.dcm")
        assert info.key == "quarantine/1/x.dcm" and info.size == 7
        assert object_store.read_range("quarantine/1/x.dcm", 0, 100) == b"payload"
        with pytest.raises(NotFound):
            object_store.head(KEY)

    def test_move_of_a_missing_object_is_not_found(self, object_store: ObjectStore) -> None:
        with pytest.raises(NotFound):
            object_store.move("nothing/here.dcm", "quarantine/1/x.dcm")

    def test_list_by_prefix(self, object_store: ObjectStore) -> None:
        for key in ("studies/1/a.dcm", "studies/1/b.dcm", "studies/2/c.dcm", "quarantine/q/d.dcm"):
            object_store.put(key, key.encode())
        assert [o.key for o in object_store.list("studies/1/")] == ["studies/1/a.dcm", "studies/1/b.dcm"]
        assert [o.key for o in object_store.list("studies/")] == [
            "studies/1/a.dcm",
            "studies/1/b.dcm",
            "studies/2/c.dcm",
        ]
        assert {o.size for o in object_store.list("quarantine/")} == {len(b"quarantine/q/d.dcm")}
