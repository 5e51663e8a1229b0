"""Retrieve benchmark for SkyPACS: how fast do images and metadata come back out, and at what memory cost?

Not a test: run it by hand (``python bench/retrieve.py --help``). It needs pydicom, pydicom-data (for the
real 512x512 CT slice), pynetdicom and psutil (the ``bench`` extra).

1. It builds an archive in a fresh data directory, in-process and without the network (the store service
   writes each Part 10 object, then the indexer drains the ingest queue), from clones of one real CT
   slice, ``693_UNCR.dcm`` of pydicom-data (512x512, 16-bit, Explicit VR Little Endian, 526 KB), each
   with new Study/Series/SOP Instance UIDs:

   - the *large study*: ``--study-size`` instances (default 2,000, about 1.05 GB) in one series;
   - the *metadata study*: one series per ``--series-sizes`` (default 30, 100 and 1,000 instances);
   - the *small study*: 30 instances in one series (study metadata, frames, rendered, thumbnails);
   - the *move studies*: ``--move-size`` instances (default 1,000) for C-MOVE and C-GET, one per
     ``--move-sources``: ``small`` = clones of pydicom's CT_small.dcm (128x128, 39 KB), ``ct`` = clones
     of the 526 KB slice.

   All objects are then in the page cache: reads are warm, for SkyPACS as for any archive it is compared to.
2. It starts ``skypacs serve`` on that data directory with free DIMSE and HTTP ports, and two C-MOVE
   destinations written to DATA_DIR/skypacs.toml (``[dimse.destinations]``): ``BENCH``, a pynetdicom
   storage SCP the benchmark runs in a process of its own (it counts what it receives and answers
   Success without decoding; TCP_NODELAY; maximum PDU ``--scp-max-pdu``, default unlimited), and
   ``BENCHDCM``, DCMTK ``/usr/bin/storescp --ignore`` (maximum PDU 131072, TCP_NODELAY=1 in its
   environment: this DCMTK leaves Nagle's algorithm on otherwise, ~40 ms per sub-operation).
3. While it measures, a thread samples the resident memory (RSS) of the server process and all its
   children (the indexer) every 50 ms: the peak per measurement (also as the difference to the idle
   baseline taken after start-up), and overall. Python's allocator keeps freed memory per thread
   (glibc arenas; waitress serves each request on one of 8 threads), so a peak stays after the
   measurement that caused it and later rows start from there; compare the first rows to the baseline.

Measurements (each after one untimed warm-up request, or association, on the small study):

- study retrieve: ``GET /studies/{large}`` with ``Accept: multipart/related; type="application/dicom";
  transfer-syntax=*`` (as stored), then with the default (no transfer-syntax: Explicit VR Little
  Endian, which is how the objects are stored, so also as stored); ``--runs`` times each. The client is
  http.client reading into one reused 1 MB buffer, counting the multipart boundaries as it goes, so that
  the client is not the bottleneck. Throughput is body bytes (1 MB = 10^6 bytes) over the time from
  sending the request to the last byte; the time to the first body byte, and the rate from there to the
  last, are reported too. The point of the peak RSS: the body is streamed, so memory must not grow with
  the study size (compare ``--study-size 500`` with the default).
- metadata latency: ``GET .../series/{s}/metadata`` for each series of the metadata study, and
  ``GET /studies/{small}/metadata``, ``--requests`` times each (default 50) over one persistent
  connection; p50/p95/p99 of the time from sending the request to the last body byte.
- frame latency: ``GET .../instances/{i}/frames/1`` with ``Accept: multipart/related;
  type="application/octet-stream"`` (uncompressed), and with ``; transfer-syntax=*`` (as stored),
  ``--frame-requests`` times (default 200), cycling through the 30 instances of the small study.
- rendered and thumbnail latency: ``.../instances/{i}/rendered`` and ``.../instances/{i}/thumbnail``
  (``Accept: image/jpeg``), ``--render-requests`` times (default 50).
- C-MOVE: a pynetdicom SCU (TCP_NODELAY) sends one Study Root C-MOVE at STUDY level for each move study,
  to ``BENCH`` and to ``BENCHDCM``; instances/s = instances received (counted by ``BENCH``; for
  storescp, the final response's Number of Completed Sub-operations) over the time from the request to
  the final response. DCMTK as the destination shows the server's own limit, without pynetdicom's
  polling on the receiving side.
- C-GET, the same study and timing: a pynetdicom SCU acting as Storage SCP on its own association (SCP
  role for CT Image Storage, counting the C-STOREs), proposing Explicit and Implicit VR Little Endian
  in one context (what most SCUs send: the server's preference then decides which it sends, and a
  choice other than the stored syntax means converting every object) and in one context each; and
  DCMTK ``/usr/bin/getscu --ignore`` (timed from process start to exit, counts from its final report).
  ``--dimse-peers`` chooses pynetdicom and/or dcmtk peers.

The latency client is ``--latency-client``: http.client (default: the least client overhead) or
requests.Session; both keep one connection open. Targets printed beside the figures are what Orthanc
1.10 reaches on this machine class: study retrieve >= 700 MB/s, 30-instance study metadata p50 <= 29 ms,
single frame p50 <= 2.2 ms, C-MOVE >= 500 instances/s, C-GET >= 530 instances/s, and series metadata
of 1,000 instances p95 < 1 s.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import http.client
import io
import json
import logging
import math
import multiprocessing
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Self

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

logger = logging.getLogger("bench.retrieve")

REAL_CT = "693_UNCR.dcm"
"""From pydicom-data: a 512x512 16-bit CT slice (CQ500, anonymised), Explicit VR Little Endian, ~526 KB."""
SMALL_CT = "CT_small.dcm"
"""From pydicom itself: a 128x128 16-bit CT, Explicit VR Little Endian, ~39 KB."""
SOURCES = {"ct": REAL_CT, "small": SMALL_CT}
SMALL_STUDY_SIZE = 30
SERVER_AE = "SKYPACS"
SCU_AE = "BENCHSCU"
DESTINATION_AE = "BENCH"
"""The C-MOVE destination served by the benchmark's own pynetdicom storage SCP."""
DCMTK_DESTINATION_AE = "BENCHDCM"
"""The C-MOVE destination served by DCMTK storescp."""
DCMTK_STORESCP = "/usr/bin/storescp"
DCMTK_GETSCU = "/usr/bin/getscu"
"""DCMTK tools, never taken from PATH: pynetdicom installs same-named scripts of its own."""
DCMTK_MAX_PDU = 131072
"""The largest PDU DCMTK accepts to receive."""
READY_PATTERN = re.compile(r"DIMSE listening as \S+ on port (\d+)(?:, DICOMweb at (\S+))?")
READY_TIMEOUT_S = 60.0
AUTH_HEADERS: dict[str, str] = {}
"""``Authorization: Bearer`` with the token the spawned server made (DATA_DIR/api-token), once it runs."""
STOP_TIMEOUT_S = 60.0
RSS_INTERVAL_S = 0.05
READ_CHUNK = 1024 * 1024
MB = 1_000_000

