"""The large-upload path on AWS, under moto: ``POST /uploads`` on the Lambda API (the Chalice app, through
Chalice's test client, which builds API Gateway's REST events) -> presigned PUTs straight to S3 under ``incoming/`` -> the
bucket's notification -> the indexer Lambda -> the same ingest as every other intake.

The object is a 6 MB multi-frame JPEG US file (too large for a Lambda request on its own) and an
enhanced MR; a not-DICOM upload is quarantined with its reason and harms nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pydicom
import pytest
import requests
from chalice.test import Client
from moto import mock_aws

from functions.dicomweb import app as app_module
from functions.indexer import handler as indexer
from skypacs import aws
from skypacs.adapters.dynamodb_catalog import create_catalog_table
from skypacs.config import ENV_BUCKET, ENV_CATALOG_TABLE
from tests.conftest import dicom_file
from tests.integration.test_indexer_lambda import FakeLambdaContext, sqs_event

REGION = "us-east-1"
BUCKET, QUEUE, TABLE = "skypacs-objects", "skypacs-ingest", "skypacs-catalog"


@dataclass
class Deployment:
    api: Any
    s3: Any
    sqs: Any
    queue_url: str

    def index_notifications(self) -> dict[str, Any]:
        """Hand every queued S3 notification to the indexer Lambda, as its event source mapping does."""
        messages: list[dict[str, Any]] = []
        while batch := self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                                AttributeNames=["All"]).get("Messages"):
            messages += batch
            for message in batch:
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return dict(indexer.handler(sqs_event(messages), FakeLambdaContext()))  # type: ignore[arg-type]

    def keys(self, prefix: str) -> list[str]:
        return [o["Key"] for o in self.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION,
                            ENV_BUCKET: BUCKET, ENV_CATALOG_TABLE: TABLE}.items():
            patch.setenv(name, value)
        with mock_aws():
            s3, sqs = boto3.client("s3", region_name=REGION), boto3.client("sqs", region_name=REGION)
            queue_url = sqs.create_queue(QueueName=QUEUE)["QueueUrl"]
            queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
                "Attributes"]["QueueArn"]
            s3.create_bucket(Bucket=BUCKET)
            s3.put_bucket_notification_configuration(Bucket=BUCKET, NotificationConfiguration={
                "QueueConfigurations": [{"Id": "ingest", "QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"],
                                         "Filter": {"Key": {"FilterRules": [
                                             {"Name": "prefix", "Value": "incoming/"}]}}}]})
            create_catalog_table(boto3.client("dynamodb", region_name=REGION), TABLE)
            aws.set_archive(None)  # built from the environment, as in a fresh Lambda container
            core = logging.getLogger("skypacs")
            saved = (list(core.handlers), core.propagate, core.level)
            try:
                with Client(app_module.app) as client:
                    yield Deployment(client, s3, sqs, queue_url)
            finally:
                aws.set_archive(None)
                core.handlers[:], core.propagate = saved[0], saved[1]  # the indexer's logging set-up
                core.setLevel(saved[2])
                indexer._logging_configured = False


def _create(deployment: Deployment, count: int) -> list[dict[str, Any]]:
    answer = deployment.api.http.post(f"/uploads?count={count}")
    assert answer.status_code == 201, answer.body
    uploads: list[dict[str, Any]] = json.loads(answer.body)["uploads"]
    return uploads


def test_uploaded_files_are_ingested_like_any_other(deployment: Deployment) -> None:
    files = [dicom_file("color3d_jpeg_baseline.dcm"), dicom_file("emri_small.dcm")]
    uploads = _create(deployment, len(files))
    assert len({u["key"] for u in uploads}) == 2
    for upload, path in zip(uploads, files, strict=True):
        assert upload["method"] == "PUT" and upload["key"].startswith("incoming/uploads/")
        assert "X-Amz-Signature=" in upload["url"] and upload["expiresIn"] == 900
        put = requests.put(upload["url"], data=path.read_bytes(), headers=upload["headers"], timeout=60)
        assert put.status_code == 200, put.text

    response = deployment.index_notifications()
    assert response == {"batchItemFailures": []}
    assert deployment.keys("incoming/") == []  # moved to their canonical keys
    for path in files:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        path = (f"/studies/{dataset.StudyInstanceUID}/series/{dataset.SeriesInstanceUID}"
                f"/instances/{dataset.SOPInstanceUID}/metadata")
        metadata = deployment.api.http.get(path, headers={"Accept": "application/dicom+json"})
        assert metadata.status_code == 200
        assert json.loads(metadata.body)[0]["00080018"]["Value"] == [dataset.SOPInstanceUID]
        assert deployment.keys(f"studies/{dataset.StudyInstanceUID}/")


def test_a_bad_upload_is_quarantined_with_its_reason(deployment: Deployment) -> None:
    (upload,) = _create(deployment, 1)
    requests.put(upload["url"], data=b"this is not DICOM" * 100, headers=upload["headers"], timeout=30)
    assert deployment.index_notifications() == {"batchItemFailures": []}
    assert deployment.keys("incoming/") == []
    quarantined = deployment.keys("quarantine/")
    assert any(key.endswith(upload["id"] + ".dcm") for key in quarantined)


@pytest.mark.parametrize("count", ["0", "1001", "two", "-1"])
def test_count_out_of_range_is_400(deployment: Deployment, count: str) -> None:
    answer = deployment.api.http.post(f"/uploads?count={count}")
    assert answer.status_code == 400
    assert "count" in json.loads(answer.body)["error"]


def test_requests_are_audited_with_the_token_subject(deployment: Deployment,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    # The REST API event as API Gateway sends it after the OIDC authorizer allowed the request.
    event = {
        "resource": "/uploads", "path": "/uploads", "httpMethod": "POST",
        "headers": {"Host": "api.example.org"}, "multiValueHeaders": {"Host": ["api.example.org"]},
        "queryStringParameters": {"count": "1"}, "multiValueQueryStringParameters": {"count": ["1"]},
        "pathParameters": None, "stageVariables": None, "body": None, "isBase64Encoded": False,
        "requestContext": {"resourcePath": "/uploads", "httpMethod": "POST", "path": "/prod/uploads",
                           "domainName": "api.example.org", "identity": {"sourceIp": "10.1.2.3"},
                           "authorizer": {"principalId": "3f6c-user", "access": "write"}},
    }
    trail = logging.getLogger("skypacs.audit")
    assert trail.handlers and trail.level == logging.INFO  # configured by the app at import: Lambda's
    trail.addHandler(caplog.handler)                       # root logger would drop INFO records
    try:
        answer = app_module.app(event, FakeLambdaContext())
    finally:
        trail.removeHandler(caplog.handler)
    assert answer["statusCode"] == 201
    (record,) = [json.loads(r.getMessage()) for r in caplog.records if r.name == "skypacs.audit"]
    assert record["action"] == "store" and record["who"] == "oidc:3f6c-user"
    assert record["what"] == {"route": "upload-create", "parameters": ["count"]}
    assert record["address"] == "10.1.2.3" and record["outcome"] == "success"


def test_cors_preflight_and_response_headers_from_the_lambda_api(deployment: Deployment,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # API Gateway routes OPTIONS to the function without the authorizer; the function answers it.
    monkeypatch.setitem(vars(aws.archive()), "cors_origins", ("https://viewer.example.org",))
    preflight = deployment.api.http.request("OPTIONS", "/uploads", headers={
        "Origin": "https://viewer.example.org", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://viewer.example.org"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    other = deployment.api.http.request("OPTIONS", "/uploads", headers={
        "Origin": "https://evil.example.org", "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in other.headers
    answer = deployment.api.http.post("/uploads", headers={"Origin": "https://viewer.example.org"})
    assert answer.status_code == 201
    assert answer.headers["Access-Control-Allow-Origin"] == "https://viewer.example.org"
