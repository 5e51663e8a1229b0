"""Bulk import of files and folders into the embedded archive (``skypacs import``).

Files are read, validated and stored through the same StoreService as C-STORE, then ingested inline
so that the summary can say what happened to each. Work runs in a process pool (parsing is CPU-bound
and the GIL would serialize threads). A file the archive refuses stays where it is on disk: the
summary names it with the reason, and nothing is copied to quarantine.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from skypacs.config import Settings
from skypacs.errors import BackendError, InvalidObject
from skypacs.parsing import parse_bytes

FileOutcome = Literal["stored", "replaced", "already present", "rejected", "failed"]


@dataclass(frozen=True)
class FileResult:
    path: str
    outcome: FileOutcome
    reason: str = ""
    message: str = ""
    key: str = ""


@dataclass
class ImportSummary:
    counts: Counter[str] = field(default_factory=Counter)
    rejected: list[FileResult] = field(default_factory=list)

    def add(self, result: FileResult) -> None:
        self.counts[result.outcome] += 1
        if result.outcome in ("rejected", "failed"):
            self.rejected.append(result)

    @property
    def ok(self) -> bool:
        return not self.rejected


def find_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Every regular file under ``paths``, recursively, in a stable order; hidden entries skipped."""
    for root in paths:
        root = Path(root)
        if root.is_file():
            yield root
            continue
        if not root.is_dir():
            raise FileNotFoundError(f"{root} is neither a file nor a folder")
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if not name.startswith("."):
                    yield Path(dirpath) / name


_archive = None


def _init_worker(settings: Settings) -> None:
    global _archive
    from skypacs.embedded import EmbeddedArchive

    _archive = EmbeddedArchive(settings)


def import_file(path: str) -> FileResult:
    """Store and ingest one file (runs in a pool worker with its own archive adapters)."""
    archive = _archive
    assert archive is not None, "worker not initialised"
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return FileResult(path, "failed", "unreadable", exc.strerror or str(exc))
    try:
        parsed = parse_bytes(data, extra_sop_classes=archive.settings.extra_sop_classes)
        existing = archive.catalog.get_instance(parsed.SOPInstanceUID)
        if (
            existing is not None
            and existing.key == parsed.key
            and existing.etag == hashlib.md5(data, usedforsecurity=False).hexdigest()
        ):
            return FileResult(path, "already present", key=parsed.key)
        receipt = archive.store_service.commit(parsed, data)
        result = archive.ingest_service.ingest_parsed(parsed, receipt.info)
        if receipt.queue_id is not None:
            archive.queue.ack([receipt.queue_id])
    except InvalidObject as exc:
        return FileResult(path, "rejected", exc.reason, str(exc))
    except BackendError as exc:
        return FileResult(path, "failed", "storage-failure", str(exc))
    if result.outcome == "quarantined":
        return FileResult(path, "rejected", result.reason or "", result.message or "")
    if result.outcome == "unchanged":
        return FileResult(path, "already present", key=parsed.key)
    return FileResult(path, "replaced" if result.outcome == "replaced" else "stored", key=parsed.key)


def import_paths(
    files: list[Path],
    settings: Settings,
    *,
    jobs: int,
    on_result: Callable[[FileResult], None] | None = None,
) -> ImportSummary:
    summary = ImportSummary()
    names = [str(path) for path in files]
    keys: Counter[str] = Counter()

    def collect(results: Iterable[FileResult]) -> None:
        for result in results:
            summary.add(result)
            if result.key:
                keys[result.key] += 1
            if on_result:
                on_result(result)

    if jobs <= 1:
        _init_worker(settings)
        collect(map(import_file, names))
    else:
        chunksize = max(1, min(64, len(names) // (jobs * 8) or 1))
        with ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker, initargs=(settings,)) as pool:
            collect(pool.map(import_file, names, chunksize=chunksize))
    _settle_duplicates([key for key, count in keys.items() if count > 1], settings)
    return summary


def _settle_duplicates(keys: list[str], settings: Settings) -> None:
    """Files sharing a SOP Instance UID may have been written and cataloged by two workers in
    different orders; ingest those keys once more from what the store now holds."""
    if not keys:
        return
    from skypacs.embedded import EmbeddedArchive

    ingest = EmbeddedArchive(settings).ingest_service
    for key in keys:
        ingest.ingest(key)
