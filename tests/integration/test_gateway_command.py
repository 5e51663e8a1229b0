"""The gateway container's command, as the image runs it: ``skypacs gateway`` (the Dockerfile's CMD) in
its own process against S3 and DynamoDB endpoints (moto's server on loopback, through
``AWS_ENDPOINT_URL``), probed by the Dockerfile's HEALTHCHECK (``python -m skypacs.dimse.healthcheck``),
sent a CT by DCMTK storescu, and stopped with SIGTERM as ECS stops a task.

tests/unit/test_dockerfile.py checks that the Dockerfile and the CDK task definition name these same
commands; this test runs them.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pydicom
import pytest
from moto.moto_server import threaded_moto_server as moto_server

from skypacs.adapters.dynamodb_catalog import create_catalog_table
from tests.conftest import copy_testdata, run_dcmtk
from tests.integration.test_serve import free_port

REGION = "us-east-1"


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def test_gateway_command_stores_into_s3_answers_its_health_check_and_stops_on_sigterm(
        endpoint: str, tmp_path: Path) -> None:
    credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                   "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": endpoint}
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=endpoint,
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="objects")
    create_catalog_table(boto3.client("dynamodb", region_name=REGION, endpoint_url=endpoint,
                                      aws_access_key_id="testing", aws_secret_access_key="testing"), "catalog")
    port = free_port()
    env = {**os.environ, **credentials, "SKYPACS_BUCKET": "objects", "SKYPACS_CATALOG_TABLE": "catalog",
           "SKYPACS_DIMSE_PORT": str(port), "SKYPACS_ALLOWED_AES": "STORESCU,HEALTHCHECK,SKYPACS"}
    env.pop("AWS_SESSION_TOKEN", None)
    process = subprocess.Popen([sys.executable, "-m", "skypacs.cli", "gateway"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        line = ""
        while "listening" not in line:
            line = process.stdout.readline()
            assert line or process.poll() is None, "skypacs gateway exited before listening"
            assert time.monotonic() < deadline, "skypacs gateway did not start"
        health = subprocess.run([sys.executable, "-m", "skypacs.dimse.healthcheck"], env=env, check=False,
                                capture_output=True, text=True, timeout=60)
        assert health.returncode == 0, health.stdout + health.stderr

        (ct,) = copy_testdata(["CT_small.dcm"], tmp_path)
        result = run_dcmtk("storescu", "-aet", "STORESCU", "-aec", "SKYPACS", "127.0.0.1", str(port), str(ct))
        assert result.returncode == 0, result.stderr
        dataset = pydicom.dcmread(ct, stop_before_pixels=True)
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="objects").get("Contents", [])]
        key = (f"studies/{dataset.StudyInstanceUID}/series/{dataset.SeriesInstanceUID}"
               f"/instances/{dataset.SOPInstanceUID}.dcm")
        assert keys == [key]
        stored = pydicom.dcmread(io.BytesIO(s3.get_object(Bucket="objects", Key=keys[0])["Body"].read()))
        assert stored.SOPInstanceUID == dataset.SOPInstanceUID
        assert stored.PixelData == pydicom.dcmread(ct).PixelData
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    assert code == 0
