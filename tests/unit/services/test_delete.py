"""The delete service on the embedded adapters (filesystem, SQLite) and on the AWS adapters under moto
(S3, DynamoDB, EventBridge; no query index, as on AWS without OpenSearch)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from moto import mock_aws

from skypacs.adapters.dynamodb_catalog import create_catalog_table
from skypacs.aws import AwsArchive
from skypacs.config import ENV_BUCKET, ENV_CATALOG_TABLE, ENV_EVENT_BUS
from skypacs.embedded import EmbeddedArchive
from skypacs.errors import BackendError, InvalidQuery, NotFound
from skypacs.keys import instance_key
from skypacs.ports import INSTANCE_DELETED, ArchiveEvent, ObjectStore, QueryIndex
from skypacs.query.model import Level, query_from_qido
from skypacs.services.delete import DeleteService
from tests.dicom_files import clone, new_uid

SOP_INSTANCE_UID = "00080018"


@dataclass
class Study:
    uid: str
    series: list[str]
    sops: dict[str, list[str]]
    """SOP Instance UIDs by series."""
    data: dict[str, bytes] = field(default_factory=dict)
    """The bytes stored, by SOP Instance UID."""


def store_study(archive: EmbeddedArchive | AwsArchive, per_series: tuple[int, ...] = (3, 1)) -> Study:
    study = Study(new_uid(), [], {})
    number = 0
    for count in per_series:
        series = new_uid()
        study.series.append(series)
        study.sops[series] = []
        for _ in range(count):
            number += 1
            sop = new_uid()
            data = clone("CT_small.dcm", StudyInstanceUID=study.uid, SeriesInstanceUID=series, SOPInstanceUID=sop,
                         InstanceNumber=str(number))
            receipt = archive.store_service.store_part10(data)
            if isinstance(archive, AwsArchive):
                archive.ingest_service.ingest(receipt.info.key, etag=receipt.info.etag, size=receipt.info.size)
            study.sops[series].append(sop)
            study.data[sop] = data
    if isinstance(archive, EmbeddedArchive):
        archive.indexer().drain_once()
    return study


@pytest.fixture
def deleted(archive: EmbeddedArchive) -> list[ArchiveEvent]:
    received: list[ArchiveEvent] = []
    archive.events.subscribe(received.append, INSTANCE_DELETED)
    return received


def service(archive: EmbeddedArchive, *, store: ObjectStore | None = None,
            index: QueryIndex | None = None) -> DeleteService:
    return DeleteService(archive.catalog, store or archive.store, index or archive.index, archive.events)


def queried(archive: EmbeddedArchive, study: str) -> set[str]:
    """SOP Instance UIDs QIDO finds in ``study``."""
    page = archive.query_service.search(query_from_qido(Level.IMAGE, [], study_instance_uid=study))
    return {item[SOP_INSTANCE_UID]["Value"][0] for item in page.items}


def retrievable(archive: EmbeddedArchive, study: Study, series: str, sop: str) -> bytes:
    record = archive.retrieve_service.instance(study.uid, series, sop)
    return archive.retrieve_service.read(record)


def object_exists(archive: EmbeddedArchive, study: Study, series: str, sop: str) -> bool:
    return archive.store.local_path(instance_key(study.uid, series, sop)).exists()


def test_delete_instance_removes_it_everywhere_and_leaves_its_series(
    archive: EmbeddedArchive, deleted: list[ArchiveEvent]
) -> None:
    study = store_study(archive)
    series = study.series[0]
    gone, *kept = study.sops[series]

    summary = service(archive).delete_instance(study.uid, series, gone)

    assert summary.instances == 1 and summary.SOPInstanceUIDs == (gone,)
    assert gone not in queried(archive, study.uid)
    assert queried(archive, study.uid) == set(kept) | set(study.sops[study.series[1]])
    with pytest.raises(NotFound):
        archive.retrieve_service.instance(study.uid, series, gone)
    assert not object_exists(archive, study, series, gone)
    for sop in kept:
        assert retrievable(archive, study, series, sop) == study.data[sop]
    (event,) = deleted
    assert event.detail == {"StudyInstanceUID": study.uid, "SeriesInstanceUID": series, "SOPInstanceUID": gone,
                            "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
                            "key": instance_key(study.uid, series, gone)}
    assert "CompressedSamples" not in json.dumps(event.detail) and "1CT1" not in json.dumps(event.detail)


def test_delete_series_removes_its_instances_and_leaves_the_other_series(
    archive: EmbeddedArchive, deleted: list[ArchiveEvent]
) -> None:
    study = store_study(archive)
    other = store_study(archive, (1,))
    series, kept_series = study.series

    summary = service(archive).delete_series(study.uid, series)

    assert summary.instances == 3 and sorted(summary.SOPInstanceUIDs) == sorted(study.sops[series])
    assert queried(archive, study.uid) == set(study.sops[kept_series])
    assert archive.catalog.get_series(study.uid, series) is None
    assert archive.catalog.get_series(study.uid, kept_series) is not None
    with pytest.raises(NotFound):
        archive.retrieve_service.instances(study.uid, series)
    assert not any(object_exists(archive, study, series, sop) for sop in study.sops[series])
    (kept,) = study.sops[kept_series]
    assert retrievable(archive, study, kept_series, kept) == study.data[kept]
    (other_sop,) = other.sops[other.series[0]]
    assert retrievable(archive, other, other.series[0], other_sop) == other.data[other_sop]
    assert sorted(event.detail["SOPInstanceUID"] for event in deleted) == sorted(study.sops[series])


def test_delete_study_removes_the_study_and_nothing_else(
    archive: EmbeddedArchive, deleted: list[ArchiveEvent]
) -> None:
    study = store_study(archive)
    other = store_study(archive, (2,))

    summary = service(archive).delete_study(study.uid)

    assert summary.instances == 4 and summary.StudyInstanceUID == study.uid
    assert queried(archive, study.uid) == set()
    page = archive.query_service.search(query_from_qido(Level.STUDY, []))
    assert {item["0020000D"]["Value"][0] for item in page.items} == {other.uid}
    assert archive.catalog.get_study(study.uid) is None
    assert list(archive.store.list(f"studies/{study.uid}/")) == []
    assert not (archive.store.root / "studies" / study.uid).exists()
    assert len(deleted) == 4
    assert queried(archive, other.uid) == set(other.data)
    for sop in other.sops[other.series[0]]:
        assert retrievable(archive, other, other.series[0], sop) == other.data[sop]
    assert archive.catalog.get_patient("1CT1") is not None  # the other study's patient stays


def test_unknown_and_repeated_deletes_are_not_found(archive: EmbeddedArchive, deleted: list[ArchiveEvent]) -> None:
    study = store_study(archive)
    series = study.series[1]
    (sop,) = study.sops[series]
    deletes = service(archive)
    deletes.delete_instance(study.uid, series, sop)
    with pytest.raises(NotFound):
        deletes.delete_instance(study.uid, series, sop)
    with pytest.raises(NotFound):
        deletes.delete_series(study.uid, series)  # its last instance is gone, so is the series
    with pytest.raises(NotFound):
        deletes.delete_study(new_uid())
    deletes.delete_study(study.uid)
    with pytest.raises(NotFound):
        deletes.delete_study(study.uid)
    assert len(deleted) == 4


def test_an_instance_is_deleted_only_under_its_own_study_and_series(archive: EmbeddedArchive) -> None:
    study = store_study(archive)
    series, other_series = study.series
    sop = study.sops[series][0]
    deletes = service(archive)
    with pytest.raises(NotFound):
        deletes.delete_instance(study.uid, other_series, sop)
    with pytest.raises(NotFound):
        deletes.delete_instance(new_uid(), series, sop)
    with pytest.raises(NotFound):
        deletes.delete_series(new_uid(), series)
    assert retrievable(archive, study, series, sop) == study.data[sop]
    assert queried(archive, study.uid) == set(study.data)


@pytest.mark.parametrize("uids", [("1.2.x",), ("../objects",), ("1.2.3", "1.2/3"), ("1.2.3", "1.2.3", "01.2")])
def test_invalid_uids_are_refused_before_anything_is_touched(archive: EmbeddedArchive, uids: tuple[str, ...]) -> None:
    study = store_study(archive, (1,))
    deletes = service(archive)
    methods: dict[int, Callable[..., Any]] = {1: deletes.delete_study, 2: deletes.delete_series,
                                              3: deletes.delete_instance}
    method = methods[len(uids)]
    with pytest.raises(InvalidQuery, match="not a valid UID"):
        method(*uids)
    assert queried(archive, study.uid) == set(study.data)


class FailingOnce:
    """Delegates to a real adapter; the named method fails on its first call, as a backend might."""

    def __init__(self, target: Any, method: str) -> None:
        self.target, self.method, self.failed = target, method, False

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.target, name)
        if name != self.method or self.failed:
            return real

        def fail(*args: Any, **kwargs: Any) -> Any:
            self.failed = True
            raise BackendError(f"{name} failed")

        return fail


def test_a_delete_that_failed_after_the_catalog_is_finished_by_a_retry(
    archive: EmbeddedArchive, deleted: list[ArchiveEvent]
) -> None:
    study = store_study(archive)
    series = study.series[0]
    store = FailingOnce(archive.store, "delete")
    deletes = service(archive, store=store)

    with pytest.raises(BackendError):
        deletes.delete_series(study.uid, series)
    first = min(study.sops[series])  # the catalog lists instances in SOP Instance UID order
    # The first instance lost its index entry and catalog record, but not its object.
    assert archive.catalog.get_instance(first) is None
    assert object_exists(archive, study, series, first)
    assert deleted == []

    summary = deletes.delete_series(study.uid, series)

    assert sorted(summary.SOPInstanceUIDs) == sorted(study.sops[series])
    assert not any(object_exists(archive, study, series, sop) for sop in study.sops[series])
    assert sorted(event.detail["SOPInstanceUID"] for event in deleted) == sorted(study.sops[series])
    leftover = next(event for event in deleted if event.detail["SOPInstanceUID"] == first)
    assert leftover.detail["key"] == instance_key(study.uid, series, first)
    with pytest.raises(NotFound):
        deletes.delete_series(study.uid, series)


def test_a_delete_that_failed_after_the_index_is_finished_by_a_retry(
    archive: EmbeddedArchive, deleted: list[ArchiveEvent]
) -> None:
    study = store_study(archive)
    series = study.series[1]
    (sop,) = study.sops[series]
    catalog = FailingOnce(archive.catalog, "delete_instance")
    deletes = DeleteService(catalog, archive.store, archive.index, archive.events)

    with pytest.raises(BackendError):
        deletes.delete_instance(study.uid, series, sop)
    assert sop not in queried(archive, study.uid)  # queries stop showing it first
    assert retrievable(archive, study, series, sop) == study.data[sop]  # nothing else changed yet

    assert deletes.delete_instance(study.uid, series, sop).instances == 1
    assert archive.catalog.get_instance(sop) is None and not object_exists(archive, study, series, sop)
    assert len(deleted) == 1


def test_an_object_no_record_describes_is_deleted_with_its_study(
    archive: EmbeddedArchive, deleted: list[ArchiveEvent]
) -> None:
    """E.g. stored but not yet indexed: a deleted study leaves no object of it behind."""
    study = store_study(archive, (1,))
    series, sop = study.series[0], new_uid()
    archive.store.put(instance_key(study.uid, series, sop), clone("CT_small.dcm", StudyInstanceUID=study.uid,
                                                                   SeriesInstanceUID=series, SOPInstanceUID=sop))

    summary = service(archive).delete_study(study.uid)

    assert summary.instances == 2 and sop in summary.SOPInstanceUIDs
    assert list(archive.store.list(f"studies/{study.uid}/")) == []
    assert {event.detail["SOPInstanceUID"] for event in deleted} == set(study.data) | {sop}


def test_without_an_index_or_an_event_bus(archive: EmbeddedArchive) -> None:
    study = store_study(archive, (2,))
    series = study.series[0]
    summary = DeleteService(archive.catalog, archive.store, None, None).delete_series(study.uid, series)
    assert summary.instances == 2
    with pytest.raises(NotFound):
        archive.retrieve_service.instances(study.uid)


# --- AWS adapters under moto ------------------------------------------------------------------------

BUCKET, TABLE, BUS = "objects", "catalog", "archive-events"


@dataclass
class Aws:
    archive: AwsArchive
    s3: Any
    sqs: Any
    plugin_queue: str

    def plugin_events(self) -> list[tuple[str, dict[str, Any]]]:
        events = []
        while batch := self.sqs.receive_message(QueueUrl=self.plugin_queue, MaxNumberOfMessages=10).get("Messages"):
            for message in batch:
                body = json.loads(message["Body"])
                events.append((body["detail-type"], body["detail"]))
                self.sqs.delete_message(QueueUrl=self.plugin_queue, ReceiptHandle=message["ReceiptHandle"])
        return events


@pytest.fixture
def aws(fake_aws_credentials: None) -> Iterator[Aws]:
    with mock_aws():
        s3, dynamodb = boto3.client("s3"), boto3.client("dynamodb")
        events, sqs = boto3.client("events"), boto3.client("sqs")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})  # as deployed
        create_catalog_table(dynamodb, TABLE)
        queue = sqs.create_queue(QueueName="plugin")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.create_event_bus(Name=BUS)
        events.put_rule(Name="plugin", EventBusName=BUS, EventPattern=json.dumps({"source": ["skypacs"]}))
        events.put_targets(Rule="plugin", EventBusName=BUS, Targets=[{"Id": "plugin", "Arn": queue_arn}])
        archive = AwsArchive(environ={ENV_BUCKET: BUCKET, ENV_CATALOG_TABLE: TABLE, ENV_EVENT_BUS: BUS},
                             s3_client=s3, dynamodb_client=dynamodb, events_client=events)
        yield Aws(archive, s3, sqs, queue)


def aws_service(archive: AwsArchive) -> DeleteService:
    assert archive.index is None  # no OpenSearch endpoint configured
    return DeleteService(archive.catalog, archive.store, archive.index, archive.events)


def test_delete_on_s3_and_dynamodb(aws: Aws) -> None:
    archive = aws.archive
    study = store_study(archive)
    other = store_study(archive, (1,))
    series = study.series[0]
    gone, *kept = study.sops[series]
    assert [kind for kind, _ in aws.plugin_events()] == ["InstanceStored"] * 5
    deletes = aws_service(archive)

    assert deletes.delete_instance(study.uid, series, gone).instances == 1
    assert archive.catalog.get_instance(gone) is None
    with pytest.raises(NotFound):
        archive.store.head(instance_key(study.uid, series, gone))
    assert [record.SOPInstanceUID for record in archive.catalog.list_instances(study.uid, series)] == sorted(kept)
    with pytest.raises(NotFound):
        deletes.delete_instance(study.uid, series, gone)

    assert deletes.delete_series(study.uid, series).instances == 2
    assert archive.catalog.get_series(study.uid, series) is None
    assert deletes.delete_study(study.uid).instances == 1
    with pytest.raises(NotFound):
        deletes.delete_study(study.uid)
    assert archive.catalog.get_study(study.uid) is None
    assert list(archive.store.list(f"studies/{study.uid}/")) == []

    published = aws.plugin_events()
    assert {kind for kind, _ in published} == {"InstanceDeleted"}
    assert sorted(detail["SOPInstanceUID"] for _, detail in published) == sorted(study.data)
    (other_sop,) = other.sops[other.series[0]]
    record = archive.retrieve_service.instance(other.uid, other.series[0], other_sop)
    assert archive.retrieve_service.read(record) == other.data[other_sop]


def test_a_deleted_object_stays_recoverable_as_a_noncurrent_version_on_s3(aws: Aws) -> None:
    archive = aws.archive
    study = store_study(archive, (1,))
    series = study.series[0]
    (sop,) = study.sops[series]
    key = instance_key(study.uid, series, sop)

    DeleteService(archive.catalog, archive.store, None, None).delete_instance(study.uid, series, sop)

    versions = aws.s3.list_object_versions(Bucket=BUCKET, Prefix=key)
    (marker,) = versions["DeleteMarkers"]
    assert marker["IsLatest"]
    (version,) = versions["Versions"]
    restored = aws.s3.get_object(Bucket=BUCKET, Key=key, VersionId=version["VersionId"])["Body"].read()
    assert restored == study.data[sop]