DICOM_AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
DICOM_DEFAULT = 'multipart/related; type="application/dicom"'
FRAME_UNCOMPRESSED = 'multipart/related; type="application/octet-stream"'
FRAME_AS_STORED = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
JSON_ACCEPT = "application/dicom+json"
JPEG = "image/jpeg"

# PS3.4 C.4.2.1.5 / C.4.3.1.4: Pending while sub-operations go on; Success, Warning at the end.
PENDING = frozenset({0xFF00, 0xFF01})
SUCCESS = 0x0000


@dataclass(frozen=True)
class Target:
    """What Orthanc 1.10 reaches on this machine class, and which figure of ours it is checked against."""

    text: str
    check: Callable[[dict[str, Any]], bool]


TARGETS: dict[str, Target] = {
    "study_retrieve": Target(">= 700 MB/s", lambda r: r["mb_per_s"] >= 700),
    "study_metadata_30": Target("p50 <= 29 ms", lambda r: r["p50_ms"] <= 29),
    "series_metadata_1000": Target("p95 < 1000 ms", lambda r: r["p95_ms"] < 1000),
    "frame": Target("p50 <= 2.2 ms", lambda r: r["p50_ms"] <= 2.2),
    "c_move": Target(">= 500 inst/s", lambda r: r["instances_per_s"] >= 500),
    "c_get": Target(">= 530 inst/s", lambda r: r["instances_per_s"] >= 530),
}


# --- the archive -----------------------------------------------------------------------------------------


@dataclass
class Study:
    """One study of the benchmark archive, as built."""

    label: str
    source: str
    study_uid: str
    series: list[tuple[str, list[str]]]
    """(Series Instance UID, its SOP Instance UIDs), in build order."""
    sop_class_uid: str
    total_bytes: int = 0

    @property
    def instances(self) -> int:
        return sum(len(sops) for _, sops in self.series)


def load_template(name: str) -> Dataset:
    path = get_testdata_file(name, download=False)
    if path is None:
        raise RuntimeError(f"{name} is not available: pip install pydicom-data (the bench extra)")
    ds = dcmread(path)
    if ds.file_meta.TransferSyntaxUID != ExplicitVRLittleEndian:
        raise RuntimeError(f"{name} must be Explicit VR Little Endian, is {ds.file_meta.TransferSyntaxUID}")
    return ds


def clones(template: Dataset, study: Study, series_sizes: Sequence[int], number: int) -> Iterator[bytes]:
    """Part 10 encodings of ``template`` with new UIDs, one series per size; records the UIDs in ``study``.

    The patient is fictional; the rest of the header, and the pixels, are the real image's."""
    ds = copy.deepcopy(template)
    ds.StudyInstanceUID = study.study_uid
    ds.PatientID = f"BENCHR{number:04d}"
    ds.PatientName = f"Bench^Retrieve{number:04d}"
    ds.AccessionNumber = f"BR{number:08d}"
    ds.StudyID = str(number)
    if "FrameOfReferenceUID" in ds:
        ds.FrameOfReferenceUID = generate_uid()
    for series_number, size in enumerate(series_sizes, 1):
        series_uid = str(generate_uid())
        sops: list[str] = []
        study.series.append((series_uid, sops))
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = series_number
        for instance_number in range(1, size + 1):
            sop = str(generate_uid())
            sops.append(sop)
            ds.SOPInstanceUID = sop
            ds.file_meta.MediaStorageSOPInstanceUID = UID(sop)
            ds.InstanceNumber = instance_number
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            data = buffer.getvalue()
            study.total_bytes += len(data)
            yield data


def build_archive(data_dir: Path, plan: Sequence[tuple[str, str, Sequence[int]]]) -> dict[str, Study]:
    """Store and index every study of ``plan`` ((label, source, series sizes)); checks the catalog."""
    from skypacs.config import Settings
    from skypacs.embedded import EmbeddedArchive

    archive = EmbeddedArchive(Settings(data_dir=data_dir))
    indexer = archive.indexer()
    templates = {source: load_template(SOURCES[source]) for source in {source for _, source, _ in plan}}
    studies: dict[str, Study] = {}
    for number, (label, source, sizes) in enumerate(plan, 1):
        template = templates[source]
        study = Study(label, source, str(generate_uid()), [], str(template.SOPClassUID))
        started = time.perf_counter()
        for position, data in enumerate(clones(template, study, sizes, number), 1):
            archive.store_service.store_part10(data)
            if position % 500 == 0:
                while indexer.drain_once():
                    pass
        while indexer.drain_once():
            pass
        stored = sum(1 for _ in archive.catalog.list_instances(study.study_uid, None))
        if stored != study.instances:
            raise RuntimeError(f"{label}: the catalog holds {stored} of {study.instances} instances")
        logger.info("built %s: %d instances, %.0f MB in %.1f s", label, study.instances,
                    study.total_bytes / MB, time.perf_counter() - started)
        studies[label] = study
    counts = archive.queue.counts()
    if counts.pending or counts.dead:
        raise RuntimeError(f"ingest queue not empty after the build: {counts}")
    del archive, indexer
    gc.collect()  # close the build's SQLite connections before the server opens the files
    return studies


