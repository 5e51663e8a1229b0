"""C-STORE ingest benchmark for SkyPACS: how fast does the DIMSE gateway take in CT images?

Not a test: run it by hand (``python bench/ingest.py --help``). It needs pydicom, pynetdicom and psutil, and
preferably pydicom-data for a real 512x512 CT slice (the ``bench`` extra).

For each association count K (``--associations 1,4``) it:

1. starts a fresh ``skypacs serve`` on a new data directory and a free port (``--spawn``, the default), or
   uses the server at ``--host/--port``;
2. generates N new instances (``--count``) cloned from one real CT image, with new Study/Series/SOP
   Instance UIDs (one study and one series per ``--per-study`` instances), and encodes them to Part 10 bytes
   in memory -- all before the clock starts;
3. sends them over K parallel associations (one thread and one association each, instances split evenly)
   with pynetdicom, and, with ``--dcmtk``, once more with K parallel DCMTK ``storescu`` processes;
4. while sending and indexing, samples the resident memory of the server process and all its children
   every 50 ms;
5. waits until the server's SQLite catalog (DATA_DIR/catalog.sqlite, table ``instances``) holds every
   stored instance, to time indexing;
6. stops the server with SIGTERM.

Then it prints one row per run: instances, seconds, instances/s, MB/s, statuses, peak server RSS, and the
time until everything was indexed; or, with ``--json``, the same as one JSON document.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import logging
import os
import random
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

logger = logging.getLogger("bench.ingest")

DCMTK_STORESCU = "/usr/bin/storescu"
"""DCMTK's storescu. Never taken from PATH: pynetdicom installs a ``storescu`` of its own."""

REAL_CT = "693_UNCR.dcm"
"""From pydicom-data: a 512x512 16-bit CT slice (CQ500, anonymised), Explicit VR Little Endian, ~526 KB."""
SMALL_CT = "CT_small.dcm"
"""From pydicom itself: a 128x128 CT, enlarged to 512x512 when pydicom-data is not installed."""
CATALOG_FILE = "catalog.sqlite"
CATALOG_TABLE = "instances"
READY_LINE = "DIMSE listening"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 60.0
RSS_INTERVAL_S = 0.05
MB = 1_000_000

# PS3.7 C.4.2.1.4: C-STORE response statuses. 0x0000 is Success; 0xB000, 0xB006 and 0xB007 are Warnings
# (the instance was stored, with coercion or elements discarded); anything else is a failure.
SUCCESS = 0x0000
WARNINGS = frozenset({0xB000, 0xB006, 0xB007})


# --- the instances ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where the cloned image comes from."""

    file: str
    description: str
    sop_class_uid: str
    transfer_syntax_uid: str


@dataclass
class Instances:
    """N encoded Part 10 files, ready to send. A client takes them once, with one of the ``take_`` methods,
    which release each blob as they go so that no more than one copy of the N instances is held."""

    blobs: list[bytes]
    study_count: int
    source: Source
    count: int = field(init=False)
    total_bytes: int = field(init=False)

    def __post_init__(self) -> None:
        self.count = len(self.blobs)
        self.total_bytes = sum(len(b) for b in self.blobs)

    def take_blobs(self) -> Iterator[bytes]:
        """The blobs in order, each dropped from here once handed out."""
        blobs, self.blobs = self.blobs, []
        blobs.reverse()
        while blobs:
            yield blobs.pop()

    def take_datasets(self) -> list[Dataset]:
        """Parse every blob; the datasets keep their elements raw, so pynetdicom writes them back as read."""
        return [dcmread(io.BytesIO(blob)) for blob in self.take_blobs()]


