"""The AWS adapters (S3, DynamoDB, EventBridge) against every port contract, under moto.

Each fixture makes its own bucket, table or bus inside ``mock_aws()``; fake credentials and region come
from the environment, so no test can reach AWS.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto import mock_aws

from skypacs.adapters.dynamodb_catalog import DynamoDbCatalog, create_catalog_table
from skypacs.adapters.eventbridge import EventBridgeEventBus
from skypacs.adapters.s3 import S3ObjectStore
from skypacs.errors import BackendError, NotFound
from skypacs.keys import CATALOG_METADATA_PREFIX
from skypacs.ports import ArchiveEvent, Catalog, CatalogEntry, EventBus, ObjectStore
from tests.contract.catalog_contract import STUDY, CatalogContract, huge_metadata, levels, record
from tests.contract.event_bus_contract import EventBusContract
from tests.contract.object_store_contract import ObjectStoreContract

REGION = "us-east-1"


@pytest.fixture
def aws(fake_aws_credentials: None) -> Iterator[None]:
    with mock_aws():
        yield


class TestS3ObjectStore(ObjectStoreContract):
    @pytest.fixture
    def object_store(self, aws: None) -> S3ObjectStore:
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket="skypacs-contract")
        return S3ObjectStore("skypacs-contract", client=client)

    def test_open_streams_and_closes(self, object_store: S3ObjectStore) -> None:
        object_store.put("a/x.dcm", b"0123456789" * 1000)
        with object_store.open("a/x.dcm") as stream:
            assert stream.read(4) == b"0123"
            assert stream.read() == (b"0123456789" * 1000)[4:]
        assert stream.closed

    def test_put_from_a_one_way_stream(self, object_store: S3ObjectStore) -> None:
        class OneWay:
            def __init__(self, data: bytes) -> None:
                self._data = data

            def seekable(self) -> bool:
                return False

            def read(self, size: int = -1) -> bytes:
                chunk, self._data = self._data[:size], self._data[size:]
                return chunk

        info = object_store.put("a/x.dcm", OneWay(b"abc" * 100_000))  # type: ignore[arg-type]
        assert info.size == 300_000
        assert object_store.read_range("a/x.dcm", 299_998, 10) == b"bc"

    def test_move_keeps_the_etag(self, object_store: S3ObjectStore) -> None:
        put = object_store.put("incoming/x.dcm", b"payload")
        assert object_store.move("incoming/x.dcm", "studies/x.dcm").etag == put.etag

    def test_move_does_not_delete_a_source_overwritten_meanwhile(
        self, object_store: S3ObjectStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        object_store.put("incoming/x.dcm", b"first upload")
        copy_object = object_store.client.copy_object

        def copy_then_overwrite(**kwargs: Any) -> Any:
            response = copy_object(**kwargs)
            object_store.put("incoming/x.dcm", b"second upload")
            return response

        monkeypatch.setattr(object_store.client, "copy_object", copy_then_overwrite)
        object_store.move("incoming/x.dcm", "studies/x.dcm")
        assert object_store.read_range("studies/x.dcm", 0, 100) == b"first upload"
        assert object_store.read_range("incoming/x.dcm", 0, 100) == b"second upload"

    def test_other_errors_are_backend_errors(self, aws: None) -> None:
        store = S3ObjectStore("no-such-bucket", client=boto3.client("s3", region_name=REGION))
        with pytest.raises(BackendError) as caught:
            store.put("a/x.dcm", b"x")
        assert isinstance(caught.value.__cause__, ClientError)
        with pytest.raises(BackendError):
            list(store.list())

    def test_kms_key_is_requested_only_when_given(self, aws: None) -> None:
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket="skypacs-kms")
        key_id = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["KeyId"]
        S3ObjectStore("skypacs-kms", client=client, kms_key_id=key_id).put("a.dcm", b"x")
        S3ObjectStore("skypacs-kms", client=client).put("b.dcm", b"x")
        assert client.head_object(Bucket="skypacs-kms", Key="a.dcm")["ServerSideEncryption"] == "aws:kms"
        assert client.head_object(Bucket="skypacs-kms", Key="b.dcm").get("ServerSideEncryption") != "aws:kms"



class TestS3ObjectStoreOnKmsBucket(ObjectStoreContract):
    """The deployed bucket is SSE-KMS by default, where S3's ETag is not the MD5 of the bytes: the
    contract (equal bytes, equal etags) must hold there too."""

    @pytest.fixture
    def object_store(self, aws: None) -> S3ObjectStore:
        client = boto3.client("s3", region_name=REGION)
        key_id = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["KeyId"]
        client.create_bucket(Bucket="skypacs-kms")
        client.put_bucket_encryption(
            Bucket="skypacs-kms",
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_id}}]
            },
        )
        return S3ObjectStore("skypacs-kms", client=client)

class TestDynamoDbCatalog(CatalogContract):
    @pytest.fixture
    def overflow(self, aws: None) -> S3ObjectStore:
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket="skypacs-catalog-overflow")
        return S3ObjectStore("skypacs-catalog-overflow", client=client)

    @pytest.fixture
    def catalog(self, aws: None, overflow: S3ObjectStore) -> DynamoDbCatalog:
        client = boto3.client("dynamodb", region_name=REGION)
        create_catalog_table(client, "skypacs-contract")
        return DynamoDbCatalog("skypacs-contract", client=client, overflow=overflow)

    def test_huge_metadata_lives_in_the_overflow_store_while_its_version_is_current(
        self, catalog: DynamoDbCatalog, overflow: S3ObjectStore
    ) -> None:
        big = replace(record("1.2.3.1"), metadata=huge_metadata("1.2.3.1"))
        catalog.put_instance(big, **levels(big))
        (kept,) = [info.key for info in overflow.list(CATALOG_METADATA_PREFIX)]
        assert kept.startswith(f"{CATALOG_METADATA_PREFIX}1.2.3.1/") and kept.endswith(".json.gz")
        items = catalog.client.scan(TableName=catalog.table_name)["Items"]
        instance = next(item for item in items if "SOPInstanceUID" in item)
        assert instance["metadata_key"] == {"S": kept} and "metadata" not in instance

        bigger = replace(big, etag="e2", metadata=huge_metadata("1.2.3.1", items=7_200))
        catalog.put_instance(bigger, **levels(bigger))  # a new version: the old object goes
        (current,) = [info.key for info in overflow.list(CATALOG_METADATA_PREFIX)]
        assert current != kept and catalog.get_instance("1.2.3.1") == bigger

        small = replace(bigger, etag="e3", metadata=record("1.2.3.1").metadata)
        catalog.put_instance(small, **levels(small))  # fits an item again
        assert list(overflow.list(CATALOG_METADATA_PREFIX)) == []
        catalog.put_instance(bigger, **levels(bigger))
        catalog.delete_instance("1.2.3.1")
        assert list(overflow.list(CATALOG_METADATA_PREFIX)) == []
        assert catalog.client.scan(TableName=catalog.table_name)["Items"] == []

    def test_huge_metadata_moved_to_another_study_keeps_one_object(
        self, catalog: DynamoDbCatalog, overflow: S3ObjectStore
    ) -> None:
        big = replace(record("1.2.3.1"), metadata=huge_metadata("1.2.3.1"))
        catalog.put_instance(big, **levels(big))
        moved = replace(
            record("1.2.3.1", study="1.2.826.0.1.9", series="1.2.826.0.1.9.1", etag="e2"),
            metadata=huge_metadata("1.2.3.1", items=6_800),
        )
        catalog.put_instance(moved, **levels(moved))
        assert catalog.get_instance("1.2.3.1") == moved
        assert len(list(overflow.list(CATALOG_METADATA_PREFIX))) == 1

    def test_a_burst_of_one_series_takes_few_transactions(self, catalog: DynamoDbCatalog) -> None:
        transactions: list[int] = []
        catalog.client.meta.events.register(
            "provide-client-params.dynamodb.TransactWriteItems",
            lambda params, **_: transactions.append(len(params["TransactItems"])),
        )
        batch = [record(f"1.2.3.{n}") for n in range(1, 151)]
        assert catalog.put_instances([CatalogEntry(r, **levels(r)) for r in batch]) == {}
        # 96 instances + 4 level items, then 54 + 4: not 150 transactions of 5 items.
        assert transactions == [100, 58]
        assert len(list(catalog.list_instances(STUDY))) == 150

    def test_huge_metadata_without_an_overflow_store_is_refused(self, aws: None) -> None:
        client = boto3.client("dynamodb", region_name=REGION)
        create_catalog_table(client, "no-overflow")
        catalog = DynamoDbCatalog("no-overflow", client=client)
        big = replace(record("1.2.3.1"), metadata=huge_metadata("1.2.3.1"))
        with pytest.raises(BackendError, match="too large for the catalog.*no overflow store"):
            catalog.put_instance(big, **levels(big))
        assert catalog.get_instance("1.2.3.1") is None

    def test_sizes_stay_ints(self, catalog: DynamoDbCatalog) -> None:
        rec = record("1.2.3.1")
        catalog.put_instance(rec, **levels(rec))
        got = catalog.get_instance("1.2.3.1")
        assert got is not None and type(got.size) is int
        assert [type(q.size) for q in catalog.list_quarantine()] == []

    def test_metadata_is_stored_compressed(self, catalog: DynamoDbCatalog) -> None:
        rec = record("1.2.3.1")
        catalog.put_instance(rec, **levels(rec))
        items = catalog.client.scan(TableName=catalog.table_name)["Items"]
        instance = next(item for item in items if "SOPInstanceUID" in item)
        assert instance["metadata"]["B"][:2] == b"\x1f\x8b"

    def test_instance_stored_again_elsewhere_leaves_one_record(self, catalog: DynamoDbCatalog) -> None:
        first = record("1.2.3.1")
        catalog.put_instance(first, **levels(first))
        moved = record("1.2.3.1", study="1.2.826.0.1.9", series="1.2.826.0.1.9.1", etag="e2")
        catalog.put_instance(moved, **levels(moved))
        assert catalog.get_instance("1.2.3.1") == moved
        assert list(catalog.list_instances(STUDY)) == []
        assert catalog.get_study(STUDY) is None  # the old study had nothing else
        assert catalog.get_study("1.2.826.0.1.9") is not None

    def test_patient_is_kept_while_another_study_refers_to_it(self, catalog: DynamoDbCatalog) -> None:
        a = record("1.2.3.1")
        b = record("1.2.3.2", study="1.2.826.0.1.9", series="1.2.826.0.1.9.1")
        for rec in (a, b):
            catalog.put_instance(rec, **levels(rec))
        catalog.delete_instance("1.2.3.1")
        assert catalog.get_patient("P1") is not None
        catalog.delete_instance("1.2.3.2")
        assert catalog.get_patient("P1") is None
        assert catalog.client.scan(TableName=catalog.table_name)["Items"] == []

    def test_level_rewritten_during_delete_is_kept(self, catalog: DynamoDbCatalog) -> None:
        """A store that lands between the emptiness check and the delete renews ``gen``: the level stays."""
        rec = record("1.2.3.1")
        catalog.put_instance(rec, **levels(rec))
        original = catalog._has_instance
        raced = record("1.2.3.2")

        def check_then_race(study: str, **kwargs: Any) -> bool:
            found = original(study, **kwargs)
            if not found and kwargs.get("series"):
                catalog.put_instance(raced, **levels(raced))
            return found

        catalog._has_instance = check_then_race  # type: ignore[method-assign]
        catalog.delete_instance("1.2.3.1")
        catalog._has_instance = original  # type: ignore[method-assign]
        assert catalog.get_series(STUDY, rec.SeriesInstanceUID) is not None
        assert [r.SOPInstanceUID for r in catalog.list_instances(STUDY)] == ["1.2.3.2"]

    def test_transaction_conflicts_are_retried(self, aws: None) -> None:
        client = boto3.client("dynamodb", region_name=REGION)
        sleeps: list[float] = []
        catalog = DynamoDbCatalog("t", client=client, sleep=sleeps.append)
        writes = [{"Put": {"TableName": "t", "Item": {"pk": {"S": "a"}, "sk": {"S": "b"}}}}]
        conflict = {"CancellationReasons": [{"Code": "None"}, {"Code": "TransactionConflict"}]}
        with Stubber(client) as stub:
            stub.add_client_error(
                "transact_write_items",
                "TransactionCanceledException",
                response_meta=None,
                modeled_fields=conflict,
            )
            stub.add_response("transact_write_items", {})
            catalog._transact(writes, "cannot write")
            stub.add_client_error(
                "transact_write_items",
                "TransactionCanceledException",
                modeled_fields={"CancellationReasons": [{"Code": "ValidationError"}]},
            )
            with pytest.raises(BackendError):
                catalog._transact(writes, "cannot write")
        assert len(sleeps) == 1

    def test_missing_table_is_a_backend_error(self, aws: None) -> None:
        catalog = DynamoDbCatalog("no-such-table", client=boto3.client("dynamodb", region_name=REGION))
        with pytest.raises(BackendError):
            catalog.get_instance("1.2.3")


class TestEventBridgeEventBus(EventBusContract):
    @pytest.fixture
    def queue_url(self, aws: None) -> str:
        return str(
            boto3.client("sqs", region_name=REGION).create_queue(QueueName="skypacs-plugin")["QueueUrl"]
        )

    @pytest.fixture
    def event_bus(self, aws: None, queue_url: str) -> EventBridgeEventBus:
        events = boto3.client("events", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        events.create_event_bus(Name="skypacs-contract")
        events.put_rule(
            Name="all-archive-events",
            EventBusName="skypacs-contract",
            EventPattern=json.dumps({"source": ["skypacs"]}),
        )
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        events.put_targets(
            Rule="all-archive-events",
            EventBusName="skypacs-contract",
            Targets=[{"Id": "plugin", "Arn": queue_arn}],
        )
        return EventBridgeEventBus("skypacs-contract", client=events)

    @pytest.fixture
    def received(self, queue_url: str) -> Callable[[], list[ArchiveEvent]]:
        sqs = boto3.client("sqs", region_name=REGION)
        seen: list[ArchiveEvent] = []

        def drain() -> list[ArchiveEvent]:
            while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages"):
                for message in messages:
                    body = json.loads(message["Body"])
                    assert body["source"] == "skypacs"
                    seen.append(ArchiveEvent(body["detail-type"], body["detail"]))
                    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            return list(seen)

        return drain

    def test_rejected_entry_is_a_backend_error(self, aws: None) -> None:
        client = boto3.client("events", region_name=REGION)
        bus = EventBridgeEventBus("skypacs", client=client)
        with Stubber(client) as stub:
            stub.add_response(
                "put_events",
                {
                    "FailedEntryCount": 1,
                    "Entries": [{"ErrorCode": "InternalFailure", "ErrorMessage": "try again"}],
                },
            )
            with pytest.raises(BackendError, match="InternalFailure"):
                bus.publish(ArchiveEvent("InstanceStored", {"SOPInstanceUID": "1.2.3"}))

    def test_a_batch_takes_puts_of_ten_and_a_rejected_entry_fails_alone(self, aws: None) -> None:
        client = boto3.client("events", region_name=REGION)
        bus = EventBridgeEventBus("skypacs", client=client)
        batch = [ArchiveEvent("InstanceStored", {"SOPInstanceUID": f"1.2.3.{n}"}) for n in range(12)]
        with Stubber(client) as stub:
            rejected = [{"EventId": str(n)} for n in range(10)]
            rejected[3] = {"ErrorCode": "ThrottlingException", "ErrorMessage": "slow down"}
            stub.add_response("put_events", {"FailedEntryCount": 1, "Entries": rejected})
            stub.add_response("put_events", {"FailedEntryCount": 0, "Entries": [{"EventId": "a"}, {"EventId": "b"}]})
            failures = bus.publish_many(batch)
            stub.assert_no_pending_responses()
        assert list(failures) == [3] and "ThrottlingException" in str(failures[3])

    def test_missing_bus_is_a_backend_error(self, aws: None) -> None:
        bus = EventBridgeEventBus("no-such-bus", client=boto3.client("events", region_name=REGION))
        with pytest.raises(BackendError):
            bus.publish(ArchiveEvent("InstanceStored", {"SOPInstanceUID": "1.2.3"}))


def test_adapters_satisfy_the_port_protocols(aws: None) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    assert isinstance(S3ObjectStore("b", client=s3), ObjectStore)
    assert isinstance(DynamoDbCatalog("t", client=boto3.client("dynamodb", region_name=REGION)), Catalog)
    assert isinstance(EventBridgeEventBus("e", client=boto3.client("events", region_name=REGION)), EventBus)


def test_not_found_is_translated_for_every_read(aws: None) -> None:
    client = boto3.client("s3", region_name=REGION)
    client.create_bucket(Bucket="skypacs-nf")
    store = S3ObjectStore("skypacs-nf", client=client)
    for read in (
        lambda: store.head("x"),
        lambda: store.open("x"),
        lambda: store.read_range("x", 0, 0),
        lambda: store.move("x", "y"),
    ):
        with pytest.raises(NotFound) as caught:
            read()
        assert isinstance(caught.value.__cause__, ClientError)