# --- the server ------------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def default_server_command() -> list[str]:
    """The ``skypacs`` installed with this Python, else the one on PATH, else ``python -m skypacs.cli``."""
    beside = Path(sys.executable).with_name("skypacs")
    if beside.exists():
        return [str(beside)]
    exe = shutil.which("skypacs")
    return [exe] if exe else [sys.executable, "-m", "skypacs.cli"]


class SpawnedServer:
    """``skypacs serve`` in a subprocess; ready once it prints where it listens; output in a log file."""

    def __init__(self, *, data_dir: Path, command: Sequence[str] | None, extra_args: Sequence[str]) -> None:
        self.data_dir = data_dir
        self.dimse_port = free_port()
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        self.command = [
            *(command or default_server_command()), "serve",
            "--data-dir", str(data_dir),
            "--dimse-port", str(self.dimse_port),
            "--dimse-host", "127.0.0.1",
            "--http-port", str(free_port()),
            "--ae-title", SERVER_AE,
            *extra_args,
        ]  # fmt: skip
        self.base_url = ""
        self.process: subprocess.Popen[str] | None = None
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, text=True, bufsize=1)
        self._reader = threading.Thread(target=self._pump, name="server-output", daemon=True)
        self._reader.start()
        if not self._ready.wait(READY_TIMEOUT_S) or not self.base_url:
            self.stop()
            raise RuntimeError(f"server did not report DICOMweb listening within {READY_TIMEOUT_S:.0f} s; "
                               f"log: {self.log_path}\n{self.log_tail()}")
        token_file = self.data_dir / "api-token"  # serve's own token, unless the configuration has some
        if token_file.is_file():
            AUTH_HEADERS["Authorization"] = f"Bearer {token_file.read_text().strip()}"

    def _pump(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        with open(self.log_path, "a", encoding="utf-8") as log:
            for line in self.process.stdout:
                log.write(line)
                log.flush()
                match = READY_PATTERN.search(line)
                if match and not self._ready.is_set():
                    self.base_url = (match.group(2) or "").rstrip(",")
                    self._ready.set()
        self._ready.set()  # exited: let start() fail at once

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines(True)[-lines:])
        except OSError:
            return ""

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                logger.warning("server did not stop within %.0f s of SIGTERM; killing it", STOP_TIMEOUT_S)
                self.process.kill()
                self.process.wait()
        if self._reader is not None:
            self._reader.join(5)
        return self.process.returncode


class RssSampler:
    """Summed RSS of a process and its descendants every ``interval`` seconds: the peak overall and per
    phase (a phase's peak is the highest sample taken while it ran)."""

    def __init__(self, pid: int, interval: float = RSS_INTERVAL_S) -> None:
        import psutil

        self._psutil = psutil
        self._process = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._phase: str | None = None
        self.peaks: dict[str, int] = {}
        self.peak_bytes = 0

    def sample(self) -> int:
        try:
            processes = [self._process, *self._process.children(recursive=True)]
        except self._psutil.Error:
            return 0
        total = 0
        for process in processes:
            with contextlib.suppress(self._psutil.Error):  # exited between listing and sampling
                total += process.memory_info().rss
        return total

    def _record(self, value: int) -> None:
        with self._lock:
            self.peak_bytes = max(self.peak_bytes, value)
            if self._phase is not None:
                self.peaks[self._phase] = max(self.peaks.get(self._phase, 0), value)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._record(self.sample())
            self._stop.wait(self._interval)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        with self._lock:
            self._phase = name
            self.peaks[name] = 0
        self._record(self.sample())
        try:
            yield
        finally:
            self._record(self.sample())
            with self._lock:
                self._phase = None

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- HTTP ------------------------------------------------------------------------------------------------


def split_base(base_url: str) -> tuple[str, int, str]:
    """``http://host:port/dicom-web`` -> (host, port, path prefix)."""
    parts = urllib.parse.urlsplit(base_url)
    return parts.hostname or "127.0.0.1", parts.port or 80, parts.path.rstrip("/")


def boundary_of(content_type: str) -> bytes:
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise RuntimeError(f"no boundary in the multipart Content-Type {content_type!r}")
    return match.group(1).encode("ascii")


def retrieve_study(base_url: str, study: Study, accept: str) -> dict[str, Any]:
    """One study retrieve over a fresh connection, read into a reused 1 MB buffer."""
    host, port, prefix = split_base(base_url)
    connection = http.client.HTTPConnection(host, port, timeout=300)
    buffer = bytearray(READ_CHUNK)
    view = memoryview(buffer)
    try:
        started = time.perf_counter()
        connection.request("GET", f"{prefix}/studies/{study.study_uid}", headers={"Accept": accept, **AUTH_HEADERS})
        response = connection.getresponse()
        if response.status != 200:
            raise RuntimeError(f"study retrieve answered {response.status}: {response.read()[:300]!r}")
        delimiter = b"--" + boundary_of(response.getheader("Content-Type", ""))
        overlap = len(delimiter) - 1
        tail = b""
        delimiters = received = 0
        first_byte: float | None = None
        while True:
            count = response.readinto(view)
            if not count:
                break
            if first_byte is None:
                first_byte = time.perf_counter()
            received += count
            # Delimiters inside this chunk, plus one straddling the previous chunk and this one.
            delimiters += buffer.count(delimiter, 0, count)
            delimiters += (tail + bytes(view[:overlap])).count(delimiter)
            tail = bytes(view[max(0, count - overlap):count])
        ended = time.perf_counter()
        declared = response.getheader("Content-Length")
    finally:
        connection.close()
    parts = delimiters - 1  # the close delimiter starts with the delimiter too
    if parts != study.instances:
        raise RuntimeError(f"study retrieve returned {parts} parts, expected {study.instances}")
    if declared is not None and int(declared) != received:
        raise RuntimeError(f"study retrieve returned {received} bytes, Content-Length said {declared}")
    seconds = ended - started
    return {
        "instances": parts,
        "bytes": received,
        "seconds": round(seconds, 3),
        "mb_per_s": round(received / MB / seconds, 1),
        "ttfb_ms": round(((first_byte or ended) - started) * 1000, 1),
        "streaming_mb_per_s": round(received / MB / max(1e-9, ended - (first_byte or started)), 1),
        "content_length": declared is not None,
    }


