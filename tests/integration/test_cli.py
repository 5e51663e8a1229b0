"""The ``skypacs`` command as a user types it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from skypacs.config import Settings
from skypacs.embedded import EmbeddedArchive
from skypacs.errors import NotDicom
from tests.conftest import copy_testdata, dicom_file
from tests.dicom_files import SAMPLES, identity


def skypacs(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "skypacs.cli", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.parametrize("command", [[], ["serve"], ["import"], ["quarantine", "list"], ["queue", "status"]])
def test_help_explains_itself(command: list[str]) -> None:
    result = skypacs(*command, "--help")
    assert result.returncode == 0
    assert "usage: skypacs" in result.stdout and len(result.stdout) > 300


def test_import_folder_then_reimport(tmp_path: Path) -> None:
    source = tmp_path / "incoming"
    good = copy_testdata([s.name for s in SAMPLES], source / "nested" / "deeper")
    (source / "notes.txt").write_text("not a DICOM file")
    (source / "MR_truncated.dcm").write_bytes(dicom_file("MR_truncated.dcm").read_bytes())
    data_dir = tmp_path / "data"

    first = skypacs("import", "--data-dir", str(data_dir), "--jobs", "2", str(source))
    assert first.returncode == 1, first.stderr  # some files were rejected
    total = len(good) + 2
    # Several samples are one instance in different encodings (MR_small in five transfer syntaxes):
    # the later ones are new versions of the same SOP Instance.
    instances = {identity(path)[2] for path in good}
    assert len(instances) < len(good)
    summary = re.search(r"(\d+) files: (\d+) stored, (\d+) replaced, 0 already present, 2 rejected, 0 failed", first.stdout)
    assert summary is not None, first.stdout
    files, stored, replaced = map(int, summary.groups())
    # Two workers may both see a new SOP Instance first; either way every file is accounted for.
    assert files == total and stored + replaced == len(good) and stored >= len(instances)
    assert "notes.txt: cannot-decode" in first.stdout
    assert "MR_truncated.dcm: cannot-decode: object truncated" in first.stdout

    archive = EmbeddedArchive(Settings(data_dir=data_dir))
    assert archive.catalog.count_instances() == len(instances)
    assert archive.queue.counts().pending == 0
    assert archive.catalog.list_quarantine() == []  # refused files stay where they are
    assert len(archive.catalog.list_replacements()) >= replaced  # settling a race records one more
    stored = len(instances)
    originals = {path.read_bytes() for path in good}
    for sop in instances:
        record = archive.catalog.get_instance(sop)
        assert record is not None
        kept = archive.store.local_path(record.key).read_bytes()
        assert kept in originals  # stored exactly as one of the files, never re-encoded
        assert archive.store.head(record.key).etag == record.etag  # the catalog describes what is kept
        assert archive.index.get_document(record.SOPInstanceUID) == record.metadata

    unique = tmp_path / "unique"
    unique.mkdir()
    for path in good:
        if identity(path)[2] in instances:
            instances.discard(identity(path)[2])
            (unique / path.name).write_bytes(archive.store.local_path(archive.catalog.get_instance(identity(path)[2]).key).read_bytes())  # type: ignore[union-attr]
    again = skypacs("import", "--data-dir", str(data_dir), str(unique))
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{stored} already present" in again.stdout


def test_import_of_a_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    result = skypacs("import", "--data-dir", str(tmp_path), str(tmp_path / "nope"))
    assert result.returncode == 2
    assert "neither a file nor a folder" in result.stderr


def test_quarantine_list_shows_reasons(tmp_path: Path) -> None:
    archive = EmbeddedArchive(Settings(data_dir=tmp_path / "data"))
    with pytest.raises(NotDicom):
        archive.store_service.store_part10(b"\0" * 128 + b"DICM" + b"garbage" * 20)
    listed = skypacs("quarantine", "list", "--data-dir", str(tmp_path / "data"))
    assert listed.returncode == 0
    assert "cannot-decode" in listed.stdout and "1 quarantined objects" in listed.stdout
    as_json = skypacs("quarantine", "list", "--json", "--data-dir", str(tmp_path / "data"))
    (record,) = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert record["reason"] == "cannot-decode"
    assert (tmp_path / "data" / "objects" / record["quarantine_key"]).exists()


def test_queue_status(tmp_path: Path) -> None:
    archive = EmbeddedArchive(Settings(data_dir=tmp_path / "data"))
    archive.store_service.store_part10(dicom_file("CT_small.dcm").read_bytes())
    result = skypacs("queue", "status", "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 0 and "1 waiting to be indexed, 0 dead-lettered" in result.stdout


def test_bad_configuration_is_a_clear_error(tmp_path: Path) -> None:
    result = skypacs("serve", "--data-dir", str(tmp_path), "--ae-title", "THIS_TITLE_IS_TOO_LONG")
    assert result.returncode == 2
    assert "AE title" in result.stderr