def load_template() -> tuple[Dataset, Source]:
    """The dataset every instance is cloned from: the real CT of pydicom-data, else an enlarged CT_small."""
    path = get_testdata_file(REAL_CT, download=False)
    if path is not None:
        ds = dcmread(path)
        description = (
            f"{REAL_CT} (pydicom-data): real CT slice, {ds.Rows}x{ds.Columns}, {ds.BitsAllocated}-bit"
        )
    else:
        small = get_testdata_file(SMALL_CT, download=False)
        if small is None:
            raise RuntimeError(f"neither {REAL_CT} (pydicom-data) nor {SMALL_CT} (pydicom) is available")
        ds = dcmread(small)
        _enlarge(ds, rows=512, columns=512)
        description = f"{SMALL_CT} (pydicom) enlarged to 512x512 16-bit with random pixels"
    if ds.file_meta.TransferSyntaxUID != ExplicitVRLittleEndian:
        raise RuntimeError(f"template must be Explicit VR Little Endian, is {ds.file_meta.TransferSyntaxUID}")
    source = Source(
        file=str(path or small),
        description=description,
        sop_class_uid=str(ds.SOPClassUID),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
    )
    return ds, source


def _enlarge(ds: Dataset, *, rows: int, columns: int) -> None:
    """Make ``ds`` a rows x columns, 16-bit image; the pixel values are filled in per instance."""
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.SamplesPerPixel = 1
    ds.PixelData = bytes(rows * columns * 2)
    # Values computed from the old pixels would now be wrong.
    for keyword in ("SmallestImagePixelValue", "LargestImagePixelValue", "WindowCenter", "WindowWidth"):
        if keyword in ds:
            delattr(ds, keyword)


def generate_instances(
    count: int, *, per_study: int = 100, seed: int | None = None, random_pixels: bool | None = None
) -> Instances:
    """``count`` Part 10 files cloned from the template, each with new UIDs.

    Instances are grouped ``per_study`` to a study, each study with one series and its own patient. With
    ``random_pixels`` (the default for the enlarged CT_small, whose pixels would be zeros), every instance
    gets its own random pixel values; the real CT keeps its real pixels.
    """
    if count < 0 or per_study < 1:
        raise ValueError("count must be >= 0 and per_study >= 1")
    template, source = load_template()
    if random_pixels is None:
        random_pixels = not source.file.endswith(REAL_CT)
    rng = random.Random(seed)
    ds = copy.deepcopy(template)
    pixel_bytes = len(ds.PixelData)
    blobs: list[bytes] = []
    study_count = 0
    for i in range(count):
        study_index, position = divmod(i, per_study)
        if position == 0:
            study_count += 1
            ds.StudyInstanceUID = generate_uid()
            ds.SeriesInstanceUID = generate_uid()
            if "FrameOfReferenceUID" in ds:
                ds.FrameOfReferenceUID = generate_uid()
            ds.PatientID = f"BENCH{study_index:06d}"
            ds.PatientName = f"Bench^Patient{study_index:06d}"
            ds.AccessionNumber = f"BA{study_index:08d}"
            ds.StudyID = str(study_index + 1)
            ds.SeriesNumber = 1
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = position + 1
        if random_pixels:
            ds.PixelData = rng.randbytes(pixel_bytes)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        blobs.append(buffer.getvalue())
    return Instances(blobs=blobs, study_count=study_count, source=source)


def split_evenly(items: Sequence[Any], parts: int) -> list[list[Any]]:
    """``items`` in ``parts`` contiguous chunks whose sizes differ by at most one."""
    if parts < 1:
        raise ValueError("parts must be >= 1")
    size, extra = divmod(len(items), parts)
    chunks, start = [], 0
    for k in range(parts):
        end = start + size + (1 if k < extra else 0)
        chunks.append(list(items[start:end]))
        start = end
    return chunks


