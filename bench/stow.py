"""STOW-RS benchmark for SkyPACS: how fast does ``POST /studies`` take in CT images, and at what memory cost?

Not a test: run it by hand (``python bench/stow.py --help``). It needs pydicom, pydicom-data (for the real
512x512 CT slice), requests and psutil (the ``bench`` extra).

Every instance is a clone of one real CT slice, ``693_UNCR.dcm`` of pydicom-data (512x512, 16-bit,
Explicit VR Little Endian, 526 KB), with new Study/Series/SOP Instance UIDs (one study per request). Each
measurement starts a fresh ``skypacs serve`` on a new data directory with free DIMSE and HTTP ports, so
that its peak memory is over its own idle baseline and its indexing time is its own. The requests are
``POST {root}/studies`` with ``Content-Type: multipart/related; type="application/dicom"; boundary=...``,
one part per Part 10 instance; when the server wrote a bearer token to DATA_DIR/api-token on start
(waited for up to ``--token-wait`` seconds), every request sends ``Authorization: Bearer <token>``.

Measurements:

- batches: for each ``--batch-sizes`` (default 1, 10 and 100 instances per request), ``--instances``
  instances (default 300) sent one request after the other over one persistent connection
  (requests.Session). Every instance is encoded, and every multipart body assembled (with a
  Content-Length), before the clock starts; the clock stops at the last response. One untimed warm-up
  request of one instance comes first (its instance is counted in the catalog, not in the rate).
- large request: ``--large-size`` instances (default 2,000, about 1.05 GB) in ONE request, the body
  streamed from a generator with chunked transfer encoding, so that the client never holds it: each
  instance's header (with its UIDs) is encoded before the clock starts, and the pixel data element, the
  same bytes for every instance, is shared. The point is the server's peak memory: the body is read as a
  stream, so it must not grow with the request size (compare ``--large-size 500`` with the default).

For each: instances/s and MB/s (1 MB = 10^6 bytes of Part 10 data, the multipart envelope not counted)
from sending the first request to the last response; the answer's status and how many instances it
lists as stored (ReferencedSOPSequence) and failed; the peak resident memory (RSS) of the server process
and its children (the indexer), sampled every 50 ms, and its idle baseline after start-up; and how long
until everything is indexed (DATA_DIR/catalog.sqlite, ``SELECT count(*) FROM instances``, polled every
100 ms), counted from the first request and from the last response.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import logging
import os
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
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

logger = logging.getLogger("bench.stow")

REAL_CT = "693_UNCR.dcm"
"""From pydicom-data: a 512x512 16-bit CT slice (CQ500, anonymised), Explicit VR Little Endian, ~526 KB."""
SERVER_AE = "SKYPACS"
READY_PATTERN = re.compile(r"DIMSE listening as \S+ on port (\d+)(?:, DICOMweb at (\S+))?")
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 120.0
RSS_INTERVAL_S = 0.05
INDEX_POLL_S = 0.1
TOKEN_FILE = "api-token"
CATALOG_FILE = "catalog.sqlite"
CATALOG_TABLE = "instances"
MB = 1_000_000

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
REFERENCED_SOP_SEQUENCE = "00081199"
FAILED_SOP_SEQUENCE = "00081198"


# --- the instances ---------------------------------------------------------------------------------------


def load_template() -> Dataset:
    path = get_testdata_file(REAL_CT, download=False)
    if path is None:
        raise RuntimeError(f"{REAL_CT} is not available: pip install pydicom-data (the bench extra)")
    ds = dcmread(path)
    if ds.file_meta.TransferSyntaxUID != ExplicitVRLittleEndian:
        raise RuntimeError(f"{REAL_CT} must be Explicit VR Little Endian, is {ds.file_meta.TransferSyntaxUID}")
    if list(ds.keys())[-1] != 0x7FE00010:
        raise RuntimeError(f"{REAL_CT}: Pixel Data must be the last element for the streamed request")
    return ds


def encode(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


class Cloner:
    """New studies of the template: a fictional patient, new UIDs; the rest of the header, and the pixels,
    are the real image's."""

    def __init__(self, template: Dataset) -> None:
        self.template = template
        self.studies = 0

    def _study(self) -> Dataset:
        self.studies += 1
        ds = copy.deepcopy(self.template)
        ds.StudyInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.PatientID = f"BENCHS{self.studies:04d}"
        ds.PatientName = f"Bench^Stow{self.studies:04d}"
        ds.AccessionNumber = f"BS{self.studies:08d}"
        ds.StudyID = str(self.studies)
        if "FrameOfReferenceUID" in ds:
            ds.FrameOfReferenceUID = generate_uid()
        return ds

    @staticmethod
    def _next_instance(ds: Dataset, number: int) -> None:
        sop = generate_uid()
        ds.SOPInstanceUID = sop
        ds.file_meta.MediaStorageSOPInstanceUID = UID(sop)
        ds.InstanceNumber = number

    def study(self, size: int) -> Iterator[bytes]:
        """Part 10 encodings of ``size`` instances of one new study and series."""
        ds = self._study()
        for number in range(1, size + 1):
            self._next_instance(ds, number)
            yield encode(ds)

    def split_study(self, size: int) -> tuple[list[bytes], bytes]:
        """One new study as (each instance's encoding up to its Pixel Data element, that element's encoding,
        the same for all): the instance is header + pixel element, so ``size`` instances of 526 KB cost
        ``size`` small headers and one pixel element in memory."""
        ds = self._study()
        pixel_element = ds[0x7FE00010]
        pixels = ds.PixelData
        del ds[0x7FE00010]
        headers: list[bytes] = []
        for number in range(1, size + 1):
            self._next_instance(ds, number)
            headers.append(encode(ds))
        ds[0x7FE00010] = pixel_element
        whole = encode(ds)
        if not whole.startswith(headers[-1]):
            raise RuntimeError("the Part 10 encoding without Pixel Data is not a prefix of the whole")
        element = whole[len(headers[-1]):]
        check = dcmread(io.BytesIO(headers[0] + element))
        if check.PixelData != pixels or check.InstanceNumber != 1:
            raise RuntimeError("a header + pixel element instance does not read back as the clone")
        return headers, element


