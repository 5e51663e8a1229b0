"""The indexer Lambda as it runs: S3 notifications -> SQS -> ``handler(event, context)``, all under moto.

The bucket sends its ObjectCreated notifications to an SQS queue (moto delivers them, as S3 does); the
test receives the messages, shapes them into the event Lambda's SQS poller sends, and calls the handler
in-process. The composition root builds the adapters from the environment, as in the deployed function.
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pydicom
import pytest
from moto import mock_aws
from pydicom.data import get_testdata_file

from functions.indexer import handler as indexer
from skypacs import aws
from skypacs.adapters.dynamodb_catalog import DynamoDbCatalog, create_catalog_table
from skypacs.config import ENV_BUCKET, ENV_CATALOG_TABLE, ENV_EVENT_BUS
from skypacs.errors import BackendError
from skypacs.keys import CATALOG_METADATA_PREFIX
from skypacs.parsing import parse_bytes
from skypacs.ports import CatalogEntry
from skypacs.services.ingest import IngestRequest, IngestResult
from tests.dicom_files import large_rtstruct

REGION = "us-east-1"
BUCKET, QUEUE, TABLE, BUS = "skypacs-objects", "skypacs-ingest", "skypacs-catalog", "skypacs-events"
EVENTS_DIR = Path(__file__).resolve().parents[1] / "events"


def _read(name: str) -> bytes:
    return Path(get_testdata_file(name, download=False)).read_bytes()  # type: ignore[arg-type]


def _without_sop_instance_uid() -> bytes:
    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    del dataset.SOPInstanceUID
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


CT, MR, UPLOAD = _read("CT_small.dcm"), _read("MR_small.dcm"), _read("SC_rgb.dcm")
CT_P, MR_P, UPLOAD_P = parse_bytes(CT), parse_bytes(MR), parse_bytes(UPLOAD)


@dataclass
class FakeLambdaContext:
    function_name: str = "skypacs-indexer"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:123456789012:function:skypacs-indexer"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/skypacs-indexer"
    log_stream_name: str = "2026/11/25/[$LATEST]0123456789abcdef"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@dataclass
class Deployment:
    s3: Any
    sqs: Any
    dynamodb: Any
    queue_url: str
    plugin_queue_url: str
    results: list[IngestResult]
    batches: list[int] = field(default_factory=list)
    """How many objects each ``ingest_many`` call was given."""

    def receive(self) -> list[dict[str, Any]]:
        """Every message now in the ingest queue, deleted from it as Lambda's poller does on success."""
        messages: list[dict[str, Any]] = []
        while batch := self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]
        ).get("Messages"):
            messages += batch
            for message in batch:
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return messages

    def plugin_events(self) -> list[tuple[str, dict[str, Any]]]:
        events = []
        while batch := self.sqs.receive_message(QueueUrl=self.plugin_queue_url, MaxNumberOfMessages=10).get(
            "Messages"
        ):
            for message in batch:
                body = json.loads(message["Body"])
                events.append((body["detail-type"], body["detail"]))
                self.sqs.delete_message(
                    QueueUrl=self.plugin_queue_url, ReceiptHandle=message["ReceiptHandle"]
                )
        return events

    def state(self) -> tuple[Any, ...]:
        objects = sorted(
            (o["Key"], o["ETag"]) for o in self.s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
        )
        items = sorted(
            json.dumps(i, sort_keys=True, default=str) for i in self.dynamodb.scan(TableName=TABLE)["Items"]
        )
        return objects, items

    def put(self, key: str, data: bytes) -> None:
        self.s3.put_object(Bucket=BUCKET, Key=key, Body=data)


def sqs_event(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The event Lambda's SQS event source mapping hands the function."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:{QUEUE}",
                "awsRegion": REGION,
            }
            for m in messages
        ]
    }