class LatencyClient:
    """GET over one persistent connection; returns (status, Content-Type, body)."""

    def __init__(self, base_url: str, kind: str) -> None:
        self.host, self.port, self.prefix = split_base(base_url)
        self.kind = kind
        self._connection: http.client.HTTPConnection | None = None
        self._session: Any = None
        if kind == "requests":
            import requests

            self._session = requests.Session()

    def get(self, path: str, accept: str) -> tuple[int, str, bytes]:
        if self._session is not None:
            response = self._session.get(f"http://{self.host}:{self.port}{self.prefix}{path}",
                                         headers={"Accept": accept, **AUTH_HEADERS})
            return response.status_code, response.headers.get("Content-Type", ""), response.content
        if self._connection is None:
            self._connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        self._connection.request("GET", f"{self.prefix}{path}", headers={"Accept": accept, **AUTH_HEADERS})
        answer = self._connection.getresponse()
        body = answer.read()
        if answer.will_close:
            self._connection.close()
            self._connection = None
        return answer.status, answer.getheader("Content-Type", ""), body

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
        if self._session is not None:
            self._session.close()


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def measure_latency(client: LatencyClient, paths: Sequence[str], accept: str, requests: int,
                    check: Callable[[int, str, bytes], str | None]) -> dict[str, Any]:
    """``requests`` GETs cycling through ``paths`` after one untimed warm-up; each answer is checked
    (untimed) by ``check``, which returns a problem or None."""
    status, content_type, body = client.get(paths[0], accept)
    problem = check(status, content_type, body)
    if problem:
        raise RuntimeError(f"GET {paths[0]} ({accept}): {problem}")
    times: list[float] = []
    sizes = 0
    for number in range(requests):
        path = paths[number % len(paths)]
        started = time.perf_counter()
        status, content_type, body = client.get(path, accept)
        times.append((time.perf_counter() - started) * 1000)
        problem = check(status, content_type, body)
        if problem:
            raise RuntimeError(f"GET {path} ({accept}): {problem}")
        sizes += len(body)
    times.sort()
    return {
        "requests": requests,
        "p50_ms": round(percentile(times, 50), 2),
        "p95_ms": round(percentile(times, 95), 2),
        "p99_ms": round(percentile(times, 99), 2),
        "max_ms": round(times[-1], 2),
        "mean_body_bytes": sizes // max(1, requests),
    }


def check_metadata(expected: int) -> Callable[[int, str, bytes], str | None]:
    def check(status: int, content_type: str, body: bytes) -> str | None:
        if status != 200:
            return f"status {status}: {body[:200]!r}"
        if not body.startswith(b"[") or body.count(b'"00080018"') != expected:
            return f"expected {expected} instances in the metadata"
        return None

    return check


def check_media(media_type: str, minimum: int) -> Callable[[int, str, bytes], str | None]:
    def check(status: int, content_type: str, body: bytes) -> str | None:
        if status != 200:
            return f"status {status}: {body[:200]!r}"
        if not content_type.startswith(media_type):
            return f"Content-Type {content_type!r}, expected {media_type}"
        if len(body) < minimum:
            return f"only {len(body)} bytes"
        return None

    return check


# --- DIMSE -----------------------------------------------------------------------------------------------


def _nodelay(assoc: Any) -> None:
    with contextlib.suppress(AttributeError, OSError):
        assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def counting_scp_main(port: int, max_pdu: int, commands: Any) -> None:
    """The C-MOVE destination, in its own process: accepts every storage SOP class, counts, answers
    Success without decoding anything. Commands over a pipe: "count", "stop"."""
    import logging as process_logging

    from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, evt

    process_logging.getLogger("pynetdicom").setLevel(process_logging.CRITICAL)
    lock = threading.Lock()
    totals = {"instances": 0, "bytes": 0}

    def handle_open(event: Any) -> None:
        _nodelay(event.assoc)

    def handle_store(event: Any) -> int:
        size = event.request.DataSet.getbuffer().nbytes
        with lock:
            totals["instances"] += 1
            totals["bytes"] += size
        return SUCCESS

    ae = AE(ae_title=DESTINATION_AE)
    ae.maximum_pdu_size = max_pdu
    ae.network_timeout = ae.dimse_timeout = ae.acse_timeout = 60
    for context in StoragePresentationContexts:
        ae.add_supported_context(str(context.abstract_syntax), ALL_TRANSFER_SYNTAXES)
    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_CONN_OPEN, handle_open), (evt.EVT_C_STORE, handle_store)])
    commands.send("ready")
    while True:
        command = commands.recv()
        if command == "count":
            with lock:
                commands.send(dict(totals))
        elif command == "stop":
            if server is not None:
                server.shutdown()
            commands.send("stopped")
            return


class CountingScp:
    """Handle on the counting storage SCP process."""

    def __init__(self, max_pdu: int) -> None:
        self.port = free_port()
        context = multiprocessing.get_context("spawn")
        self._commands, child = context.Pipe()
        self.process = context.Process(target=counting_scp_main, args=(self.port, max_pdu, child),
                                       name="bench-storage-scp", daemon=True)

    def start(self) -> None:
        self.process.start()
        if not self._commands.poll(30) or self._commands.recv() != "ready":
            raise RuntimeError("the counting storage SCP did not start")

    def totals(self) -> dict[str, int]:
        self._commands.send("count")
        return dict(self._commands.recv())

    def stop(self) -> None:
        if self.process.is_alive():
            self._commands.send("stop")
            if self._commands.poll(10):
                self._commands.recv()
            self.process.join(10)
            if self.process.is_alive():
                self.process.terminate()