# --- the multipart body ----------------------------------------------------------------------------------


def new_boundary() -> str:
    return f"skypacs-bench-{uuid.uuid4().hex}"


def content_type(boundary: str) -> str:
    return f'multipart/related; type="{DICOM}"; boundary={boundary}'


def part_head(boundary: str) -> bytes:
    return f"--{boundary}\r\nContent-Type: {DICOM}\r\n\r\n".encode("ascii")


def closing(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode("ascii")


def multipart_body(blobs: Sequence[bytes], boundary: str) -> bytes:
    head = part_head(boundary)
    pieces: list[bytes] = []
    for blob in blobs:
        pieces += (head, blob, b"\r\n")
    pieces.append(closing(boundary))
    return b"".join(pieces)


def streamed_body(headers: Sequence[bytes], pixel_element: bytes, boundary: str) -> Iterator[bytes]:
    """The multipart body as chunks (requests sends a generator with chunked transfer encoding); the pixel
    element is yielded as the same object every time, never copied."""
    head = part_head(boundary)
    for header in headers:
        yield head + header
        yield pixel_element
        yield b"\r\n"
    yield closing(boundary)


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
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        self.command = [
            *(command or default_server_command()), "serve",
            "--data-dir", str(data_dir),
            "--dimse-port", str(free_port()),
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
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, text=True, bufsize=1)
        self._reader = threading.Thread(target=self._pump, name="server-output", daemon=True)
        self._reader.start()
        if not self._ready.wait(READY_TIMEOUT_S) or not self.base_url:
            self.stop()
            raise RuntimeError(f"server did not report DICOMweb listening within {READY_TIMEOUT_S:.0f} s; "
                               f"log: {self.log_path}\n{self.log_tail()}")

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

    def token(self, wait: float) -> str | None:
        """The bearer token the server wrote to DATA_DIR/api-token, waiting up to ``wait`` s for the file
        (servers without authentication never write it)."""
        path = self.data_dir / TOKEN_FILE
        deadline = time.monotonic() + wait
        while True:
            with contextlib.suppress(OSError):
                text = path.read_text(encoding="utf-8").strip()
                if text:
                    return text
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

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
    """Summed RSS of a process and (with ``children``) its descendants every ``interval`` seconds; the peak."""

    def __init__(self, pid: int, interval: float = RSS_INTERVAL_S, *, children: bool = True) -> None:
        import psutil

        self._psutil = psutil
        self._process = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._children = children
        self.peak_bytes = 0

    def sample(self) -> int:
        try:
            processes = [self._process]
            if self._children:
                processes += self._process.children(recursive=True)
        except self._psutil.Error:
            return 0
        total = 0
        for process in processes:
            with contextlib.suppress(self._psutil.Error):  # exited between listing and sampling
                total += process.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self.sample())
            self._stop.wait(self._interval)

    def __enter__(self) -> Self:
        self.peak_bytes = self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self.sample())


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
    """Wait until the catalog holds ``target`` instances; the perf_counter time it did, or None and why."""
    deadline = time.perf_counter() + timeout
    while True:
        count, why = catalog_count(data_dir)
        if count is not None and count >= target:
            return time.perf_counter(), ""
        if time.perf_counter() >= deadline:
            return None, f"indexing not finished after {timeout:.0f} s: " + (
                why if count is None else f"{count} of {target} in the catalog")
        time.sleep(INDEX_POLL_S)


