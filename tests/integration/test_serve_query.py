"""The user's flow end to end: `skypacs serve`, DCMTK storescu in, curl (QIDO-RS) and findscu out."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from tests.conftest import copy_testdata, run_dcmtk
from tests.dicom_files import identity
from tests.integration.test_serve import Server, free_port, server, storescu  # noqa: F401 - fixture


def curl(url: str, token: str) -> tuple[int, bytes]:
    result = subprocess.run(
        ["curl", "-sS", "-g", "-H", "Accept: application/dicom+json", "-H", f"Authorization: Bearer {token}",
         "-w", "\n%{http_code}", url],
        capture_output=True, timeout=60, check=True,
    )
    body, _, status = result.stdout.rpartition(b"\n")
    return int(status), body


def test_store_with_storescu_then_find_with_curl_and_findscu(server: Server, tmp_path: Path) -> None:  # noqa: F811
    paths = copy_testdata(["CT_small.dcm", "MR_small.dcm", "test-SR.dcm"], tmp_path / "in")
    http_port = free_port()
    server.start("--http-port", str(http_port))
    assert storescu(server.port, paths).returncode == 0
    server.wait_instances({identity(p)[2] for p in paths})
    base = f"http://127.0.0.1:{http_port}/dicom-web"
    token = (server.data_dir / "api-token").read_text().strip()  # made by serve on its first start

    deadline = time.monotonic() + 10
    while True:  # the catalog row lands a moment before the index row
        status, body = curl(f"{base}/studies?PatientName=compressedsamples%2A&includefield=StudyDescription", token)
        if status == 200 and len(json.loads(body)) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 200
    studies = json.loads(body)
    assert {s["00100010"]["Value"][0]["Alphabetic"] for s in studies} == {
        "CompressedSamples^CT1", "CompressedSamples^MR1"
    }
    assert all(s["00201208"]["Value"] == [1] for s in studies)  # NumberOfStudyRelatedInstances

    ct_study = identity(paths[0])[0]
    status, body = curl(f"{base}/studies/{ct_study}/series", token)
    assert status == 200 and json.loads(body)[0]["00080060"]["Value"] == ["CT"]
    status, body = curl(f"{base}/studies?Foo=bar", token)
    assert status == 400 and "unknown attribute" in json.loads(body)["error"]

    out = tmp_path / "found"
    out.mkdir()
    result = run_dcmtk(
        "findscu", "-S", "-aec", "SKYPACS", "-X", "-od", str(out),
        "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientName=COMPRESSED*", "-k", "StudyInstanceUID",
        "-k", "ModalitiesInStudy", "127.0.0.1", str(server.port),
    )
    assert result.returncode == 0, result.stderr
    import pydicom

    answers = [pydicom.dcmread(p) for p in sorted(out.iterdir())]
    assert {str(a.ModalitiesInStudy) for a in answers} == {"CT", "MR"}
    assert server.terminate() == 0
