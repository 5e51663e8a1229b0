"""``skypacs serve`` as a user runs it: a real process, stopped, killed and restarted."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from skypacs.config import Settings
from skypacs.embedded import EmbeddedArchive
from tests.conftest import copy_testdata, dicom_file, run_dcmtk
from tests.dicom_files import clone, echo, identity, new_uid

FILES = ["CT_small.dcm", "MR_small.dcm", "test-SR.dcm", "emri_small.dcm", "US1_UNCR.dcm"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, data_dir: Path, log: Path) -> None:
        self.data_dir, self.log = data_dir, log
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> None:
        """Start ``skypacs serve`` and return once it says it is serving: after its DIMSE and (when on)
        HTTP listeners are both open (it opens DIMSE first; C-ECHO alone would race the HTTP one)."""
        announced = self._announcements()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "skypacs.cli", "serve", "--data-dir", str(self.data_dir),
                 "--dimse-port", str(self.port), "--dimse-host", "127.0.0.1", *extra],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if self._announcements() > announced and echo(self.port):
                    return
            except (ConnectionError, OSError, RuntimeError):
                pass
            time.sleep(0.1)
        raise AssertionError("server did not start:\n" + self.log.read_text())

    def _announcements(self) -> int:
        return self.log.read_text().count("SkyPACS serving") if self.log.exists() else 0

    def terminate(self, timeout: float = 60) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill_all(self) -> None:
        """Power-cut: SIGKILL the whole process group (gateway and indexer) at once."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def instances(self) -> set[str]:
        path = self.data_dir / "catalog.sqlite"
        if not path.exists():
            return set()
        with sqlite3.connect(path) as connection:
            return {row[0] for row in connection.execute("SELECT SOPInstanceUID FROM instances")}

    def wait_instances(self, expected: set[str], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not expected <= self.instances():
            time.sleep(0.1)
        assert expected <= self.instances(), self.log.read_text()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path / "data", tmp_path / "serve.log")
    yield server
    if server.process is not None and server.process.poll() is None:
        server.kill_all()


def storescu(port: int, paths: list[Path]) -> subprocess.CompletedProcess[str]:
    return run_dcmtk("storescu", "-aec", "SKYPACS", "127.0.0.1", str(port), *map(str, paths), timeout=120)


def test_stores_survive_a_restart(server: Server, tmp_path: Path) -> None:
    paths = copy_testdata(FILES, tmp_path / "in")
    server.start()
    assert storescu(server.port, paths).returncode == 0
    expected = {identity(p)[2] for p in paths}
    server.wait_instances(expected)
    assert server.terminate() == 0
    server.start()
    assert server.instances() == expected
    archive = EmbeddedArchive(Settings(data_dir=server.data_dir))
    for path in paths:
        record = archive.catalog.get_instance(identity(path)[2])
        assert record is not None and archive.store.head(record.key).size == record.size
    assert server.terminate() == 0


def test_objects_written_but_not_indexed_are_indexed_on_next_start(server: Server) -> None:
    """The state a crash between the write and the index leaves: objects durable, queue not drained."""
    archive = EmbeddedArchive(Settings(data_dir=server.data_dir))
    expected = set()
    for name in FILES:
        receipt = archive.store_service.store_part10(dicom_file(name).read_bytes())
        expected.add(receipt.identity.SOPInstanceUID)
    assert archive.catalog.count_instances() == 0 and archive.queue.counts().pending == len(FILES)
    server.start()
    server.wait_instances(expected)
    assert archive.queue.counts().pending == 0


def test_power_cut_right_after_stores_loses_nothing_acknowledged(server: Server, tmp_path: Path) -> None:
    study = new_uid()
    paths = []
    for index in range(30):
        path = tmp_path / f"{index}.dcm"
        path.write_bytes(clone("CT_small.dcm", StudyInstanceUID=study, SOPInstanceUID=new_uid()))
        paths.append(path)
    server.start()
    assert storescu(server.port, paths).returncode == 0
    server.kill_all()
    server.start()
    server.wait_instances({identity(p)[2] for p in paths})


def test_sigterm_finishes_in_flight_stores_then_exits(server: Server, tmp_path: Path) -> None:
    paths = []
    for index in range(60):
        path = tmp_path / f"{index}.dcm"
        path.write_bytes(clone("US1_UNCR.dcm", SOPInstanceUID=new_uid()))
        paths.append(path)
    server.start()
    sender = subprocess.Popen(
        ["/usr/bin/storescu", "-aec", "SKYPACS", "127.0.0.1", str(server.port), *map(str, paths)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    objects = server.data_dir / "objects" / "studies"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sum(1 for _ in objects.rglob("*.dcm")) < 3:
        time.sleep(0.01)
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    _, stderr = sender.communicate(timeout=120)
    assert sender.returncode == 0, stderr
    assert server.process.wait(60) == 0
    assert server.instances() == {identity(p)[2] for p in paths}
    with pytest.raises((ConnectionError, OSError, RuntimeError, AssertionError)):
        assert echo(server.port)