# --- the requests ----------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    stored: int
    failed: int
    error: str = ""


def post(session: Any, url: str, body: bytes | Iterator[bytes], boundary: str, timeout: float) -> Answer:
    response = session.post(url, data=body, timeout=timeout,
                            headers={"Content-Type": content_type(boundary), "Accept": DICOM_JSON})
    try:
        document = response.json()
    except ValueError:
        document = None
    if not isinstance(document, dict):
        return Answer(response.status_code, 0, 0, f"HTTP {response.status_code}: {response.text[:200]!r}")
    stored = len(document.get(REFERENCED_SOP_SEQUENCE, {}).get("Value", []))
    failed = len(document.get(FAILED_SOP_SEQUENCE, {}).get("Value", []))
    error = "" if response.status_code == 200 else f"HTTP {response.status_code}"
    return Answer(response.status_code, stored, failed, error)


def new_session(token: str | None) -> Any:
    import requests

    session = requests.Session()
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    return session


# --- the measurements ------------------------------------------------------------------------------------


@dataclass
class Row:
    measurement: str
    batch_size: int
    requests: int
    instances: int
    bytes: int
    seconds: float | None = None
    instances_per_s: float | None = None
    mb_per_s: float | None = None
    statuses: dict[str, int] = field(default_factory=dict)
    stored: int = 0
    failed: int = 0
    baseline_rss_mb: float | None = None
    peak_rss_mb: float | None = None
    client_peak_rss_mb: float | None = None
    indexed_after_first_s: float | None = None
    indexed_after_last_s: float | None = None
    token: bool = False
    server_exit_code: int | None = None
    error: str = ""


@dataclass
class Report:
    command: str
    rows: list[Row] = field(default_factory=list)


class Measurement:
    """One fresh server and data directory; the caller sends, this times, samples and waits for indexing."""

    def __init__(self, args: argparse.Namespace, root: Path, name: str) -> None:
        self.args = args
        self.server = SpawnedServer(data_dir=root / name,
                                    command=shlex.split(args.server_command) if args.server_command else None,
                                    extra_args=shlex.split(args.server_args))

    def run(self, row: Row, send: Any, expected_in_catalog: int) -> Row:
        server = self.server
        server.start()
        try:
            token = server.token(self.args.token_wait)
            row.token = token is not None
            session = new_session(token)
            url = f"{server.base_url.rstrip('/')}/studies"
            with RssSampler(server.pid) as sampler, RssSampler(os.getpid(), children=False) as client:
                time.sleep(0.5)
                row.baseline_rss_mb = round(sampler.sample() / MB, 1)
                sampler.peak_bytes = 0
                answers, first, last = send(session, url)
                indexed, why = wait_indexed(server.data_dir, expected_in_catalog, timeout=self.args.index_timeout)
            session.close()
            row.peak_rss_mb = round(sampler.peak_bytes / MB, 1)
            row.client_peak_rss_mb = round(client.peak_bytes / MB, 1)
            row.seconds = round(last - first, 3)
            row.instances_per_s = round(row.instances / (last - first), 1)
            row.mb_per_s = round(row.bytes / MB / (last - first), 1)
            for answer in answers:
                row.statuses[str(answer.status)] = row.statuses.get(str(answer.status), 0) + 1
                row.stored += answer.stored
                row.failed += answer.failed
            errors = sorted({a.error for a in answers if a.error})
            if row.stored != row.instances:
                errors.append(f"{row.stored} of {row.instances} instances stored")
            if indexed is None:
                errors.append(why)
            else:
                row.indexed_after_first_s = round(indexed - first, 2)
                row.indexed_after_last_s = round(indexed - last, 2)
            row.error = "; ".join(errors)
        finally:
            row.server_exit_code = server.stop()
        if row.server_exit_code not in (0, None):
            row.error = "; ".join(filter(None, [row.error, f"server exited with {row.server_exit_code}"]))
        if row.error:
            row.error += f" (server log: {server.log_path})"
        return row


