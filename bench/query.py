#!/usr/bin/env python3
"""Query benchmark: index build rate and QIDO-RS / C-FIND latency at 100,000 and 1,000,000 instances.

Not a test: run it by hand, e.g. ``python bench/query.py --sizes 100000`` (1,000,000 takes several
minutes to build and about 6 GB of disk). For each size it:

1. generates synthetic instances (DICOM JSON, no pixel data: ~40 attributes each, names with carets and
   non-ASCII characters, dates over 12 years, 6 modalities, a private tag, a request sequence) and loads
   them straight through the index API (``SqliteQueryIndex.index_instances``, batches of 1,000),
   reporting instances/s;
2. runs each query ``--repeat`` times through the query service in-process, over HTTP against the
   embedded DICOMweb server (if ``skypacs.dicomweb`` is installed) and over C-FIND against the gateway,
   reporting p50/p95/max latency in milliseconds and the number of results.

Queries: PatientID, PatientName wildcard, StudyDate range, ModalitiesInStudy, AccessionNumber,
``/instances?limit=100``, ``includefield=all``, and one on a non-indexed attribute.
Targets (issue 3): build >= 2,000 instances/s; at 1,000,000 instances key-attribute queries p50 <= 25 ms
over HTTP and ``/instances?limit=100`` <= 90 ms.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from skypacs.adapters.sqlite_index import SqliteQueryIndex  # noqa: E402
from skypacs.ports import InstanceRecord  # noqa: E402
from skypacs.query.model import Level, query_from_qido  # noqa: E402
from skypacs.services.query import QueryService  # noqa: E402

FAMILY = ["Smith", "Müller", "Øster", "O'Brien", "Nguyễn", "Smithers", "Åberg", "Doe", "Jones", "García", "Kowalski",
          "Ivanov", "Tanaka", "Dubois", "Rossi", "Larsen", "Novak", "Silva", "Kim", "Haddad"]
GIVEN = ["John", "Jörg", "Anne", "Zoë", "Li", "Björn", "Smilla", "José", "Élodie", "Tom", "Maria", "Yusuf"]
MODALITIES = ["CT", "MR", "US", "CR", "DX", "PT"]
SOP_CLASS = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4", "US": "1.2.840.10008.5.1.4.1.1.6.1",
             "CR": "1.2.840.10008.5.1.4.1.1.1", "DX": "1.2.840.10008.5.1.4.1.1.1.1", "PT": "1.2.840.10008.5.1.4.1.1.128"}
BODY_PARTS = ["CHEST", "HEAD", "ABDOMEN", "KNEE", "SPINE", "PELVIS"]


def _e(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def generate(total: int, seed: int = 1) -> Iterator[InstanceRecord]:
    rng = random.Random(seed)
    patients = max(1, total // 60)
    made, study_number = 0, 0
    while made < total:
        study_number += 1
        p = rng.randrange(patients)
        name = f"{FAMILY[p % len(FAMILY)]}^{GIVEN[(p // len(FAMILY)) % len(GIVEN)]}^{p}"
        study = f"1.2.826.0.1.3680043.10.2.{study_number}"
        date = f"{rng.randint(2014, 2025)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        accession = f"A{study_number:09d}"
        referring = f"Dr^{rng.choice(GIVEN)}"
        for s in range(rng.randint(1, 4)):
            series = f"{study}.{s + 1}"
            modality = rng.choice(MODALITIES)
            body_part = rng.choice(BODY_PARTS)
            for i in range(rng.randint(5, 15)):
                if made >= total:
                    return
                sop = f"{series}.{i + 1}"
                doc = {
                    "00080005": _e("CS", "ISO_IR 192"), "00080008": _e("CS", "ORIGINAL", "PRIMARY", "AXIAL"),
                    "00080016": _e("UI", SOP_CLASS[modality]), "00080018": _e("UI", sop),
                    "00080020": _e("DA", date), "00080030": _e("TM", "101530"), "00080050": _e("SH", accession),
                    "00080060": _e("CS", modality), "00080070": _e("LO", "ACME"),
                    "00080080": _e("LO", "General Hospital"), "00080090": _e("PN", {"Alphabetic": referring}),
                    "00081030": _e("LO", f"{body_part} {modality}"), "0008103E": _e("LO", f"{modality} series {s + 1}"),
                    "00091010": _e("LO", f"SITE-{p % 7}"), "00100010": _e("PN", {"Alphabetic": name}),
                    "00100020": _e("LO", f"P{p:07d}"), "00100030": _e("DA", f"19{40 + p % 60}0101"),
                    "00100040": _e("CS", "MF"[p % 2]), "00180015": _e("CS", body_part),
                    "00180050": _e("DS", 1.25), "0020000D": _e("UI", study), "0020000E": _e("UI", series),
                    "00200010": _e("SH", str(study_number)), "00200011": _e("IS", s + 1), "00200013": _e("IS", i + 1),
                    "00200032": _e("DS", -125.0, -125.0, float(i)), "00280010": _e("US", 512), "00280011": _e("US", 512),
                    "00280100": _e("US", 16), "00400275": _e("SQ", {"00400009": _e("SH", f"SPS{study_number}")}),
                }
                made += 1
                yield InstanceRecord(
                    StudyInstanceUID=study, SeriesInstanceUID=series, SOPInstanceUID=sop,
                    SOPClassUID=SOP_CLASS[modality], TransferSyntaxUID="1.2.840.10008.1.2.1", PatientID=f"P{p:07d}",
                    key=f"studies/{study}/series/{series}/instances/{sop}.dcm", size=526000, etag="-",
                    stored_at="2026-11-25T00:00:00Z", metadata=doc,
                )


def build(index: SqliteQueryIndex, total: int, batch: int = 1000) -> float:
    started = time.perf_counter()
    pending: list[InstanceRecord] = []
    for number, record in enumerate(generate(total), 1):
        pending.append(record)
        if len(pending) == batch:
            index.index_instances(pending)
            pending = []
            if number % 50_000 == 0:
                rate = number / (time.perf_counter() - started)
                print(f"  indexed {number:>9,} ({rate:,.0f}/s)", file=sys.stderr, flush=True)
    if pending:
        index.index_instances(pending)
    return total / (time.perf_counter() - started)


def queries(total: int) -> list[tuple[str, str, list[tuple[str, str]]]]:
    patients = max(1, total // 60)
    probe = patients // 2
    return [
        ("PatientID", "studies", [("PatientID", f"P{probe:07d}")]),
        ("PatientName wildcard", "studies", [("PatientName", "Kowal*"), ("limit", "100")]),
        ("StudyDate range", "studies", [("StudyDate", "20200301-20200307"), ("limit", "100")]),
        ("ModalitiesInStudy", "studies", [("ModalitiesInStudy", "PT"), ("limit", "100")]),
        ("AccessionNumber", "studies", [("AccessionNumber", f"A{max(1, total // 40):09d}")]),
        ("/instances?limit=100", "instances", [("limit", "100")]),
        ("includefield=all", "studies", [("PatientID", f"P{probe:07d}"), ("includefield", "all")]),
        ("non-indexed attribute", "studies", [("ReferringPhysicianName", "Dr^Zoë"), ("limit", "100")]),
    ]


LEVELS = {"studies": Level.STUDY, "series": Level.SERIES, "instances": Level.IMAGE}


def measure(run: Callable[[], int], repeat: int) -> dict[str, float]:
    run()  # warm caches
    times, results = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        results = run()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {
        "p50_ms": statistics.median(times),
        "p95_ms": times[min(len(times) - 1, int(len(times) * 0.95))],
        "max_ms": times[-1],
        "results": results,
    }


def http_runner(base: str, resource: str, params: list[tuple[str, str]]) -> Callable[[], int]:
    url = f"{base}/{resource}?{urllib.parse.urlencode(params)}"

    def run() -> int:
        request = urllib.request.Request(url, headers={"Accept": "application/dicom+json"})
        with urllib.request.urlopen(request) as response:
            body = response.read()
        return len(json.loads(body)) if body else 0

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000", help="comma-separated instance counts (default 100000)")
    parser.add_argument("--repeat", type=int, default=30, help="runs per query (default 30)")
    parser.add_argument("--data-dir", help="where to build (default: a temporary directory, removed after)")
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP measurements")
    parser.add_argument("--no-cfind", action="store_true", help="skip the C-FIND measurements")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    report: list[dict[str, Any]] = []
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(dir=args.data_dir) as directory:
            data_dir = Path(directory)
            index = SqliteQueryIndex(data_dir / "index.sqlite")
            print(f"building {size:,} instances ...", file=sys.stderr, flush=True)
            rate = build(index, size)
            entry: dict[str, Any] = {"instances": size, "build_instances_per_s": rate, "queries": {}}
            service = QueryService(index)
            transports: dict[str, Callable[[str, list[tuple[str, str]]], Callable[[], int]]] = {
                "direct": lambda resource, params: (
                    lambda: len(service.search(query_from_qido(LEVELS[resource], params)).items)
                )
            }
            stoppers: list[Callable[[], None]] = []
            if not args.no_http:
                try:
                    base, stop = start_http(data_dir)
                    stoppers.append(stop)
                    transports["http"] = lambda resource, params: http_runner(base, resource, params)
                except ImportError as exc:
                    print(f"  (no HTTP: {exc})", file=sys.stderr)
            if not args.no_cfind:
                try:
                    port, stop = start_cfind(data_dir)
                    stoppers.append(stop)
                    transports["c-find"] = lambda resource, params: cfind_runner(port, resource, params)
                except ImportError as exc:
                    print(f"  (no C-FIND: {exc})", file=sys.stderr)
            try:
                for name, resource, params in queries(size):
                    entry["queries"][name] = {
                        transport: measure(make(resource, params), args.repeat)
                        for transport, make in transports.items()
                        if not (transport == "c-find" and "limit" in dict(params) and resource == "instances")
                    }
            finally:
                for stop in stoppers:
                    stop()
            report.append(entry)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for entry in report:
        print(f"\n{entry['instances']:,} instances: index build {entry['build_instances_per_s']:,.0f} instances/s")
        print(f"{'query':<24} {'transport':<9} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'results':>8}")
        for name, by_transport in entry["queries"].items():
            for transport, figures in by_transport.items():
                print(f"{name:<24} {transport:<9} {figures['p50_ms']:>8.1f} {figures['p95_ms']:>8.1f} "
                      f"{figures['max_ms']:>8.1f} {figures['results']:>8}")
    return 0


def start_http(data_dir: Path) -> tuple[str, Callable[[], None]]:
    from skypacs.config import Settings
    from skypacs.dicomweb.server import embedded_server
    from skypacs.embedded import EmbeddedArchive

    archive = EmbeddedArchive(Settings(data_dir=data_dir))
    server = embedded_server(archive, port=0)
    server.start()
    return f"{server.url}", server.stop


def start_cfind(data_dir: Path) -> tuple[int, Callable[[], None]]:
    from skypacs.config import Settings
    from skypacs.dimse.server import Gateway, GatewayOptions
    from skypacs.embedded import EmbeddedArchive

    archive = EmbeddedArchive(Settings(data_dir=data_dir))
    gateway = Gateway(
        GatewayOptions(ae_title="SKYPACS", host="127.0.0.1", port=0),
        archive.store_service,
        query_service=archive.query_service,
    )
    gateway.start()
    return gateway.port, gateway.stop


def cfind_runner(port: int, resource: str, params: list[tuple[str, str]]) -> Callable[[], int]:
    import socket

    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

    identifier = Dataset()
    identifier.QueryRetrieveLevel = {"studies": "STUDY", "series": "SERIES", "instances": "IMAGE"}[resource]
    for keyword in ("StudyInstanceUID", "PatientName", "PatientID", "StudyDate", "ModalitiesInStudy",
                    "AccessionNumber", "NumberOfStudyRelatedInstances"):
        setattr(identifier, keyword, "")
    for name, value in params:
        if name not in ("limit", "includefield", "offset"):
            setattr(identifier, name, value)
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="SKYPACS")
    assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def run() -> int:
        return sum(1 for status, _ in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind)
                   if status and status.Status in (0xFF00, 0xFF01))

    return run


if __name__ == "__main__":
    sys.exit(main())