# --- the server ------------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def c_echo(host: str, port: int, called_ae: str, calling_ae: str, timeout: float = 5.0) -> bool:
    """True if the SCP answers a C-ECHO with Success."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    assoc = ae.associate(host, port, ae_title=called_ae)
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return bool(status) and int(status.get("Status", -1)) == SUCCESS
    finally:
        assoc.release()


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    log = logging.getLogger(logger_name)
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def default_server_command() -> list[str]:
    """The ``skypacs`` installed with this Python, else the one on PATH, else ``python -m skypacs.cli``."""
    beside = Path(sys.executable).with_name("skypacs")
    if beside.exists():
        return [str(beside)]
    exe = shutil.which("skypacs")
    if exe:
        return [exe]
    return [sys.executable, "-m", "skypacs.cli"]


class SpawnedServer:
    """``skypacs serve`` in a subprocess, its output in a log file."""

    def __init__(
        self,
        *,
        data_dir: Path,
        port: int,
        ae_title: str,
        calling_ae: str,
        command: Sequence[str] | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.data_dir = data_dir
        self.port = port
        self.ae_title = ae_title
        self.calling_ae = calling_ae
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        self.command = [
            *(command or default_server_command()),
            "serve",
            "--data-dir", str(data_dir),
            "--dimse-port", str(port),
            "--http-port", "0",
            "--ae-title", ae_title,
            *extra_args,
        ]  # fmt: skip
        self.process: subprocess.Popen[str] | None = None
        self._ready_line = threading.Event()
        self._reader: threading.Thread | None = None
        self.exit_code: int | None = None
        self.stop_seconds: float | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._pump, name="server-output", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.process.returncode} before answering C-ECHO; "
                    f"log: {self.log_path}\n{self.log_tail()}"
                )
            self._ready_line.wait(0.2)
            with _quiet("pynetdicom"):  # refused connections until the port opens
                answered = c_echo("127.0.0.1", self.port, self.ae_title, self.calling_ae, timeout=2.0)
            if answered:
                return
        self.stop()
        raise RuntimeError(
            f"server did not answer C-ECHO within {READY_TIMEOUT_S:.0f} s; log: {self.log_path}\n{self.log_tail()}"
        )

    def _pump(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        with open(self.log_path, "a", encoding="utf-8") as log:
            for line in self.process.stdout:
                log.write(line)
                log.flush()
                if READY_LINE in line:
                    self._ready_line.set()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "".join(
                self.log_path.read_text(encoding="utf-8", errors="replace").splitlines(True)[-lines:]
            )
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if the server has not exited after STOP_TIMEOUT_S."""
        if self.process is None or self.exit_code is not None:
            return
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                logger.warning("server did not stop within %.0f s of SIGTERM; killing it", STOP_TIMEOUT_S)
                self.process.kill()
                self.process.wait()
        self.stop_seconds = time.monotonic() - started
        self.exit_code = self.process.returncode
        if self._reader is not None:
            self._reader.join(5)


class RssSampler:
    """Peak of the summed RSS of a process and all its descendants, sampled every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = RSS_INTERVAL_S) -> None:
        import psutil

        self._psutil = psutil
        self._process = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.peak_bytes = 0
        self.samples = 0

    def _sample(self) -> int:
        total = 0
        try:
            processes = [self._process, *self._process.children(recursive=True)]
        except self._psutil.Error:
            return 0
        for process in processes:
            try:
                total += process.memory_info().rss
            except self._psutil.Error:  # exited between listing and sampling
                pass
        return total

    def _run(self) -> None:
        while True:
            self.peak_bytes = max(self.peak_bytes, self._sample())
            self.samples += 1
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- the catalog -----------------------------------------------------------------------------------------


def catalog_count(data_dir: Path) -> tuple[int | None, str]:
    """Rows in DATA_DIR/catalog.sqlite ``instances``, or None and why not."""
    path = data_dir / CATALOG_FILE
    if not path.exists():
        return None, f"{path} does not exist"
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=2.0)) as db:
            (count,) = db.execute(f"SELECT COUNT(*) FROM {CATALOG_TABLE}").fetchone()
            return int(count), ""
    except sqlite3.OperationalError as exc:
        return None, f"{path}: {exc}"


def wait_indexed(data_dir: Path, target: int, *, timeout: float) -> tuple[float | None, str]:
    """Wait until the catalog holds ``target`` instances; the monotonic time it did, or None and why."""
    deadline = time.monotonic() + timeout
    while True:
        count, why = catalog_count(data_dir)
        if count is None:
            return None, f"indexing not timed: {why}"
        if count >= target:
            return time.monotonic(), ""
        if time.monotonic() >= deadline:
            return None, f"indexing not finished after {timeout:.0f} s: {count} of {target} in the catalog"
        time.sleep(0.1)


# --- the clients -----------------------------------------------------------------------------------------


@dataclass
class SendOutcome:
    seconds: float
    statuses: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    peer_max_pdu: int | None = None
    responses_rescued: int = 0
    """C-STORE responses recovered from pynetdicom's reactor race (see _keep_stolen_responses)."""

    @property
    def stored(self) -> int:
        return self.statuses["success"] + self.statuses["warning"]