def measure_batches(args: argparse.Namespace, root: Path, cloner: Cloner, batch_size: int) -> Row:
    requests = max(1, args.instances // batch_size)
    count = requests * batch_size
    logger.info("batch %d: encoding %d instances", batch_size, count)
    boundary = new_boundary()
    bodies: list[bytes] = []
    total = 0
    for _ in range(requests):
        blobs = list(cloner.study(batch_size))  # one study per request
        total += sum(len(b) for b in blobs)
        bodies.append(multipart_body(blobs, boundary))
    warm_up = multipart_body(list(cloner.study(1)), boundary)
    row = Row(f"batches of {batch_size}", batch_size, requests, count, total)

    def send(session: Any, url: str) -> tuple[list[Answer], float, float]:
        warm = post(session, url, warm_up, boundary, args.request_timeout)
        if warm.status != 200:
            raise RuntimeError(f"warm-up request failed: {warm.error}")
        answers: list[Answer] = []
        first = time.perf_counter()
        for body in bodies:
            answers.append(post(session, url, body, boundary, args.request_timeout))
        return answers, first, time.perf_counter()

    row = Measurement(args, root, f"batch-{batch_size}").run(row, send, count + 1)
    bodies.clear()
    return row


def measure_large(args: argparse.Namespace, root: Path, cloner: Cloner) -> Row:
    logger.info("large request: encoding %d headers", args.large_size)
    headers, pixel_element = cloner.split_study(args.large_size)
    total = sum(len(h) for h in headers) + len(pixel_element) * len(headers)
    boundary = new_boundary()
    row = Row("one streamed request", args.large_size, 1, args.large_size, total)

    def send(session: Any, url: str) -> tuple[list[Answer], float, float]:
        first = time.perf_counter()
        answer = post(session, url, streamed_body(headers, pixel_element, boundary), boundary,
                      args.request_timeout)
        return [answer], first, time.perf_counter()

    return Measurement(args, root, "large").run(row, send, args.large_size)


def run_benchmark(args: argparse.Namespace, root: Path) -> Report:
    cloner = Cloner(load_template())
    probe = SpawnedServer(data_dir=root / "probe", command=shlex.split(args.server_command)
                          if args.server_command else None, extra_args=shlex.split(args.server_args))
    command = shlex.join(probe.command).replace(str(root / "probe"), "DATA_DIR")
    report = Report(re.sub(r"(--(?:dimse|http)-port) \d+", r"\1 FREE_PORT", command))
    for batch_size in args.batch_sizes:
        report.rows.append(measure_batches(args, root, cloner, batch_size))
        logger.info("%s", report.rows[-1])
    if args.large_size:
        report.rows.append(measure_large(args, root, cloner))
        logger.info("%s", report.rows[-1])
    return report


# --- output ----------------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str = ",.1f") -> str:
    return "-" if value is None else format(value, spec)


def format_table(report: Report) -> str:
    header = ("measurement", "requests", "instances", "MB", "seconds", "inst/s", "MB/s", "statuses",
              "RSS idle MB", "RSS peak MB", "indexed after (first req / last resp)")
    rows = [header]
    for row in report.rows:
        statuses = ",".join(f"{k}x{v}" for k, v in sorted(row.statuses.items()))
        if row.failed:
            statuses += f" ({row.failed} failed)"
        indexed = (f"{_fmt(row.indexed_after_first_s, '.1f')} s / {_fmt(row.indexed_after_last_s, '.1f')} s")
        rows.append((row.measurement, str(row.requests), f"{row.instances:,}", f"{row.bytes / MB:,.0f}",
                     _fmt(row.seconds, ".2f"), _fmt(row.instances_per_s, ",.0f"), _fmt(row.mb_per_s, ",.0f"),
                     statuses or "-", _fmt(row.baseline_rss_mb, ",.0f"), _fmt(row.peak_rss_mb, ",.0f"), indexed))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i in (0, 7, 10) else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [line(rows[0]), "  ".join("-" * w for w in widths), *(line(r) for r in rows[1:])]
    for row in report.rows:
        if row.client_peak_rss_mb is not None:
            lines.append(f"{row.measurement}: client (this script) peak RSS {row.client_peak_rss_mb:,.0f} MB")
        if row.error:
            lines.append(f"{row.measurement}: ERROR {row.error}")
    tokens = {row.token for row in report.rows}
    lines.append("authentication: " + ("bearer token from DATA_DIR/api-token" if tokens == {True} else
                                       "none (no DATA_DIR/api-token)" if tokens == {False} else "mixed"))
    return "\n".join(lines)


# --- command line ----------------------------------------------------------------------------------------


def _sizes(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("sizes must be integers >= 1")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/stow.py",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""\
examples:
  python bench/stow.py                                  # batches of 1, 10, 100 and one 1 GB request; ~1-2 min
  python bench/stow.py --batch-sizes 100 --instances 1000 --large-size 0
  python bench/stow.py --batch-sizes '' --large-size 500 --json > stow.json
""",
    )
    measure = parser.add_argument_group("measurements")
    measure.add_argument("--batch-sizes", type=_sizes, default=[1, 10, 100], metavar="N[,N...]",
                         help="instances per request of the batch measurements (default 1,10,100; '' for none)")
    measure.add_argument("--instances", type=int, default=300,
                         help="instances per batch measurement (default 300, 158 MB; rounded down to whole "
                         "requests)")
    measure.add_argument("--large-size", type=int, default=2000,
                         help="instances in the one streamed request (default 2000, about 1.05 GB; 0 to skip)")
    measure.add_argument("--token-wait", type=float, default=2.0,
                         help="seconds to wait after start-up for DATA_DIR/api-token (default 2)")
    measure.add_argument("--request-timeout", type=float, default=600.0,
                         help="seconds a request may take (default 600)")
    measure.add_argument("--index-timeout", type=float, default=300.0,
                         help="seconds to wait for the catalog to hold every instance (default 300)")

    server = parser.add_argument_group("server")
    server.add_argument("--server-command",
                        help="the skypacs executable, as one shell-quoted string (default: the 'skypacs' beside "
                        "this Python, else on PATH, else 'python -m skypacs.cli'); 'serve' and options are appended")
    server.add_argument("--server-args", default="",
                        help="extra arguments for 'skypacs serve', one shell-quoted string, e.g. "
                        "--server-args='--log-level WARNING'")
    server.add_argument("--data-dir", type=Path,
                        help="parent directory for the data directories and server logs (default: a temporary "
                        "directory, removed afterwards unless --keep-data)")
    server.add_argument("--keep-data", action="store_true", help="keep the data directories and server logs")

    parser.add_argument("--json", action="store_true", help="print the results as one JSON document")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.instances < 1 or args.large_size < 0:
        parser.error("--instances must be >= 1 and --large-size >= 0")
    if not args.batch_sizes and not args.large_size:
        parser.error("no batch sizes and --large-size 0 leave nothing to measure")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # SIGTERM unwinds like Ctrl-C, so that the server is stopped, not orphaned.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    if args.data_dir is not None:
        args.data_dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="skypacs-bench-stow-", dir=args.data_dir))
    failed = True
    try:
        report = run_benchmark(args, root)
        failed = any(row.error for row in report.rows)
    except (RuntimeError, OSError) as exc:
        print(f"stow.py: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if failed or args.keep_data:
            print(f"data directories and server logs are under {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        document = {"benchmark": "stow", "arguments": {k: (str(v) if isinstance(v, Path) else v)
                                                       for k, v in vars(args).items()},
                    "cpus": os.cpu_count(), **asdict(report)}
        print(json.dumps(document, indent=2))
    else:
        print(f"server: {report.command}")
        print(format_table(report))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
