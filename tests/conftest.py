"""Shared fixtures: real DICOM files, an embedded archive, a running gateway, DCMTK tools."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from skypacs.config import Settings
from skypacs.dimse.server import Gateway, GatewayOptions
from skypacs.embedded import EmbeddedArchive
from skypacs.services.indexer import QueueIndexer

DCMTK_DIR = Path("/usr/bin")


def dicom_file(name: str) -> Path:
    """A file shipped by pydicom or pydicom-data (never downloaded: both are installed packages)."""
    path = get_testdata_file(name, download=False)
    if path is None:
        raise FileNotFoundError(f"test file {name} is in neither pydicom nor pydicom-data")
    return Path(path)


def dcmtk(tool: str) -> str:
    """Path of a DCMTK tool. pynetdicom installs its own ``storescu`` etc. on PATH, so never rely on
    PATH: DCMTK's come from Debian's dcmtk package under /usr/bin (``.ci/run`` installs it)."""
    path = DCMTK_DIR / tool
    if not path.exists():
        raise RuntimeError(f"DCMTK {tool} not found at {path}: apt-get install -y dcmtk")
    return str(path)


def run_dcmtk(tool: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([dcmtk(tool), *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def archive(settings: Settings) -> EmbeddedArchive:
    return EmbeddedArchive(settings)


@dataclass
class RunningGateway:
    gateway: Gateway
    archive: EmbeddedArchive
    indexer: QueueIndexer

    @property
    def port(self) -> int:
        return self.gateway.port

    @property
    def ae_title(self) -> str:
        return self.gateway.options.ae_title

    def wait_indexed(self, count: int, timeout: float = 30) -> None:
        """Wait until the catalog holds ``count`` instances and the queue is empty."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (
                self.archive.catalog.count_instances() >= count
                and self.archive.queue.counts().pending == 0
            ):
                return
            time.sleep(0.05)
        raise AssertionError(
            f"catalog has {self.archive.catalog.count_instances()} instances, expected {count}; "
            f"queue {self.archive.queue.counts()}"
        )

    def wait_queue_empty(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.archive.queue.counts().pending and time.monotonic() < deadline:
            time.sleep(0.05)


@pytest.fixture
def make_gateway(settings: Settings) -> Iterator[Callable[..., RunningGateway]]:
    """Start an in-process gateway (ephemeral port) with its indexer on a thread."""
    started: list[tuple[Gateway, threading.Event, threading.Thread]] = []

    def start(**options: object) -> RunningGateway:
        archive = EmbeddedArchive(settings)
        gateway_options = GatewayOptions(ae_title="SKYPACS", host="127.0.0.1", port=0, **options)  # type: ignore[arg-type]
        gateway = Gateway(gateway_options, archive.store_service, query_service=archive.query_service)
        gateway.start()
        indexer = archive.indexer()
        stop = threading.Event()
        thread = threading.Thread(target=indexer.run, args=(stop,), kwargs={"idle_sleep": 0.02}, daemon=True)
        thread.start()
        started.append((gateway, stop, thread))
        return RunningGateway(gateway, archive, indexer)

    yield start
    for gateway, stop, thread in started:
        gateway.stop(timeout=5)
        stop.set()
        thread.join(10)


@pytest.fixture
def running_gateway(make_gateway: Callable[..., RunningGateway]) -> RunningGateway:
    return make_gateway()


FAKE_AWS_REGION = "us-east-1"


@pytest.fixture
def fake_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials moto accepts and no real AWS does; nothing inherited from the shell leaks in."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", FAKE_AWS_REGION)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


def copy_testdata(names: list[str], target: Path) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(dicom_file(name), target / name)) for name in names]
