"""Catalog on Amazon DynamoDB, for the AWS archive.

One table, string keys ``pk`` (partition) and ``sk`` (sort). UIDs hold only digits and dots, so ``#``
separates the parts of a key unambiguously::

    item               pk                        sk
    instance           STUDY#{StudyInstanceUID}  SERIES#{SeriesInstanceUID}#INSTANCE#{SOPInstanceUID}
    series             STUDY#{StudyInstanceUID}  SERIES#{SeriesInstanceUID}
    study              STUDY#{StudyInstanceUID}  STUDY
    patient            PATIENT#{PatientID}       PATIENT
    patient's study    PATIENT#{PatientID}       STUDY#{StudyInstanceUID}
    quarantine         QUARANTINE                {quarantine_id}
    replacement        REPLACED                  {replaced_at}#{SOPInstanceUID}

A study, its series and its instances share one partition, so listing the instances of a study or of
a series for retrieval is one strongly consistent Query on ``begins_with(sk)``, in UID order. The
"patient's study" link items say which studies refer to a patient, so that deleting the last instance
of a patient can find out that the patient record is no longer referred to.

Instance items carry the record's fields as attributes (``size`` a Number, the rest Strings) and the
metadata (DICOM JSON) gzip-compressed in the Binary attribute ``metadata``; level items carry their
metadata the same way. An item is limited to 400 KB: compressed instance metadata above
:data:`MAX_METADATA_BYTES` (headers with very many small values: large RT Structure Sets, enhanced
multi-frame objects with thousands of per-frame functional groups) is written to the ``overflow`` object
store under ``catalog/metadata/{SOPInstanceUID}/{sha256}.json.gz`` before the transaction, and the item
holds its key in ``metadata_key`` instead. The object is named by its content, so a failed or concurrent
write never changes what a committed item points to; it is deleted with the instance, or when a new
version replaces it. Without an overflow store such metadata is refused with a :class:`BackendError`.
Level metadata (a handful of attributes) always fits.

Finding an instance by SOP Instance UID uses the sparse global secondary index ``by-sop-instance``
(partition key ``SOPInstanceUID``, which only instance items carry; keys only), then a strongly
consistent GetItem. GSI reads are eventually consistent: an instance written a moment ago may not be
found yet. For ingest's idempotency this means a duplicate arriving within the index lag is cataloged
again instead of being recognised as unchanged, which is harmless because the upsert is idempotent.

Writes. ``put_instance`` writes the instance, series, study, patient and link items in one
TransactWriteItems, so a reader never sees an instance without its levels and a retry after a crash
rewrites all of them. ``put_instances`` (the indexer's batches) puts many instances in one transaction
with the level items they share written once. Transactions touching the same series item at once (a burst of one series)
can be cancelled with ``TransactionConflict``; they are retried here with jittered backoff before a
:class:`BackendError` leaves the retry to the queue. An instance stored again under another study or
series has its old item removed in the same transaction (the catalog keys instances by SOP Instance UID).
Level items carry a random ``gen`` token renewed by every write; a level item is removed only when no
instance refers to it any more *and* its token is still the one read before checking, so a store that
races with a delete keeps the levels it needs.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from skypacs.errors import BackendError, NotFound
from skypacs.keys import catalog_metadata_key
from skypacs.ports import (
    CatalogEntry,
    DicomJson,
    InstanceRecord,
    ObjectStore,
    QuarantineRecord,
    ReplacementRecord,
)

if TYPE_CHECKING:
    DynamoDBClient = Any
    """``mypy_boto3_dynamodb.DynamoDBClient`` where the stubs are installed."""

logger = logging.getLogger(__name__)

SOP_INDEX = "by-sop-instance"
MAX_METADATA_BYTES = 350_000
"""Compressed metadata above this does not fit a 400 KB item with its other attributes."""
TRANSACTION_ATTEMPTS = 6
TRANSACTION_ITEMS = 100
"""DynamoDB's most items in one TransactWriteItems."""
TRANSACTION_BYTES = 3_500_000
"""Below DynamoDB's 4 MB per transaction, with room for attribute names and key overhead."""

