"""WADO-RS on AWS, under moto: the Lambda API (the Chalice app, served by Chalice's local API Gateway
emulation) answers what fits in a Lambda response and redirects the rest, whole studies first, to the
streaming service (the same routes over waitress on S3 + DynamoDB) with a signed URL.

The study here is larger than API Gateway's 10 MB and Lambda's 6 MB many times over: 100 CT slices of
526 KB (52 MB).
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

import boto3
import pydicom
import pytest
import requests
from chalice.config import Config
from chalice.local import create_local_server
from dicomweb_client.api import DICOMwebClient
from moto import mock_aws

from functions.dicomweb import app as app_module
from skypacs import aws
from skypacs.adapters.dynamodb_catalog import create_catalog_table
from skypacs.aws import AwsArchive
from skypacs.config import ENV_BUCKET, ENV_CATALOG_TABLE, ENV_STREAMING_URL, ENV_URL_SIGNING_KEY
from skypacs.dicomweb import signed_urls
from skypacs.dicomweb.server import DicomWebServer, streaming_server
from tests.conftest import dicom_file
from tests.dicom_files import clone, new_uid

SIGNING_KEY = b"k" * 40
SLICES = 100
DICOM_AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'


@dataclass
class Deployment:
    archive: AwsArchive
    streaming: DicomWebServer
    api_url: str
    study: str
    series: str
    sops: list[str]
    us: tuple[str, str, str]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            patch.setenv(name, value)
        with mock_aws():
            yield from _deploy()


def _deploy() -> Iterator[Deployment]:
    s3, dynamodb = boto3.client("s3"), boto3.client("dynamodb")
    s3.create_bucket(Bucket="objects")
    create_catalog_table(dynamodb, "catalog")
    environ = {ENV_BUCKET: "objects", ENV_CATALOG_TABLE: "catalog"}
    archive = AwsArchive(environ=dict(environ), s3_client=s3, dynamodb_client=dynamodb)
    study, series, sops = new_uid(), new_uid(), []
    for number in range(1, SLICES + 1):
        sop = new_uid()
        data = clone("693_UNCR.dcm", StudyInstanceUID=study, SeriesInstanceUID=series, SOPInstanceUID=sop,
                     InstanceNumber=str(number))
        receipt = archive.store_service.store_part10(data)
        archive.ingest_service.ingest(receipt.info.key, etag=receipt.info.etag, size=receipt.info.size)
        sops.append(sop)
    us_file = dicom_file("color3d_jpeg_baseline.dcm")  # 6 MB: over the Lambda limit on its own
    receipt = archive.store_service.store_part10(us_file.read_bytes())
    archive.ingest_service.ingest(receipt.info.key, etag=receipt.info.etag, size=receipt.info.size)
    us = pydicom.dcmread(us_file, stop_before_pixels=True)

    streaming = streaming_server(archive, SIGNING_KEY, host="127.0.0.1", port=0)
    streaming.start()
    api_archive = AwsArchive(environ={**environ, ENV_STREAMING_URL: streaming.url,
                                      ENV_URL_SIGNING_KEY: SIGNING_KEY.decode()},
                             s3_client=s3, dynamodb_client=dynamodb)
    aws.set_archive(api_archive)
    port = _free_port()
    api = create_local_server(app_module.app, Config(chalice_stage="api"), "127.0.0.1", port)
    thread = threading.Thread(target=api.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Deployment(archive, streaming, f"http://127.0.0.1:{port}", study, series, sops,
                         (us.StudyInstanceUID, us.SeriesInstanceUID, us.SOPInstanceUID))
    finally:
        api.shutdown()
        streaming.stop()
        aws.set_archive(None)


def test_dicomweb_client_retrieves_a_52_mb_study_through_the_streaming_service(deployment: Deployment) -> None:
    client = DICOMwebClient(url=deployment.api_url)
    started = time.monotonic()
    instances = client.retrieve_study(deployment.study, media_types=(("application/dicom", "*"),))
    assert sorted(instance.SOPInstanceUID for instance in instances) == sorted(deployment.sops)
    original = pydicom.dcmread(dicom_file("693_UNCR.dcm"))
    assert all(instance.PixelData == original.PixelData for instance in instances)
    assert time.monotonic() - started < 120


def test_the_lambda_api_redirects_study_retrieval_with_a_signed_url(deployment: Deployment) -> None:
    url = f"{deployment.api_url}/studies/{deployment.study}"
    response = requests.get(url, headers={"Accept": DICOM_AS_STORED}, allow_redirects=False, timeout=30)
    assert response.status_code == 303
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == (
        f"{deployment.streaming.url}/studies/{deployment.study}")
    assert signed_urls.SIGNATURE_PARAMETER in dict(parse_qsl(location.query))


def test_what_fits_is_answered_by_lambda_itself(deployment: Deployment) -> None:
    base = f"{deployment.api_url}/studies/{deployment.study}/series/{deployment.series}"
    metadata = requests.get(f"{base}/metadata", headers={"Accept": "application/dicom+json"}, timeout=30)
    assert metadata.status_code == 200 and len(metadata.json()) == SLICES
    frame = requests.get(f"{base}/instances/{deployment.sops[0]}/frames/1",
                         headers={"Accept": "multipart/related; type=application/octet-stream"},
                         allow_redirects=False, timeout=30)
    assert frame.status_code == 200
    assert frame.headers["Content-Type"].startswith("multipart/related")
    instance = requests.get(f"{base}/instances/{deployment.sops[0]}", headers={"Accept": DICOM_AS_STORED},
                            allow_redirects=False, timeout=30)
    assert instance.status_code == 200
    assert len(instance.content) > 500_000


def test_an_instance_over_the_lambda_limit_is_redirected_and_retrieved(deployment: Deployment) -> None:
    study, series, sop = deployment.us
    url = f"{deployment.api_url}/studies/{study}/series/{series}/instances/{sop}"
    response = requests.get(url, headers={"Accept": DICOM_AS_STORED}, allow_redirects=False, timeout=30)
    assert response.status_code == 303
    client = DICOMwebClient(url=deployment.api_url)
    instance = client.retrieve_instance(study, series, sop)
    assert instance.NumberOfFrames == 120


def test_the_streaming_service_refuses_unsigned_tampered_and_expired_urls(deployment: Deployment) -> None:
    path = f"/studies/{deployment.study}"
    base = deployment.streaming.url
    assert requests.get(f"{base}{path}", timeout=30).status_code == 403
    good = signed_urls.signed_url(base, SIGNING_KEY, path)
    assert requests.get(good.replace(deployment.study, deployment.sops[0]), timeout=30).status_code == 403
    expired = signed_urls.signed_url(base, SIGNING_KEY, path, now=time.time() - 3600)
    assert requests.get(expired, timeout=30).status_code == 403
    other_key = signed_urls.signed_url(base, b"x" * 40, path)
    assert requests.get(other_key, timeout=30).status_code == 403
    assert requests.get(f"{urlsplit(base).scheme}://{urlsplit(base).netloc}/health", timeout=30).status_code == 200


def test_stow_through_the_lambda_api_writes_to_s3(deployment: Deployment) -> None:
    from skypacs.dicomweb.multipart import Part, content_type, multipart_body

    data = clone("CT_small.dcm", StudyInstanceUID=new_uid(), SeriesInstanceUID=new_uid(), SOPInstanceUID=new_uid())
    dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    body = b"".join(multipart_body([Part("application/dicom", [data])], "b0undary"))
    response = requests.post(f"{deployment.api_url}/studies", data=body, timeout=30, headers={
        "Content-Type": content_type("application/dicom", "b0undary"), "Accept": "application/dicom+json"})
    assert response.status_code == 200, response.text
    (referenced,) = response.json()["00081199"]["Value"]
    assert referenced["00081155"]["Value"] == [dataset.SOPInstanceUID]
    key = (f"studies/{dataset.StudyInstanceUID}/series/{dataset.SeriesInstanceUID}/instances/"
           f"{dataset.SOPInstanceUID}.dcm")
    with deployment.archive.store.open(key) as stream:
        assert stream.read() == data