class DcmtkStoreScp:
    """DCMTK storescp as a second C-MOVE destination: a peer without pynetdicom's polling, so that what
    is left is the server's own cost. ``--ignore`` receives every object and answers Success without
    writing it; the count is the server's (Number of Completed Sub-operations)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if not Path(DCMTK_STORESCP).exists():
            raise RuntimeError(f"DCMTK storescp not found at {DCMTK_STORESCP}: apt-get install dcmtk")
        self.process = subprocess.Popen(
            [DCMTK_STORESCP, "--ignore", "-aet", DCMTK_DESTINATION_AE, "-pdu", str(DCMTK_MAX_PDU), str(self.port)],
            env=dcmtk_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("DCMTK storescp did not start listening")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def dcmtk_environment() -> dict[str, str]:
    """DCMTK leaves Nagle's algorithm on unless TCP_NODELAY is set in the environment (as built for
    Debian): without it, every small PDU waits for a delayed ACK, ~40 ms per sub-operation."""
    return {**os.environ, "TCP_NODELAY": "1"}


def study_identifier(study_uid: str) -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_uid
    return identifier


def _final(responses: Iterator[tuple[Any, Any]]) -> tuple[int, int, Any]:
    """Iterate C-MOVE/C-GET responses: (pending responses, final status, final status dataset)."""
    pending, final_status, final = 0, None, None
    for status, _identifier in responses:
        if not status or "Status" not in status:
            raise RuntimeError("no response (timeout or abort)")
        if int(status.Status) in PENDING:
            pending += 1
        else:
            final_status, final = int(status.Status), status
    if final_status is None:
        raise RuntimeError("no final response")
    return pending, final_status, final


def _outcome(study: Study, seconds: float, final_status: int, completed: int, failed: int, warning: int,
             received: int | None = None) -> dict[str, Any]:
    """Figures of one C-MOVE/C-GET; ``received`` is what the Storage SCP counted, when it counts."""
    received = completed if received is None else received
    if final_status != SUCCESS or received != study.instances:
        raise RuntimeError(f"final status 0x{final_status:04X}, {received} of {study.instances} received "
                           f"({completed} completed, {failed} failed, {warning} warning)")
    return {
        "instances": received,
        "megabytes": round(study.total_bytes / MB, 1),
        "seconds": round(seconds, 3),
        "instances_per_s": round(received / seconds, 1),
        "mb_per_s": round(study.total_bytes / MB / seconds, 1),
        "completed": completed,
        "failed": failed,
        "warning": warning,
    }


def _counts(final: Any) -> tuple[int, int, int]:
    """(completed, failed, warning) sub-operations of a final C-MOVE/C-GET response."""
    completed, failed, warning = (int(getattr(final, f"Number{kind}Suboperations", 0) or 0)
                                  for kind in ("OfCompleted", "OfFailed", "OfWarning"))
    return completed, failed, warning


def retrieve_ae(timeout: float = 120) -> Any:
    from pynetdicom import AE

    ae = AE(ae_title=SCU_AE)
    ae.acse_timeout = ae.network_timeout = 60
    ae.dimse_timeout = timeout
    return ae


def c_move(server_port: int, study: Study, destination: str, scp: CountingScp | None) -> dict[str, Any]:
    """One Study Root C-MOVE with a pynetdicom SCU; ``scp`` counts what arrived, if it is the destination."""
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove  # type: ignore[attr-defined]

    ae = retrieve_ae()
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", server_port, ae_title=SERVER_AE, max_pdu=0)
    if not assoc.is_established:
        raise RuntimeError("C-MOVE: association rejected or aborted")
    try:
        if not any(c.abstract_syntax == StudyRootQueryRetrieveInformationModelMove for c in assoc.accepted_contexts):
            raise RuntimeError("C-MOVE: the server does not accept Study Root MOVE (no C-MOVE SCP yet?)")
        _nodelay(assoc)
        before = scp.totals()["instances"] if scp is not None else 0
        started = time.perf_counter()
        responses = assoc.send_c_move(study_identifier(study.study_uid), destination,
                                      StudyRootQueryRetrieveInformationModelMove)
        _pending, final_status, final = _final(responses)
        seconds = time.perf_counter() - started
    finally:
        assoc.release()
    received = scp.totals()["instances"] - before if scp is not None else None
    return _outcome(study, seconds, final_status, *_counts(final), received=received)


def c_get(server_port: int, study: Study, *, context_per_syntax: bool) -> dict[str, Any]:
    """One Study Root C-GET with a pynetdicom SCU acting as Storage SCP on its own association.

    Its storage contexts propose Explicit then Implicit VR Little Endian: in one context (what most SCUs
    send; the server then chooses which of the two it sends in) or, with ``context_per_syntax``, in one
    context each (both accepted, so the server can send each object as stored)."""
    from pynetdicom import build_context, build_role, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet  # type: ignore[attr-defined]

    lock = threading.Lock()
    received = [0]

    def handle_store(_event: Any) -> int:
        with lock:
            received[0] += 1
        return SUCCESS

    syntaxes: list[str] = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    storage = ([build_context(study.sop_class_uid, [syntax]) for syntax in syntaxes] if context_per_syntax
               else [build_context(study.sop_class_uid, syntaxes)])
    ae = retrieve_ae()
    assoc = ae.associate("127.0.0.1", server_port, ae_title=SERVER_AE, max_pdu=0,
                         contexts=[build_context(StudyRootQueryRetrieveInformationModelGet), *storage],
                         ext_neg=[build_role(study.sop_class_uid, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, handle_store)])
    if not assoc.is_established:
        raise RuntimeError("C-GET: association rejected or aborted")
    try:
        if not any(c.abstract_syntax == StudyRootQueryRetrieveInformationModelGet for c in assoc.accepted_contexts):
            raise RuntimeError("C-GET: the server does not accept Study Root GET (no C-GET SCP yet?)")
        _nodelay(assoc)
        started = time.perf_counter()
        responses = assoc.send_c_get(study_identifier(study.study_uid), StudyRootQueryRetrieveInformationModelGet)
        _pending, final_status, final = _final(responses)
        seconds = time.perf_counter() - started
    finally:
        assoc.release()
    return _outcome(study, seconds, final_status, *_counts(final), received=received[0])


_GETSCU_COUNT = re.compile(r"Number of (Completed|Failed|Warning) Suboperations\s*:\s*(\d+)")


def c_get_dcmtk(server_port: int, study: Study) -> dict[str, Any]:
    """One Study Root C-GET with DCMTK getscu (``--ignore``: received, answered Success, not written),
    timed from starting the process to its exit (process start and association included)."""
    if not Path(DCMTK_GETSCU).exists():
        raise RuntimeError(f"DCMTK getscu not found at {DCMTK_GETSCU}: apt-get install dcmtk")
    command = [DCMTK_GETSCU, "-v", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study.study_uid}",
               "-aet", SCU_AE, "-aec", SERVER_AE, "--ignore", "-pdu", str(DCMTK_MAX_PDU), "127.0.0.1", str(server_port)]
    started = time.perf_counter()
    done = subprocess.run(command, env=dcmtk_environment(), capture_output=True, text=True, timeout=600, check=False)
    seconds = time.perf_counter() - started
    counts = {kind: int(value) for kind, value in _GETSCU_COUNT.findall(done.stdout + done.stderr)}
    if done.returncode != 0 or "Completed" not in counts:
        raise RuntimeError(f"getscu exited with {done.returncode}: {(done.stdout + done.stderr)[-300:]}")
    final_status = SUCCESS if counts.get("Failed", 0) == 0 and counts.get("Warning", 0) == 0 else 0xB000
    return _outcome(study, seconds, final_status, counts["Completed"], counts.get("Failed", 0),
                    counts.get("Warning", 0))


# --- the run ---------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the report."""

    key: str
    measurement: str
    figures: dict[str, Any]
    peak_rss_mb: float | None = None
    target: str | None = None
    met: bool | None = None
    error: str | None = None


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    build: dict[str, Any] = field(default_factory=dict)
    baseline_rss_mb: float | None = None
    peak_rss_mb: float | None = None
    server_exit_code: int | None = None
    command: str = ""