def _classify(status: int) -> str:
    if status == SUCCESS:
        return "success"
    if status in WARNINGS:
        return "warning"
    return f"failure 0x{status:04X}"


def _keep_stolen_responses(assoc: Any, recovered: Counter[str]) -> bool:
    """Work around a race in pynetdicom's requestor (seen with 3.0.4).

    ``send_c_store`` pauses the association's reactor thread by clearing ``_reactor_checkpoint`` and waiting
    for ``_is_paused``; but the reactor sets ``_is_paused`` *before* waiting on the checkpoint, so it can
    still be running, take the C-STORE response off the DIMSE queue itself and drop it ("Received
    unexpected C-STORE service message"), leaving ``send_c_store`` to wait for the DIMSE timeout. With a
    few parallel associations in one process this happens every few thousand instances. Put such a
    response back on the queue, where ``send_c_store`` is waiting for it. Returns False, and changes
    nothing, if this pynetdicom lacks the internals the workaround needs. Each rescue is counted in
    ``recovered["responses"]``.
    """
    from pynetdicom.dimse_primitives import C_STORE

    original = getattr(assoc, "_serve_request", None)
    msg_queue = getattr(getattr(assoc, "dimse", None), "msg_queue", None)
    if original is None or msg_queue is None:
        return False

    def serve_request(msg: Any, context_id: int) -> None:
        if isinstance(msg, C_STORE) and not msg.is_valid_request and msg.Status is not None:
            msg_queue.put((context_id, msg))
            recovered["responses"] += 1
            return
        original(msg, context_id)

    assoc._serve_request = serve_request
    return True