_QUARANTINE_PK = "QUARANTINE"
_REPLACED_PK = "REPLACED"
_STUDY_SK = "STUDY"
_PATIENT_SK = "PATIENT"
_INSTANCE_FIELDS = tuple(f.name for f in fields(InstanceRecord) if f.name != "metadata")
_QUARANTINE_FIELDS = tuple(f.name for f in fields(QuarantineRecord))
_REPLACEMENT_FIELDS = tuple(f.name for f in fields(ReplacementRecord))

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def _study_pk(study: str) -> str:
    return f"STUDY#{study}"


def _series_sk(series: str) -> str:
    return f"SERIES#{series}"


def _instance_sk(series: str, sop: str) -> str:
    return f"SERIES#{series}#INSTANCE#{sop}"


def _patient_pk(patient_id: str) -> str:
    return f"PATIENT#{patient_id}"


def _link_sk(study: str) -> str:
    return f"STUDY#{study}"


def create_catalog_table(client: DynamoDBClient, table_name: str) -> None:
    """Create the catalog table (on-demand capacity) with its GSI and wait until it is active.

    Used by tests and tools; the CDK construct declares the same schema.
    """
    client.create_table(
        TableName=table_name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
            {"AttributeName": "SOPInstanceUID", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": SOP_INDEX,
                "KeySchema": [{"AttributeName": "SOPInstanceUID", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
    )
    client.get_waiter("table_exists").wait(TableName=table_name)


class DynamoDbCatalog:
    def __init__(
        self,
        table_name: str,
        *,
        client: DynamoDBClient | None = None,
        sleep: Callable[[float], None] = time.sleep,
        overflow: ObjectStore | None = None,
    ) -> None:
        """``overflow`` keeps instance metadata too large for an item (the archive's bucket on AWS)."""
        if client is None:
            import boto3

            client = boto3.client("dynamodb")
        self.table_name = table_name
        self.client = client
        self._sleep = sleep
        self.overflow = overflow

    # -- instances -----------------------------------------------------------------------------

    def get_instance(self, sop_instance_uid: str) -> InstanceRecord | None:
        records = [r for r in map(self._get_item, self._locations(sop_instance_uid)) if r is not None]
        if not records:
            return None
        return self._instance(max(records, key=lambda item: _plain(item["stored_at"])))

    def put_instance(
        self, record: InstanceRecord, *, series: DicomJson, study: DicomJson, patient: DicomJson
    ) -> None:
        failures = self.put_instances([CatalogEntry(record, series, study, patient)])
        if failures:
            raise failures[0]

    def put_instances(self, entries: Sequence[CatalogEntry]) -> dict[int, Exception]:
        """Write the entries in as few transactions as DynamoDB allows (100 items, 4 MB each), each
        holding instances and the level items they share once: a burst of one series costs one write of
        its series, study and patient items per transaction instead of per instance, and far fewer
        conflicts between concurrent writers of that series. A failed transaction fails its entries."""
        failures: dict[int, Exception] = {}
        planned: list[_PlannedPut] = []
        for position, entry in enumerate(entries):
            try:
                planned.append(self._plan_put(position, entry))
            except BackendError as exc:
                failures[position] = exc
        for chunk in _transaction_chunks(planned):
            gen = uuid.uuid4().hex
            writes = [self._put(put.instance) for put in chunk]
            writes += [
                {"Delete": {"TableName": self.table_name, "Key": _key(item["pk"], item["sk"])}}
                for put in chunk
                for item in put.stale_items
            ]
            levels: dict[tuple[str, str], dict[str, Any]] = {}
            for put in chunk:  # the last entry's copy of a shared level item wins, as one by one
                levels.update({(item["pk"], item["sk"]): {**item, "gen": gen} for item in put.levels})
            writes += [self._put(item) for item in levels.values()]
            first = chunk[0].entry.record.SOPInstanceUID
            try:
                self._transact(writes, f"cannot catalog {len(chunk)} instance(s) from SOP Instance {first}")
            except BackendError as exc:
                failures.update({put.position: exc for put in chunk})
                continue
            for put in chunk:
                try:
                    for item in put.stale_items:
                        self._prune(
                            _plain(item["StudyInstanceUID"]),
                            _plain(item["SeriesInstanceUID"]),
                            _plain(item["PatientID"]),
                        )
                    self._drop_overflow([*put.replaced, *put.stale_items], keep=put.instance.get("metadata_key"))
                except BackendError:
                    # Written; what is left is a level or an object nothing refers to any more.
                    logger.warning("clean-up after cataloging %s failed", put.entry.record.SOPInstanceUID)
        return failures

    def _plan_put(self, position: int, entry: CatalogEntry) -> _PlannedPut:
        """The items one entry writes and deletes, read and prepared before any transaction."""
        record = entry.record
        pk, sk = _study_pk(record.StudyInstanceUID), _instance_sk(record.SeriesInstanceUID, record.SOPInstanceUID)
        locations = self._locations(record.SOPInstanceUID)
        stale = [loc for loc in locations if loc != (pk, sk)]
        stale_items = [item for item in map(self._get_item, stale) if item is not None]
        # A new version in the same place: remember what its item pointed to (read only on re-stores).
        replaced = [self._get_item((pk, sk), ("metadata_key",))] if self.overflow and (pk, sk) in locations else []
        instance = {
            "pk": pk,
            "sk": sk,
            **{name: getattr(record, name) for name in _INSTANCE_FIELDS},
            **self._instance_metadata(record),
        }
        level = f"of SOP Instance {record.SOPInstanceUID}"
        patient_pk = _patient_pk(record.PatientID)
        levels: list[dict[str, Any]] = [
            {"pk": pk, "sk": _series_sk(record.SeriesInstanceUID),
             "metadata": _compress(entry.series, f"series metadata {level}")},
            {"pk": pk, "sk": _STUDY_SK, "PatientID": record.PatientID,
             "metadata": _compress(entry.study, f"study metadata {level}")},
            {"pk": patient_pk, "sk": _PATIENT_SK, "metadata": _compress(entry.patient, f"patient metadata {level}")},
            {"pk": patient_pk, "sk": _link_sk(record.StudyInstanceUID)},
        ]
        return _PlannedPut(position, entry, instance, levels, stale_items, replaced)

    def delete_instance(self, sop_instance_uid: str) -> None:
        for location in self._locations(sop_instance_uid):
            item = self._get_item(location)
            if item is None:
                continue
            self._call(
                "delete_item",
                f"cannot delete SOP Instance {sop_instance_uid}",
                TableName=self.table_name,
                Key=_key(*location),
            )
            self._prune(
                _plain(item["StudyInstanceUID"]), _plain(item["SeriesInstanceUID"]), _plain(item["PatientID"])
            )
            self._drop_overflow([item])

    def list_instances(
        self, study_instance_uid: str, series_instance_uid: str | None = None, *, with_metadata: bool = True
    ) -> Iterator[InstanceRecord]:
        prefix = _series_sk(series_instance_uid) + "#INSTANCE#" if series_instance_uid else "SERIES#"
        projection = () if with_metadata else _INSTANCE_FIELDS
        for item in self._query(_study_pk(study_instance_uid), prefix, projection=projection):
            if "SOPInstanceUID" in item:  # series items share the prefix
                yield self._instance(item) if with_metadata else InstanceRecord(**_fields(item, _INSTANCE_FIELDS))

    # -- levels --------------------------------------------------------------------------------

    def get_study(self, study_instance_uid: str) -> DicomJson | None:
        return self._metadata(_study_pk(study_instance_uid), _STUDY_SK)

    def get_series(self, study_instance_uid: str, series_instance_uid: str) -> DicomJson | None:
        return self._metadata(_study_pk(study_instance_uid), _series_sk(series_instance_uid))

    def get_patient(self, patient_id: str) -> DicomJson | None:
        return self._metadata(_patient_pk(patient_id), _PATIENT_SK)

    # -- quarantine and replacements -----------------------------------------------------------

    def add_quarantine(self, record: QuarantineRecord) -> None:
        self._call(
            "put_item",
            f"cannot record quarantine {record.quarantine_id}",
            TableName=self.table_name,
            Item=_serialize({"pk": _QUARANTINE_PK, "sk": record.quarantine_id, **asdict(record)}),
        )

    def list_quarantine(self) -> list[QuarantineRecord]:
        return [QuarantineRecord(**_fields(item, _QUARANTINE_FIELDS)) for item in self._query(_QUARANTINE_PK)]

    def add_replacement(self, record: ReplacementRecord) -> None:
        sk = f"{record.replaced_at}#{record.SOPInstanceUID}"
        self._call(
            "put_item",
            f"cannot record replacement of {record.SOPInstanceUID}",
            TableName=self.table_name,
            Item=_serialize({"pk": _REPLACED_PK, "sk": sk, **asdict(record)}),
        )

    def list_replacements(self) -> list[ReplacementRecord]:
        return [ReplacementRecord(**_fields(item, _REPLACEMENT_FIELDS)) for item in self._query(_REPLACED_PK)]

    # -- primitives ----------------------------------------------------------------------------

    # -- oversized instance metadata -------------------------------------------------------------

    def _instance_metadata(self, record: InstanceRecord) -> dict[str, Any]:
        """The item attribute holding the metadata: inline, or the key of the overflow object."""
        data = _gzip(record.metadata)
        if len(data) <= MAX_METADATA_BYTES:
            return {"metadata": data}
        if self.overflow is None:
            raise BackendError(
                f"metadata of SOP Instance {record.SOPInstanceUID} too large for the catalog: {len(data)} bytes "
                f"compressed, the limit is {MAX_METADATA_BYTES} (DynamoDB items are at most 400 KB) and no "
                "overflow store is configured"
            )
        key = catalog_metadata_key(record.SOPInstanceUID, hashlib.sha256(data).hexdigest())
        self.overflow.put(key, data)
        return {"metadata_key": key}

    def _instance(self, item: Mapping[str, Any]) -> InstanceRecord:
        if "metadata" in item:
            metadata = _decompress(item["metadata"])
        else:
            key = _plain(item["metadata_key"])
            if self.overflow is None:
                raise BackendError(f"catalog metadata is kept in {key} and no overflow store is configured")
            try:
                with self.overflow.open(key) as stream:
                    metadata = _decompress(stream.read())
            except NotFound as exc:
                raise BackendError(f"catalog metadata object {key} is missing") from exc
        return InstanceRecord(**_fields(item, _INSTANCE_FIELDS), metadata=metadata)

    def _drop_overflow(self, items: list[dict[str, Any] | None], keep: str | None = None) -> None:
        """Delete the overflow objects that ``items`` (no longer in the table) pointed to, but ``keep``."""
        if self.overflow is None:
            return
        for item in items:
            key = _plain(item["metadata_key"]) if item is not None and "metadata_key" in item else None
            if key is not None and key != keep:
                self.overflow.delete(key)

    def _put(self, item: dict[str, Any]) -> dict[str, Any]:
        return {"Put": {"TableName": self.table_name, "Item": _serialize(item)}}

    def _locations(self, sop_instance_uid: str) -> list[tuple[str, str]]:
        """Keys of the instance items of one SOP Instance UID (GSI: eventually consistent)."""
        paginator = self.client.get_paginator("query")
        try:
            return [
                (item["pk"]["S"], item["sk"]["S"])
                for page in paginator.paginate(
                    TableName=self.table_name,
                    IndexName=SOP_INDEX,
                    KeyConditionExpression="SOPInstanceUID = :sop",
                    ExpressionAttributeValues={":sop": {"S": sop_instance_uid}},
                )
                for item in page.get("Items", ())
            ]
        except (ClientError, BotoCoreError) as exc:
            raise _backend_error(exc, f"cannot look up SOP Instance {sop_instance_uid}") from exc

    def _get_item(self, location: tuple[str, str], projection: tuple[str, ...] = ()) -> dict[str, Any] | None:
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": _key(*location),
            "ConsistentRead": True,
            **_projection(projection),
        }
        response = self._call("get_item", f"cannot read catalog item {location[0]} {location[1]}", **kwargs)
        item = response.get("Item")
        return _deserialize(item) if item else None

    def _query(
        self,
        pk: str,
        prefix: str | None = None,
        *,
        projection: tuple[str, ...] = (),
        page_size: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Items of one partition (optionally ``begins_with(sk, prefix)``), strongly consistent, in sk order."""
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "ConsistentRead": True,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": pk}},
        }
        if prefix is not None:
            kwargs["KeyConditionExpression"] += " AND begins_with(sk, :prefix)"
            kwargs["ExpressionAttributeValues"][":prefix"] = {"S": prefix}
        kwargs.update(_projection(projection))
        if page_size:
            kwargs["Limit"] = page_size
        paginator = self.client.get_paginator("query")
        try:
            for page in paginator.paginate(**kwargs):
                for item in page.get("Items", ()):
                    yield _deserialize(item)
        except (ClientError, BotoCoreError) as exc:
            raise _backend_error(exc, f"cannot query catalog partition {pk}") from exc

    def _metadata(self, pk: str, sk: str) -> DicomJson | None:
        item = self._get_item((pk, sk))
        return _decompress(item["metadata"]) if item is not None else None

    def _call(self, operation: str, message: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response: dict[str, Any] = getattr(self.client, operation)(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise _backend_error(exc, message) from exc
        return response

    def _transact(self, writes: list[dict[str, Any]], message: str) -> None:
        for attempt in range(TRANSACTION_ATTEMPTS):
            try:
                self.client.transact_write_items(TransactItems=writes)
                return
            except ClientError as exc:
                if not _is_transaction_conflict(exc) or attempt == TRANSACTION_ATTEMPTS - 1:
                    raise _backend_error(exc, message) from exc
            except BotoCoreError as exc:
                raise _backend_error(exc, message) from exc
            # Full jitter: 0-50 ms, 0-100 ms, ... 0-800 ms.
            self._sleep(random.uniform(0, 0.05 * 2**attempt))

    # -- removing levels no instance refers to -------------------------------------------------

    def _prune(self, study: str, series: str, patient_id: str) -> None:
        pk = _study_pk(study)
        self._delete_unused((pk, _series_sk(series)), lambda: self._has_instance(study, series=series))
        self._delete_unused((pk, _STUDY_SK), lambda: self._has_instance(study))
        patient_pk = _patient_pk(patient_id)
        self._delete_unused(
            (patient_pk, _link_sk(study)), lambda: self._has_instance(study, patient_id=patient_id)
        )
        self._delete_unused(
            (patient_pk, _PATIENT_SK),
            lambda: (
                next(self._query(patient_pk, "STUDY#", projection=("sk",), page_size=1), None) is not None
            ),
        )

    def _delete_unused(self, location: tuple[str, str], in_use: Callable[[], bool]) -> None:
        """Delete a level item unless something refers to it or it was rewritten since the check began."""
        item = self._get_item(location, projection=("gen",))
        if item is None or in_use():
            return
        try:
            self.client.delete_item(
                TableName=self.table_name,
                Key=_key(*location),
                ConditionExpression="#gen = :gen",
                ExpressionAttributeNames={"#gen": "gen"},
                ExpressionAttributeValues={":gen": {"S": _plain(item["gen"])}},
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise _backend_error(exc, f"cannot delete catalog item {location[0]} {location[1]}") from exc
        except BotoCoreError as exc:
            raise _backend_error(exc, f"cannot delete catalog item {location[0]} {location[1]}") from exc

    def _has_instance(self, study: str, *, series: str | None = None, patient_id: str | None = None) -> bool:
        prefix = _instance_sk(series, "") if series else "SERIES#"
        items = self._query(
            _study_pk(study), prefix, projection=("sk", "SOPInstanceUID", "PatientID"), page_size=100
        )
        return any(
            "SOPInstanceUID" in item and (patient_id is None or item.get("PatientID") == patient_id)
            for item in items
        )


@dataclass
class _PlannedPut:
    position: int
    entry: CatalogEntry
    instance: dict[str, Any]
    levels: list[dict[str, Any]]
    stale_items: list[dict[str, Any]]
    replaced: list[dict[str, Any] | None]

    def size(self) -> int:
        """Bytes this entry adds to a transaction, roughly (binary metadata dominates)."""
        items = [self.instance, *self.levels]
        return sum(len(_plain(item.get("metadata", b""))) + 1_024 for item in items)


def _transaction_chunks(planned: list[_PlannedPut]) -> Iterator[list[_PlannedPut]]:
    """Groups of planned puts within one transaction's limits: at most :data:`TRANSACTION_ITEMS` items
    (instances, deletions and distinct level items) and :data:`TRANSACTION_BYTES`, and one SOP
    Instance UID at most once (a transaction may not touch an item twice)."""
    chunk: list[_PlannedPut] = []
    level_keys: set[tuple[str, str]] = set()
    sops: set[str] = set()
    items = size = 0
    for put in planned:
        levels = {(item["pk"], item["sk"]) for item in put.levels}
        put_size, sop = put.size(), put.entry.record.SOPInstanceUID
        adds = 1 + len(put.stale_items) + len(levels - level_keys)
        if chunk and (items + adds > TRANSACTION_ITEMS or size + put_size > TRANSACTION_BYTES or sop in sops):
            yield chunk
            chunk, level_keys, sops, items, size = [], set(), set(), 0, 0
            adds = 1 + len(put.stale_items) + len(levels)
        chunk.append(put)
        level_keys |= levels
        sops.add(sop)
        items += adds
        size += put_size
    if chunk:
        yield chunk


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def _projection(names: tuple[str, ...]) -> dict[str, Any]:
    """Request arguments fetching only ``names`` (placeholders, since ``size``, ``key`` ... are reserved words)."""
    if not names:
        return {}
    return {
        "ProjectionExpression": ", ".join(f"#p{i}" for i in range(len(names))),
        "ExpressionAttributeNames": {f"#p{i}": name for i, name in enumerate(names)},
    }


def _serialize(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _serializer.serialize(value) for name, value in item.items()}


def _deserialize(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _deserializer.deserialize(value) for name, value in item.items()}


def _plain(value: Any) -> Any:
    """A deserialized value as plain Python: Numbers back to exact ints, Binary to bytes."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else value
    if isinstance(value, Binary):
        return value.value
    return value


def _fields(item: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {name: _plain(item[name]) for name in names}


def _gzip(metadata: DicomJson) -> bytes:
    return gzip.compress(json.dumps(metadata, separators=(",", ":")).encode(), compresslevel=6, mtime=0)


def _compress(metadata: DicomJson, what: str) -> bytes:
    data = _gzip(metadata)
    if len(data) > MAX_METADATA_BYTES:
        raise BackendError(
            f"{what} too large for the catalog: {len(data)} bytes compressed, "
            f"the limit is {MAX_METADATA_BYTES} (DynamoDB items are at most 400 KB)"
        )
    return data


def _decompress(value: Any) -> DicomJson:
    metadata: DicomJson = json.loads(gzip.decompress(_plain(value)))
    return metadata


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _is_transaction_conflict(exc: ClientError) -> bool:
    if _code(exc) == "TransactionConflictException":
        return True
    if _code(exc) != "TransactionCanceledException":
        return False
    reasons = exc.response.get("CancellationReasons") or []
    return any(reason.get("Code") == "TransactionConflict" for reason in reasons)


def _backend_error(exc: ClientError | BotoCoreError, message: str) -> BackendError:
    detail = _code(exc) if isinstance(exc, ClientError) else type(exc).__name__
    return BackendError(f"{message}: {detail}")