class Runner:
    def __init__(self, args: argparse.Namespace, server: SpawnedServer, sampler: RssSampler,
                 studies: dict[str, Study], report: Report) -> None:
        self.args, self.server, self.sampler, self.studies, self.report = args, server, sampler, studies, report

    def run(self, key: str, measurement: str, target_key: str | None, measure: Callable[[], dict[str, Any]]) -> None:
        """Measure one row; a failure is reported in the row and the run goes on."""
        logger.info("measuring %s", measurement)
        row = Row(key, measurement, {})
        phase = f"{key}:{len(self.report.rows)}"
        try:
            with self.sampler.phase(phase):
                row.figures = measure()
        except Exception as exc:  # noqa: BLE001 - reported in the table; the other measurements still run
            row.error = f"{type(exc).__name__}: {exc}"
            logger.warning("%s failed: %s", measurement, row.error)
        row.peak_rss_mb = round(self.sampler.peaks.get(phase, 0) / MB, 1) or None
        if target_key is not None:
            target = TARGETS[target_key]
            row.target = target.text
            row.met = target.check(row.figures) if row.error is None else None
        self.report.rows.append(row)

    def http_measurements(self) -> None:
        base, large, small, meta = (self.server.base_url, self.studies["large"], self.studies["small"],
                                    self.studies["metadata"])
        retrieve_study(base, small, DICOM_AS_STORED)  # warm-up
        for accept, label in ((DICOM_AS_STORED, "transfer-syntax=*"), (DICOM_DEFAULT, "default (Explicit VR LE)")):
            for run in range(1, self.args.runs + 1):
                self.run("study_retrieve", f"WADO study retrieve, {large.instances} instances "
                         f"({large.total_bytes / MB:,.0f} MB), {label}, run {run}",
                         "study_retrieve", partial(retrieve_study, base, large, accept))
        client = LatencyClient(base, self.args.latency_client)
        try:
            for series_uid, sops in meta.series:
                size = len(sops)
                self.run(f"series_metadata_{size}", f"series metadata, {size} instances",
                         "series_metadata_1000" if size == 1000 else None,
                         partial(measure_latency, client, [f"/studies/{meta.study_uid}/series/{series_uid}/metadata"],
                                 JSON_ACCEPT, self.args.requests, check_metadata(size)))
            self.run("study_metadata_30", f"study metadata, {small.instances} instances", "study_metadata_30",
                     lambda: measure_latency(client, [f"/studies/{small.study_uid}/metadata"], JSON_ACCEPT,
                                             self.args.requests, check_metadata(small.instances)))
            series_uid, sops = small.series[0]
            instances = [f"/studies/{small.study_uid}/series/{series_uid}/instances/{sop}" for sop in sops]
            frame_bytes = 512 * 512 * 2
            for accept, label in ((FRAME_UNCOMPRESSED, "uncompressed"), (FRAME_AS_STORED, "transfer-syntax=*")):
                self.run("frame", f"single frame (frames/1), {label}", "frame",
                         partial(measure_latency, client, [f"{path}/frames/1" for path in instances], accept,
                                 self.args.frame_requests, check_media("multipart/related", frame_bytes)))
            for resource in ("rendered", "thumbnail"):
                self.run(resource, f"{resource} (image/jpeg), instance", None,
                         partial(measure_latency, client, [f"{path}/{resource}" for path in instances], JPEG,
                                 self.args.render_requests, check_media(JPEG, 100)))
        finally:
            client.close()

    def dimse_measurements(self, scp: CountingScp | None, dcmtk_scp: DcmtkStoreScp | None) -> None:
        port = self.server.dimse_port
        peers = self.args.dimse_peers
        variants: list[tuple[str, str, Callable[[Study], dict[str, Any]]]] = []
        if scp is not None:
            variants.append(("c_move", "C-MOVE to a pynetdicom Storage SCP",
                             lambda study: c_move(port, study, DESTINATION_AE, scp)))
        if dcmtk_scp is not None:
            variants.append(("c_move", "C-MOVE to DCMTK storescp",
                             lambda study: c_move(port, study, DCMTK_DESTINATION_AE, None)))
        if "pynetdicom" in peers:
            variants.append(("c_get", "C-GET, pynetdicom SCU, Explicit+Implicit VR LE in one context",
                             lambda study: c_get(port, study, context_per_syntax=False)))
            variants.append(("c_get", "C-GET, pynetdicom SCU, one context per syntax",
                             lambda study: c_get(port, study, context_per_syntax=True)))
        if "dcmtk" in peers:
            variants.append(("c_get", "C-GET, DCMTK getscu", lambda study: c_get_dcmtk(port, study)))
        small = self.studies["small"]
        for key, label, function in variants:
            try:
                function(small)  # warm-up
            except Exception as exc:  # noqa: BLE001 - the timed runs will report it
                logger.warning("%s warm-up failed: %s", label, exc)
            for source in self.args.move_sources:
                study = self.studies[f"move-{source}"]
                what = f"{SOURCES[source]} x {study.instances}, {study.total_bytes / study.instances / 1000:,.0f} KB each"
                for run in range(1, self.args.dimse_runs + 1):
                    self.run(key, f"{label} ({what}), run {run}", key,
                             partial(function, study))