def send_pynetdicom(
    instances: Instances, *, host: str, port: int, called_ae: str, calling_ae: str, associations: int
) -> SendOutcome:
    """Send over ``associations`` parallel associations; time from all associated to the last response."""
    from pynetdicom import AE

    # Parsed before timing, as raw elements: encoding them for the wire is a plain copy.
    chunks = split_evenly(instances.take_datasets(), associations)
    ae = AE(ae_title=calling_ae)
    ae.maximum_pdu_size = 0  # acceptor side only; the requestor's own limit is associate(max_pdu=...)
    ae.add_requested_context(instances.source.sop_class_uid, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.network_timeout = 60
    ae.dimse_timeout = 120
    barrier = threading.Barrier(associations + 1)
    statuses: Counter[str] = Counter()
    errors: list[str] = []
    peer_pdus: list[int] = []
    ends: list[float] = []
    recovered: Counter[str] = Counter()
    lock = threading.Lock()

    def worker(chunk: list[Dataset]) -> None:
        local: Counter[str] = Counter()
        assoc = None
        try:
            assoc = ae.associate(host, port, ae_title=called_ae, max_pdu=0)
            if assoc.is_established:
                # pynetdicom leaves Nagle's algorithm on, so a small PDU can wait for the peer's delayed ACK.
                assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if not _keep_stolen_responses(assoc, recovered):
                    logger.warning("pynetdicom internals changed: responses may be lost to a reactor race")
                with lock:
                    peer_pdus.append(assoc.acceptor.maximum_length)
            else:
                with lock:
                    errors.append("association rejected or aborted")
        except Exception as exc:  # noqa: BLE001  # its instances count as not sent; reach the barrier
            with lock:
                errors.append(f"associate: {exc!r}")
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()
        try:
            for position, ds in enumerate(chunk):
                if assoc is None or not assoc.is_established:
                    local["not sent (no association)"] += len(chunk) - position
                    break
                status = assoc.send_c_store(ds)
                if not status or "Status" not in status:
                    local["no response (timeout or abort)"] += 1
                else:
                    local[_classify(int(status.Status))] += 1
        except Exception as exc:  # noqa: BLE001  # reported, and the rest counted as not sent
            with lock:
                errors.append(f"send_c_store: {exc!r}")
            local["not sent (error)"] += len(chunk) - sum(local.values())
        finally:
            ended = time.perf_counter()  # the last response, before the release
            if assoc is not None and assoc.is_established:
                assoc.release()
            with lock:
                statuses.update(local)
                ends.append(ended)

    threads = [
        threading.Thread(target=worker, args=(chunk,), name=f"scu-{k}") for k, chunk in enumerate(chunks)
    ]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return SendOutcome(
        seconds=max(0.0, max(ends) - started) if ends else 0.0,
        statuses=statuses,
        errors=errors,
        peer_max_pdu=min(peer_pdus) if peer_pdus else None,
        responses_rescued=recovered["responses"],
    )


_DCMTK_RESPONSE = re.compile(r"Received Store Response \(([^)]*)\)")


def send_dcmtk(
    instances: Instances,
    *,
    host: str,
    port: int,
    called_ae: str,
    calling_ae: str,
    associations: int,
    work_dir: Path,
) -> SendOutcome:
    """Send with ``associations`` parallel DCMTK storescu processes, one directory of files each.

    The time runs from starting the processes to the last one exiting, so it includes process start,
    reading the files and association set-up.
    """
    if not Path(DCMTK_STORESCU).exists():
        raise RuntimeError(f"DCMTK storescu not found at {DCMTK_STORESCU}: apt-get install dcmtk")
    dirs = [work_dir / f"assoc{k:02d}" for k in range(associations)]
    sizes = [len(chunk) for chunk in split_evenly(range(instances.count), associations)]
    blobs = instances.take_blobs()
    for directory, size in zip(dirs, sizes, strict=True):
        directory.mkdir(parents=True)
        for i in range(size):
            (directory / f"{i:06d}.dcm").write_bytes(next(blobs))
    os.sync()  # no dirty pages of ours left to be flushed while the server writes
    command = [DCMTK_STORESCU, "-v", "-aet", calling_ae, "-aec", called_ae, "--required", "--no-halt"]
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            [*command, "--scan-directories", host, str(port), str(directory)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for directory in dirs
    ]
    outputs = [process.communicate()[0] for process in processes]
    seconds = time.perf_counter() - started
    statuses: Counter[str] = Counter()
    errors: list[str] = []
    for directory, process, output in zip(dirs, processes, outputs, strict=True):
        responses = _DCMTK_RESPONSE.findall(output)
        for text in responses:
            word = text.split(",")[0].split(":")[0].strip().lower()
            statuses[
                "success" if word == "success" else "warning" if word == "warning" else f"failure {text}"
            ] += 1
        expected = sum(1 for _ in directory.iterdir())
        if len(responses) < expected:
            statuses["no response"] += expected - len(responses)
        if process.returncode != 0:
            last = [line for line in output.splitlines() if line.startswith(("E:", "F:"))][-3:]
            errors.append(f"storescu exited with {process.returncode}: {' | '.join(last)}")
    return SendOutcome(seconds=seconds, statuses=statuses, errors=errors)


# --- one run ---------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    client: str
    associations: int
    instances: int
    studies: int
    megabytes: float
    seconds: float
    instances_per_s: float
    mb_per_s: float
    stored: int
    statuses: dict[str, int]
    all_success: bool
    errors: list[str]
    peer_max_pdu: int | None
    responses_rescued: int
    peak_server_rss_mb: float | None
    indexed_after_s: float | None
    """From the start of sending until the catalog held every stored instance."""
    index_lag_s: float | None
    """From the last C-STORE response until the catalog held every stored instance."""
    index_note: str
    server_exit_code: int | None = None
    server_stop_s: float | None = None


@contextlib.contextmanager
def _maybe_sampler(pid: int | None) -> Iterator[RssSampler | None]:
    if pid is None:
        yield None
        return
    with RssSampler(pid) as sampler:
        yield sampler


def run_once(
    *,
    client: str,
    associations: int,
    instances: Instances,
    host: str,
    port: int,
    called_ae: str,
    calling_ae: str,
    server_pid: int | None,
    data_dir: Path | None,
    work_dir: Path,
    index_timeout: float,
) -> RunResult:
    baseline = None
    if data_dir is not None:
        baseline, _ = catalog_count(data_dir)
    with _maybe_sampler(server_pid) as sampler:
        send_started = time.monotonic()
        if client == "pynetdicom":
            outcome = send_pynetdicom(
                instances,
                host=host,
                port=port,
                called_ae=called_ae,
                calling_ae=calling_ae,
                associations=associations,
            )
        else:
            outcome = send_dcmtk(
                instances,
                host=host,
                port=port,
                called_ae=called_ae,
                calling_ae=calling_ae,
                associations=associations,
                work_dir=work_dir,
            )
        send_ended = time.monotonic()
        indexed_after = index_lag = None
        if data_dir is None:
            note = "indexing not timed: no --data-dir for an external server"
        else:
            done, note = wait_indexed(data_dir, (baseline or 0) + outcome.stored, timeout=index_timeout)
            if done is not None:
                # Sending was timed from the moment all associations stood; close enough at this scale.
                indexed_after = done - send_started
                index_lag = max(0.0, done - send_ended)
        peak = sampler.peak_bytes / MB if sampler is not None and sampler.samples else None
    count = instances.count
    megabytes = instances.total_bytes / MB
    # Throughput counts what the server took in: instances answered with Success or Warning.
    stored_megabytes = megabytes * outcome.stored / count if count else 0.0
    seconds = outcome.seconds
    statuses = dict(sorted(outcome.statuses.items()))
    return RunResult(
        client=client,
        associations=associations,
        instances=count,
        studies=instances.study_count,
        megabytes=round(megabytes, 3),
        seconds=round(seconds, 3),
        instances_per_s=round(outcome.stored / seconds, 1) if seconds > 0 else 0.0,
        mb_per_s=round(stored_megabytes / seconds, 1) if seconds > 0 else 0.0,
        stored=outcome.stored,
        statuses=statuses,
        all_success=outcome.statuses.get("success", 0) == count,
        errors=outcome.errors,
        peer_max_pdu=outcome.peer_max_pdu,
        responses_rescued=outcome.responses_rescued,
        peak_server_rss_mb=round(peak, 1) if peak is not None else None,
        indexed_after_s=round(indexed_after, 3) if indexed_after is not None else None,
        index_lag_s=round(index_lag, 3) if index_lag is not None else None,
        index_note=note,
    )


# --- output ----------------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def format_table(results: Sequence[RunResult]) -> str:
    header = (
        "client", "assoc", "instances", "seconds", "inst/s", "MB/s", "statuses",
        "peak RSS MB", "indexed s", "index lag s",
    )  # fmt: skip
    rows = [header]
    for r in results:
        statuses = "all success" if r.all_success else ", ".join(f"{k}: {v}" for k, v in r.statuses.items())
        rows.append(
            (
                r.client,
                str(r.associations),
                str(r.instances),
                _fmt(r.seconds, ".2f"),
                _fmt(r.instances_per_s),
                _fmt(r.mb_per_s),
                statuses or "none",
                _fmt(r.peak_server_rss_mb),
                _fmt(r.indexed_after_s, ".2f"),
                _fmt(r.index_lag_s, ".2f"),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    left = {0, 6}  # text columns; numbers are right-aligned

    def line(row: Sequence[str]) -> str:
        cells = zip(row, widths, strict=True)
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(cells)).rstrip()

    lines = [line(row) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = []
    for r in results:
        for text in ([r.index_note] if r.index_note else []) + r.errors:
            notes.append(f"{r.client} x{r.associations}: {text}")
    return "\n".join(lines + ([""] + notes if notes else []))


# --- command line ----------------------------------------------------------------------------------------


def _associations(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of integers, got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("association counts must be integers >= 1")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/ingest.py",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""\
measures:
  seconds       from the moment all K associations are established to the last C-STORE response
                (pynetdicom); from starting the storescu processes to the last exiting (DCMTK, so
                including process start and association set-up)
  inst/s, MB/s  instances stored (Success or Warning), and their Part 10 bytes (1 MB = 10^6 bytes),
                divided by seconds
  statuses      C-STORE response statuses: success, warning (stored with coercion, 0xB000/B006/B007),
                failure 0xXXXX, or instances never answered; "all success" when every one succeeded
  peak RSS MB   highest sum of the RSS of the server process and all its children, sampled every
                50 ms while sending and indexing (needs --spawn, or --server-pid)
  indexed s     from the start of sending until DATA_DIR/catalog.sqlite table instances holds every
                stored instance; index lag s: the part of it after the last response. Skipped, with a
                note, when the catalog file or table does not exist (or no --data-dir is known)

examples:
  python bench/ingest.py                                  # spawn a server, 1000 instances, 1 and 4 assocs
  python bench/ingest.py --count 5000 --associations 1,2,4,8 --dcmtk --json > ingest.json
  python bench/ingest.py --host pacs.local --port 11112 --ae-title SKYPACS --associations 4
""",
    )
    load = parser.add_argument_group("load")
    load.add_argument("--count", type=int, default=1000, help="instances sent per run (default 1000)")
    load.add_argument(
        "--associations",
        type=_associations,
        default=[1, 4],
        metavar="K[,K...]",
        help="comma-separated association counts; one run each, instances split evenly (default 1,4)",
    )
    load.add_argument("--per-study", type=int, default=100, help="instances per study/series (default 100)")
    load.add_argument(
        "--random-pixels",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="give every instance its own random pixel values (default: only when the real CT from "
        "pydicom-data is unavailable and CT_small is enlarged instead)",
    )
    load.add_argument("--seed", type=int, help="seed for the random pixel values")
    load.add_argument(
        "--dcmtk",
        action="store_true",
        help=f"after the pynetdicom run, repeat each association count with K parallel DCMTK "
        f"{DCMTK_STORESCU} processes (always that path: the storescu on PATH may be pynetdicom's); "
        "the instances are written to a temporary directory first",
    )
    load.add_argument("--calling-ae", default="BENCH", help="calling AE title of the sender (default BENCH)")

    server = parser.add_argument_group("server")
    server.add_argument(
        "--spawn",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="start a fresh 'skypacs serve' (new data directory, free port) for every run and stop it with "
        "SIGTERM afterwards; the default unless --port is given",
    )
    server.add_argument("--host", default="127.0.0.1", help="server host (default 127.0.0.1)")
    server.add_argument("--port", type=int, help="DIMSE port of a running server (implies --no-spawn)")
    server.add_argument(
        "--ae-title", default="SKYPACS", help="called AE title of the server (default SKYPACS)"
    )
    server.add_argument(
        "--data-dir",
        type=Path,
        help="with --spawn: parent directory for the servers' data directories (default: a temporary "
        "directory, removed afterwards); with --no-spawn: the running server's data directory, "
        "to time indexing from its catalog",
    )
    server.add_argument("--server-pid", type=int, help="with --no-spawn: server PID whose RSS to sample")
    server.add_argument(
        "--server-command",
        help="the skypacs executable, as one shell-quoted string (default: the 'skypacs' installed beside "
        "this Python, else on PATH, else 'python -m skypacs.cli'); 'serve' and its options are appended",
    )
    server.add_argument(
        "--server-args",
        default="",
        help="extra arguments for 'skypacs serve', as one shell-quoted string; write it with '=', "
        "e.g. --server-args='--log-level WARNING --max-pdu 0'",
    )
    server.add_argument(
        "--index-timeout",
        type=float,
        default=300.0,
        help="seconds to wait for the catalog to hold every stored instance (default 300)",
    )
    server.add_argument(
        "--keep-data", action="store_true", help="keep the temporary data directories and logs"
    )

    parser.add_argument("--json", action="store_true", help="print the results as one JSON document")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and pynetdicom warnings")
    return parser


def run_one_configuration(
    args: argparse.Namespace, *, client: str, associations: int, spawn: bool, root: Path
) -> tuple[RunResult, Source]:
    """Generate the instances, (start a server,) send, wait for indexing, (stop the server)."""
    label = f"{client}-k{associations}"
    logger.info("%s: generating %d instances", label, args.count)
    instances = generate_instances(
        args.count, per_study=args.per_study, seed=args.seed, random_pixels=args.random_pixels
    )
    server: SpawnedServer | None = None
    host, port, pid, data_dir = args.host, args.port, args.server_pid, args.data_dir
    if spawn:
        host, port = "127.0.0.1", free_port()
        server = SpawnedServer(
            data_dir=root / f"{label}-data",
            port=port,
            ae_title=args.ae_title,
            calling_ae=args.calling_ae,
            command=shlex.split(args.server_command) if args.server_command else None,
            extra_args=shlex.split(args.server_args),
        )
        logger.info("%s: starting %s", label, shlex.join(server.command))
        server.start()
        pid, data_dir = server.pid, server.data_dir
    try:
        logger.info("%s: sending", label)
        result = run_once(
            client=client,
            associations=associations,
            instances=instances,
            host=host,
            port=port,
            called_ae=args.ae_title,
            calling_ae=args.calling_ae,
            server_pid=pid,
            data_dir=data_dir,
            work_dir=root / f"{label}-files",
            index_timeout=args.index_timeout,
        )
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root / f"{label}-files", ignore_errors=True)
    if server is not None:
        result.server_exit_code = server.exit_code
        result.server_stop_s = round(server.stop_seconds or 0.0, 3)
        if server.exit_code != 0:
            result.errors.append(f"server exited with {server.exit_code}; log: {server.log_path}")
    return result, instances.source


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    spawn = args.spawn if args.spawn is not None else args.port is None
    if spawn and args.port is not None:
        parser.error("--port names a running server; it cannot be combined with --spawn")
    if not spawn and args.port is None:
        parser.error("--no-spawn needs --port")
    if args.count < 1 or args.per_study < 1:
        parser.error("--count and --per-study must be >= 1")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # pynetdicom logs every C-STORE at INFO.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING if args.verbose else logging.CRITICAL)

    clients = ["pynetdicom"] + (["dcmtk"] if args.dcmtk else [])
    owned_root = args.data_dir is None or not spawn  # with --no-spawn, --data-dir is the server's
    root = Path(tempfile.mkdtemp(prefix="skypacs-bench-")) if owned_root else args.data_dir
    root.mkdir(parents=True, exist_ok=True)
    results: list[RunResult] = []
    source: Source | None = None
    failed = False
    try:
        for client in clients:
            for k in args.associations:
                result, source = run_one_configuration(
                    args, client=client, associations=k, spawn=spawn, root=root
                )
                results.append(result)
    except (RuntimeError, OSError) as exc:
        print(f"ingest.py: error: {exc}", file=sys.stderr)
        failed = True  # keep the server logs
        return 2
    finally:
        if owned_root and not args.keep_data and not failed:
            shutil.rmtree(root, ignore_errors=True)
        elif spawn:
            print(f"data directories and server logs are under {root}", file=sys.stderr)

    if args.json:
        document = {
            "benchmark": "ingest",
            "source": asdict(source) if source else None,
            "count": args.count,
            "per_study": args.per_study,
            "spawned": spawn,
            "runs": [asdict(r) for r in results],
        }
        print(json.dumps(document, indent=2))
    else:
        if source:
            print(f"source: {source.description}")
        print(format_table(results))
    return 0 if all(r.all_success for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
