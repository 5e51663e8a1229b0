"""ObjectStore on a local filesystem, for the embedded archive.

Writes are atomic and durable: bytes go to a temporary file in the target's directory, are fsync'd,
then renamed over the key (and the directory fsync'd), so a reader never sees a partial object and a
crash never leaves one behind as if stored. Temporary files carry a ``.tmp-`` prefix; a crash can leave
one, and :meth:`FileSystemObjectStore.remove_stale_temporaries` clears them at start-up.

Keys map to paths under the root; keys containing ``..``, absolute paths or backslashes are refused.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from skypacs.errors import BackendError, NotFound
from skypacs.ports import ObjectInfo

_TMP_PREFIX = ".tmp-"
_COPY_CHUNK = 1024 * 1024


class FileSystemObjectStore:
    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"invalid object key {key!r}")
        if parts[-1].startswith(_TMP_PREFIX):
            raise ValueError(f"object key {key!r} uses the reserved temporary prefix")
        return self.root.joinpath(*parts)

    def put(self, key: str, data: bytes | BinaryIO) -> ObjectInfo:
        path = self._path(key)
        digest = hashlib.md5(usedforsecurity=False)
        size = 0
        try:
            fd, tmp_name = _create_temporary(path.parent)
            try:
                with os.fdopen(fd, "wb") as tmp:
                    if isinstance(data, (bytes, bytearray, memoryview)):
                        tmp.write(data)
                        digest.update(data)
                        size = len(data)
                    else:
                        while chunk := data.read(_COPY_CHUNK):
                            tmp.write(chunk)
                            digest.update(chunk)
                            size += len(chunk)
                    tmp.flush()
                    if self._fsync:
                        os.fsync(tmp.fileno())
                os.replace(tmp_name, path)
            except BaseException:
                _unlink_quietly(tmp_name)
                raise
            if self._fsync:
                _fsync_directory(path.parent)
        except OSError as exc:
            raise BackendError(f"cannot write object {key}: {exc.strerror or exc}") from exc
        return ObjectInfo(key=key, size=size, etag=digest.hexdigest())

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError as exc:
            raise NotFound(f"no object {key}") from exc
        except OSError as exc:
            raise BackendError(f"cannot read object {key}: {exc.strerror or exc}") from exc

    def read_range(self, key: str, start: int, length: int) -> bytes:
        with self.open(key) as stream:
            stream.seek(start)
            return stream.read(length)

    def head(self, key: str) -> ObjectInfo:
        digest = hashlib.md5(usedforsecurity=False)
        size = 0
        with self.open(key) as stream:
            while chunk := stream.read(_COPY_CHUNK):
                digest.update(chunk)
                size += len(chunk)
        return ObjectInfo(key=key, size=size, etag=digest.hexdigest())

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise BackendError(f"cannot delete object {key}: {exc.strerror or exc}") from exc
        self._prune_empty_parents(path.parent)

    def move(self, source_key: str, target_key: str) -> ObjectInfo:
        source, target = self._path(source_key), self._path(target_key)
        if not source.exists():
            raise NotFound(f"no object {source_key}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
        except OSError:
            # Different filesystems: copy atomically, then remove the source.
            with self.open(source_key) as stream:
                self.put(target_key, stream)
            self.delete(source_key)
        else:
            if self._fsync:
                _fsync_directory(target.parent)
            self._prune_empty_parents(source.parent)
        return self.head(target_key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in key order; sizes only (etag costs a full read)."""
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            relative_dir = os.path.relpath(dirpath, self.root)
            base = "" if relative_dir == "." else relative_dir.replace(os.sep, "/") + "/"
            if not (base.startswith(prefix) or prefix.startswith(base)):
                dirnames[:] = []
                continue
            for name in sorted(filenames):
                key = base + name
                if name.startswith(_TMP_PREFIX) or not key.startswith(prefix):
                    continue
                try:
                    size = os.stat(os.path.join(dirpath, name)).st_size
                except FileNotFoundError:
                    continue
                yield ObjectInfo(key=key, size=size, etag="")

    def local_path(self, key: str) -> Path:
        """The file behind a key, for callers that can use a path directly (e.g. zero-copy sends)."""
        return self._path(key)

    def remove_stale_temporaries(self) -> int:
        """Delete temporary files left by a crash mid-write; they were never visible as objects."""
        removed = 0
        for dirpath, _dirnames, filenames in os.walk(self.root):
            for name in filenames:
                if name.startswith(_TMP_PREFIX):
                    _unlink_quietly(os.path.join(dirpath, name))
                    removed += 1
        return removed

    def _prune_empty_parents(self, directory: Path) -> None:
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent


def _create_temporary(directory: Path) -> tuple[int, str]:
    # A concurrent delete may prune the freshly made directory before mkstemp runs: make it again.
    for attempt in range(3):
        directory.mkdir(parents=True, exist_ok=True)
        try:
            return tempfile.mkstemp(prefix=_TMP_PREFIX, dir=directory)
        except FileNotFoundError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