def write_destinations(data_dir: Path, destinations: dict[str, int]) -> None:
    """DATA_DIR/skypacs.toml with the C-MOVE destinations (AE title -> port on 127.0.0.1)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lines = ["[dimse.destinations]", *(f'{title} = "127.0.0.1:{port}"' for title, port in destinations.items())]
    (data_dir / "skypacs.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def plan_for(args: argparse.Namespace) -> list[tuple[str, str, list[int]]]:
    plan: list[tuple[str, str, list[int]]] = []
    if not args.no_wado:
        plan.append(("large", "ct", [args.study_size]))
        plan.append(("metadata", "ct", args.series_sizes))
    plan.append(("small", "ct", [SMALL_STUDY_SIZE]))
    if not args.no_dimse:
        plan.extend((f"move-{source}", source, [args.move_size]) for source in args.move_sources)
    return plan


def run_benchmark(args: argparse.Namespace, root: Path) -> Report:
    report = Report()
    data_dir = root / "data"
    plan = plan_for(args)
    started = time.perf_counter()
    studies = build_archive(data_dir, plan)
    report.build = {
        "seconds": round(time.perf_counter() - started, 1),
        "studies": {label: {"instances": s.instances, "series": [len(sops) for _, sops in s.series],
                            "megabytes": round(s.total_bytes / MB, 1), "source": SOURCES[s.source]}
                    for label, s in studies.items()},
    }
    scp = CountingScp(args.scp_max_pdu) if not args.no_dimse and "pynetdicom" in args.dimse_peers else None
    dcmtk_scp = DcmtkStoreScp() if not args.no_dimse and "dcmtk" in args.dimse_peers else None
    write_destinations(data_dir, {**({DESTINATION_AE: scp.port} if scp else {}),
                                  **({DCMTK_DESTINATION_AE: dcmtk_scp.port} if dcmtk_scp else {})})
    server = SpawnedServer(data_dir=data_dir,
                           command=shlex.split(args.server_command) if args.server_command else None,
                           extra_args=shlex.split(args.server_args))
    report.command = shlex.join(server.command)
    logger.info("starting %s", report.command)
    server.start()
    try:
        for peer in (scp, dcmtk_scp):
            if peer is not None:
                peer.start()
        with RssSampler(server.pid) as sampler:
            time.sleep(1.0)  # let the indexer process settle
            report.baseline_rss_mb = round(sampler.sample() / MB, 1)
            runner = Runner(args, server, sampler, studies, report)
            if not args.no_wado:
                runner.http_measurements()
            if not args.no_dimse:
                runner.dimse_measurements(scp, dcmtk_scp)
        report.peak_rss_mb = round(sampler.peak_bytes / MB, 1)
    finally:
        for peer in (scp, dcmtk_scp):
            if peer is not None:
                peer.stop()
        report.server_exit_code = server.stop()
    if report.server_exit_code != 0:
        logger.warning("server exited with %s; log: %s", report.server_exit_code, server.log_path)
    return report


# --- output ----------------------------------------------------------------------------------------------


def describe(row: Row) -> str:
    f = row.figures
    if row.error:
        return f"ERROR {row.error}"
    if "mb_per_s" in f and "ttfb_ms" in f:
        return (f"{f['mb_per_s']:,.0f} MB/s ({f['bytes'] / MB:,.0f} MB in {f['seconds']:.2f} s; first byte after "
                f"{f['ttfb_ms']:.0f} ms, {f['streaming_mb_per_s']:,.0f} MB/s from there)")
    if "instances_per_s" in f:
        return (f"{f['instances_per_s']:,.0f} inst/s ({f['instances']} in {f['seconds']:.2f} s, "
                f"{f['mb_per_s']:,.0f} MB/s)")
    return (f"p50 {f['p50_ms']:.2f}  p95 {f['p95_ms']:.2f}  p99 {f['p99_ms']:.2f} ms "
            f"(n={f['requests']}, {f['mean_body_bytes'] / 1000:,.1f} KB)")


def format_table(report: Report) -> str:
    header = ("measurement", "result", "peak RSS MB (over idle)", "target (Orthanc 1.10)", "met")
    rows = [header]
    for row in report.rows:
        met = "" if row.met is None else ("yes" if row.met else "NO")
        rss = "-"
        if row.peak_rss_mb is not None:
            rss = f"{row.peak_rss_mb:,.0f}"
            if report.baseline_rss_mb is not None:
                rss += f" ({row.peak_rss_mb - report.baseline_rss_mb:+,.0f})"
        rows.append((row.measurement, describe(row), rss, row.target or "", met))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i == 2 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [line(rows[0]), "  ".join("-" * w for w in widths), *(line(r) for r in rows[1:])]
    lines.append("")
    lines.append(f"server RSS (process tree): idle baseline {report.baseline_rss_mb} MB, "
                 f"peak over the whole run {report.peak_rss_mb} MB")
    return "\n".join(lines)


def format_build(report: Report) -> str:
    studies = ", ".join(f"{label} {s['instances']} ({'+'.join(map(str, s['series']))}) x {s['source']}"
                        for label, s in report.build["studies"].items())
    return f"archive built in {report.build['seconds']} s: {studies}"


# --- command line ----------------------------------------------------------------------------------------


def _sizes(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("sizes must be integers >= 1")
    return values


def _sources(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [v for v in values if v not in SOURCES]
    if not values or unknown:
        raise argparse.ArgumentTypeError(f"sources are {', '.join(SOURCES)}; got {text!r}")
    return values


def _peers(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    if not values or any(v not in ("pynetdicom", "dcmtk") for v in values):
        raise argparse.ArgumentTypeError(f"peers are pynetdicom and dcmtk; got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/retrieve.py",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""\
examples:
  python bench/retrieve.py                          # everything, 2,000-instance (1 GB) study; ~2-3 min on 2 cores
  python bench/retrieve.py --study-size 500 --no-dimse --runs 1
  python bench/retrieve.py --move-sources ct --scp-max-pdu 16382 --json > retrieve.json
""",
    )
    data = parser.add_argument_group("archive")
    data.add_argument("--study-size", type=int, default=2000,
                      help="instances in the large study (526 KB each; default 2000, about 1.05 GB)")
    data.add_argument("--series-sizes", type=_sizes, default=[30, 100, 1000], metavar="N[,N...]",
                      help="series of the metadata study (default 30,100,1000)")
    data.add_argument("--move-size", type=int, default=1000, help="instances in each move study (default 1000)")
    data.add_argument("--move-sources", type=_sources, default=["small", "ct"], metavar="SOURCE[,SOURCE]",
                      help="move studies to build: small (CT_small.dcm, 39 KB) and/or ct (693_UNCR.dcm, 526 KB); "
                      "default small,ct")
    data.add_argument("--data-dir", type=Path,
                      help="parent directory for the data directory and the server log (default: a temporary "
                      "directory, removed afterwards unless --keep-data)")
    data.add_argument("--keep-data", action="store_true", help="keep the data directory and server log")

    measure = parser.add_argument_group("measurements")
    measure.add_argument("--runs", type=int, default=2,
                         help="study retrieves per Accept (default 2); one row each")
    measure.add_argument("--dimse-runs", type=int, default=1,
                         help="C-MOVEs and C-GETs per variant and move study (default 1); one row each")
    measure.add_argument("--dimse-peers", type=_peers, default=["pynetdicom", "dcmtk"], metavar="PEER[,PEER]",
                         help="C-MOVE destinations and C-GET SCUs: pynetdicom (the benchmark's own) and/or dcmtk "
                         "(/usr/bin/storescp and /usr/bin/getscu with --ignore); default pynetdicom,dcmtk")
    measure.add_argument("--requests", type=int, default=50, help="metadata requests per resource (default 50)")
    measure.add_argument("--frame-requests", type=int, default=200, help="frame requests per Accept (default 200)")
    measure.add_argument("--render-requests", type=int, default=50,
                         help="rendered and thumbnail requests (default 50)")
    measure.add_argument("--latency-client", choices=["http.client", "requests"], default="http.client",
                         help="client of the latency measurements, on one persistent connection: http.client "
                         "(least overhead, default) or requests.Session")
    measure.add_argument("--scp-max-pdu", type=int, default=0,
                         help="maximum PDU the C-MOVE destination receives (default 0 = unlimited; 16382 is "
                         "pynetdicom's default, 16384 DCMTK storescp's)")
    measure.add_argument("--no-wado", action="store_true", help="skip the DICOMweb measurements")
    measure.add_argument("--no-dimse", action="store_true", help="skip C-MOVE and C-GET")

    server = parser.add_argument_group("server")
    server.add_argument("--server-command",
                        help="the skypacs executable, as one shell-quoted string (default: the 'skypacs' beside "
                        "this Python, else on PATH, else 'python -m skypacs.cli'); 'serve' and options are appended")
    server.add_argument("--server-args", default="",
                        help="extra arguments for 'skypacs serve', one shell-quoted string, e.g. "
                        "--server-args='--log-level WARNING'")

    parser.add_argument("--json", action="store_true", help="print the results as one JSON document")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if min(args.study_size, args.move_size, args.runs, args.dimse_runs, args.requests, args.frame_requests,
           args.render_requests) < 1:
        parser.error("sizes, --runs and request counts must be >= 1")
    if args.no_wado and args.no_dimse:
        parser.error("--no-wado and --no-dimse leave nothing to measure")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    # SIGTERM unwinds like Ctrl-C, so that the server and the storage SCPs are stopped, not orphaned.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    if args.data_dir is not None:
        args.data_dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="skypacs-bench-retrieve-", dir=args.data_dir))
    failed = True
    try:
        report = run_benchmark(args, root)
        failed = any(row.error for row in report.rows) or report.server_exit_code != 0
    except (RuntimeError, OSError) as exc:
        print(f"retrieve.py: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if failed or args.keep_data:
            print(f"data directory and server log are under {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        document = {"benchmark": "retrieve", "arguments": {k: (str(v) if isinstance(v, Path) else v)
                                                           for k, v in vars(args).items()},
                    "cpus": os.cpu_count(), **asdict(report)}
        print(json.dumps(document, indent=2))
    else:
        print(format_build(report))
        print(f"server: {report.command}")
        print(format_table(report))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