def canned(name: str, **body_changes: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS_DIR / name).read_text())
    for record in event["Records"]:
        body = json.loads(record["body"])
        for change in body_changes.values():
            change(body)
        record["body"] = json.dumps(body)
    return event


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The handler routes the ``skypacs`` loggers through Powertools; undo that for the other tests."""
    core = logging.getLogger("skypacs")
    saved = (list(core.handlers), core.propagate, core.level)
    yield
    core.handlers[:], core.propagate = saved[0], saved[1]
    core.setLevel(saved[2])
    indexer._logging_configured = False


@pytest.fixture
def deployment(
    monkeypatch: pytest.MonkeyPatch, restore_logging: None, fake_aws_credentials: None
) -> Iterator[Deployment]:
    for name, value in (
        (ENV_BUCKET, BUCKET),
        (ENV_CATALOG_TABLE, TABLE),
        (ENV_EVENT_BUS, BUS),
    ):
        monkeypatch.setenv(name, value)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        events = boto3.client("events", region_name=REGION)
        queue_url = sqs.create_queue(QueueName=QUEUE)["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_notification_configuration(
            Bucket=BUCKET,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {"Id": "ingest", "QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}
                ]
            },
        )
        create_catalog_table(dynamodb, TABLE)
        # A plugin's view of the bus: a rule sending every archive event to a queue.
        plugin_queue_url = sqs.create_queue(QueueName="plugin")["QueueUrl"]
        plugin_arn = sqs.get_queue_attributes(QueueUrl=plugin_queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        events.create_event_bus(Name=BUS)
        events.put_rule(Name="plugin", EventBusName=BUS, EventPattern=json.dumps({"source": ["skypacs"]}))
        events.put_targets(Rule="plugin", EventBusName=BUS, Targets=[{"Id": "plugin", "Arn": plugin_arn}])

        aws.set_archive(None)  # built from the environment on first use, as in a fresh container
        results: list[IngestResult] = []
        batches: list[int] = []
        archive = aws.archive()
        ingest_many = archive.ingest_service.ingest_many

        def recording(requests: list[IngestRequest]) -> list[IngestResult | Exception]:
            batches.append(len(requests))
            answers = ingest_many(requests)
            results.extend(r for r in answers if isinstance(r, IngestResult))
            return answers

        monkeypatch.setattr(archive.ingest_service, "ingest_many", recording)
        try:
            yield Deployment(s3, sqs, dynamodb, queue_url, plugin_queue_url, results, batches)
        finally:
            aws.set_archive(None)


def test_notifications_are_ingested_and_bad_objects_quarantined(deployment: Deployment) -> None:
    test_event = deployment.receive()  # S3 sends s3:TestEvent when the notification is configured
    assert [json.loads(m["Body"]).get("Event") for m in test_event] == ["s3:TestEvent"]

    deployment.put(CT_P.key, CT)
    deployment.put(MR_P.key, MR)
    deployment.put("incoming/upload1.dcm", UPLOAD)
    deployment.put("incoming/not-dicom.dcm", b"this is not DICOM at all\n" * 40)
    deployment.put("incoming/no-sop-instance-uid.dcm", _without_sop_instance_uid())
    messages = test_event + deployment.receive()
    assert len(messages) == 6

    response = indexer.handler(sqs_event(messages), FakeLambdaContext())

    assert response == {"batchItemFailures": []}
    assert deployment.batches == [5]  # one ingest (one index write) for the whole batch
    catalog = aws.archive().catalog
    for data, parsed in ((CT, CT_P), (MR, MR_P), (UPLOAD, UPLOAD_P)):
        got = catalog.get_instance(parsed.SOPInstanceUID)
        assert got is not None and got.key == parsed.key and got.size == len(data)
        assert got.metadata == parsed.metadata
        assert [r.SOPInstanceUID for r in catalog.list_instances(parsed.StudyInstanceUID)] == [
            parsed.SOPInstanceUID
        ]
        assert [
            r.SOPInstanceUID
            for r in catalog.list_instances(parsed.StudyInstanceUID, parsed.SeriesInstanceUID)
        ] == [parsed.SOPInstanceUID]
        study = catalog.get_study(parsed.StudyInstanceUID)
        assert study is not None and study["0020000D"]["Value"] == [parsed.StudyInstanceUID]
        assert catalog.get_patient(parsed.PatientID) is not None

    keys = {o["Key"] for o in deployment.s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert "incoming/upload1.dcm" not in keys and UPLOAD_P.key in keys
    assert not any(key.startswith("incoming/") for key in keys)
    quarantined = {q.original_key: q for q in catalog.list_quarantine()}
    assert {key: q.reason for key, q in quarantined.items()} == {
        "incoming/not-dicom.dcm": "cannot-decode",
        "incoming/no-sop-instance-uid.dcm": "missing-attribute",
    }
    for q in quarantined.values():
        assert q.quarantine_key.startswith("quarantine/") and q.quarantine_key in keys
    assert sorted(r.outcome for r in deployment.results) == [
        "quarantined",
        "quarantined",
        "stored",
        "stored",
        "stored",
    ]
    stored = [detail for kind, detail in deployment.plugin_events() if kind == "InstanceStored"]
    assert sorted(d["SOPInstanceUID"] for d in stored) == sorted(
        p.SOPInstanceUID for p in (CT_P, MR_P, UPLOAD_P)
    )

    # The moves create objects too: the copy to the canonical key is unchanged, quarantine/ is skipped.
    follow_up = deployment.receive()
    assert len(follow_up) == 3
    deployment.results.clear()
    assert indexer.handler(sqs_event(follow_up), FakeLambdaContext()) == {"batchItemFailures": []}
    assert [(r.outcome, r.key) for r in deployment.results] == [("unchanged", UPLOAD_P.key)]

    # A second delivery of the same messages (SQS is at-least-once) changes nothing.
    before = deployment.state()
    deployment.results.clear()
    assert indexer.handler(sqs_event(messages), FakeLambdaContext()) == {"batchItemFailures": []}
    assert sorted(r.outcome for r in deployment.results) == [
        "missing",
        "missing",
        "missing",
        "unchanged",
        "unchanged",
    ]
    assert deployment.state() == before
    assert deployment.receive() == [] and deployment.plugin_events() == []
    assert catalog.list_replacements() == []


def test_a_failing_record_is_reported_and_the_others_are_stored(deployment: Deployment) -> None:
    class CatalogFailingFor(DynamoDbCatalog):
        def _plan_put(self, position: int, entry: CatalogEntry) -> Any:
            if entry.record.SOPInstanceUID == MR_P.SOPInstanceUID:
                raise BackendError(
                    f"cannot read catalog item for SOP Instance {entry.record.SOPInstanceUID}: InternalServerError"
                )
            return super()._plan_put(position, entry)

    archive = aws.archive()
    failing = CatalogFailingFor(TABLE, client=deployment.dynamodb)
    archive.catalog = failing  # type: ignore[misc]
    archive.ingest_service.catalog = failing
    deployment.receive()
    deployment.put(CT_P.key, CT)
    deployment.put(MR_P.key, MR)
    deployment.put("incoming/upload1.dcm", UPLOAD)
    messages = deployment.receive()
    mr_message = next(m["MessageId"] for m in messages if MR_P.SOPInstanceUID in m["Body"])

    response = indexer.handler(sqs_event(messages), FakeLambdaContext())

    assert response == {"batchItemFailures": [{"itemIdentifier": mr_message}]}
    assert failing.get_instance(CT_P.SOPInstanceUID) is not None
    assert failing.get_instance(UPLOAD_P.SOPInstanceUID) is not None
    assert failing.get_instance(MR_P.SOPInstanceUID) is None
    # The object that failed is untouched, ready for the retry; nothing was quarantined.
    assert deployment.s3.head_object(Bucket=BUCKET, Key=MR_P.key)["ContentLength"] == len(MR)
    assert failing.list_quarantine() == []


def test_eventbridge_shaped_body(deployment: Deployment) -> None:
    deployment.put(CT_P.key, CT)
    deployment.receive()
    etag = deployment.s3.head_object(Bucket=BUCKET, Key=CT_P.key)["ETag"].strip('"')

    def point_at_ct(body: dict[str, Any]) -> None:
        body["detail"]["bucket"]["name"] = BUCKET
        body["detail"]["object"].update(key=CT_P.key, size=len(CT), etag=etag)

    event = canned("eventbridge_object_created_sqs.json", change=point_at_ct)

    assert indexer.handler(event, FakeLambdaContext()) == {"batchItemFailures": []}
    assert [(r.outcome, r.key) for r in deployment.results] == [("stored", CT_P.key)]
    record = aws.archive().catalog.get_instance(CT_P.SOPInstanceUID)
    assert record is not None and record.etag == etag


def test_canned_s3_notification_with_an_encoded_key(deployment: Deployment) -> None:
    deployment.put("incoming/upload from web(1).dcm", UPLOAD)
    deployment.receive()

    def our_bucket(body: dict[str, Any]) -> None:
        body["Records"][0]["s3"]["bucket"]["name"] = BUCKET
        del body["Records"][0]["s3"]["object"]["eTag"]  # unknown etag: ingest asks S3 (HEAD)

    event = canned("s3_object_created_sqs.json", change=our_bucket)

    assert indexer.handler(event, FakeLambdaContext()) == {"batchItemFailures": []}
    assert [(r.outcome, r.key) for r in deployment.results] == [("stored", UPLOAD_P.key)]
    assert aws.archive().catalog.get_instance(UPLOAD_P.SOPInstanceUID) is not None


def test_s3_test_event_is_acknowledged(deployment: Deployment) -> None:
    event = canned("s3_test_event_sqs.json")
    assert indexer.handler(event, FakeLambdaContext()) == {"batchItemFailures": []}
    assert deployment.results == []


def test_unrecognised_messages_and_other_buckets_fail_into_the_dead_letter_queue(
    deployment: Deployment,
) -> None:
    def other_bucket(body: dict[str, Any]) -> None:
        body["Records"][0]["s3"]["bucket"]["name"] = "someone-elses-bucket"

    event = canned("s3_object_created_sqs.json", change=other_bucket)
    event["Records"].append({**canned("s3_test_event_sqs.json")["Records"][0]})
    event["Records"].append(
        {**event["Records"][0], "messageId": "not-json", "body": json.dumps({"hello": "world"})}
    )
    response = indexer.handler(event, FakeLambdaContext())
    assert sorted(f["itemIdentifier"] for f in response["batchItemFailures"]) == sorted(
        [event["Records"][0]["messageId"], "not-json"]
    )
    assert deployment.results == []


def test_object_removed_and_other_prefixes_are_skipped() -> None:
    body = {
        "Records": [
            {
                "eventSource": "aws:s3",
                "eventName": "ObjectRemoved:Delete",
                "s3": {"bucket": {"name": BUCKET}, "object": {"key": "studies/x.dcm"}},
            },
            {
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Copy",
                "s3": {
                    "bucket": {"name": BUCKET},
                    "object": {"key": "quarantine/q/x+y.dcm", "size": 3, "eTag": "e"},
                },
            },
        ]
    }
    assert indexer.created_objects(body) == [indexer.CreatedObject(BUCKET, "quarantine/q/x y.dcm", 3, "e")]
    assert not indexer.created_objects(body)[0].key.startswith(indexer.INGESTED_PREFIXES)


def test_a_structure_set_too_large_for_a_catalog_item_is_ingested_and_deleted(deployment: Deployment) -> None:
    """A whole-body RT Structure Set's header (~500 KB compressed) does not fit a DynamoDB item: its
    metadata goes beside the objects under catalog/metadata/, which does not notify ingest."""
    data = large_rtstruct()
    parsed = parse_bytes(data)
    deployment.receive()
    deployment.put("incoming/plan-structures.dcm", data)
    assert indexer.handler(sqs_event(deployment.receive()), FakeLambdaContext()) == {"batchItemFailures": []}
    assert [r.outcome for r in deployment.results] == ["stored"]

    archive = aws.archive()
    record = archive.catalog.get_instance(parsed.SOPInstanceUID)
    assert record is not None and record.metadata == parsed.metadata
    (listed,) = archive.catalog.list_instances(parsed.StudyInstanceUID)
    assert listed.metadata == parsed.metadata
    keys = {o["Key"] for o in deployment.s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    (overflow,) = [key for key in keys if key.startswith(CATALOG_METADATA_PREFIX)]
    # The copy to the canonical key comes back as unchanged; the metadata object is not DICOM to ingest.
    deployment.results.clear()
    assert indexer.handler(sqs_event(deployment.receive()), FakeLambdaContext()) == {"batchItemFailures": []}
    assert [r.outcome for r in deployment.results] == ["unchanged"]
    assert archive.catalog.list_quarantine() == []

    archive.delete_service.delete_study(parsed.StudyInstanceUID)
    keys = {o["Key"] for o in deployment.s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
    assert overflow not in keys and parsed.key not in keys
    assert archive.catalog.get_instance(parsed.SOPInstanceUID) is None


def test_a_redelivered_notification_announces_an_event_the_first_attempt_lost(deployment: Deployment) -> None:
    archive = aws.archive()
    publish_many = archive.events.publish_many  # type: ignore[union-attr]
    outage = [BackendError("cannot publish InstanceStored to event bus skypacs-events: ThrottlingException")]

    def flaky(events: Any) -> dict[int, Exception]:
        if outage:
            return dict.fromkeys(range(len(events)), outage.pop())
        return publish_many(events)

    archive.events.publish_many = flaky  # type: ignore[union-attr, method-assign]
    deployment.receive()
    deployment.put(CT_P.key, CT)
    messages = deployment.receive()
    first = indexer.handler(sqs_event(messages), FakeLambdaContext())
    assert first == {"batchItemFailures": [{"itemIdentifier": messages[0]["MessageId"]}]}
    assert archive.catalog.get_instance(CT_P.SOPInstanceUID) is not None and deployment.plugin_events() == []

    for message in messages:  # SQS hands the failed record back with its receive count raised
        message.setdefault("Attributes", {})["ApproximateReceiveCount"] = "2"
    assert indexer.handler(sqs_event(messages), FakeLambdaContext()) == {"batchItemFailures": []}
    ((kind, detail),) = deployment.plugin_events()
    assert kind == "InstanceStored" and detail["SOPInstanceUID"] == CT_P.SOPInstanceUID and detail["redelivered"]
