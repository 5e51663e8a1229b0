"""The four ports of the archive (DESIGN.md "Ports and adapters") and the records they carry.

Each port is a small ``Protocol``: adapters implement only these primitives; the logic built on top of
them lives in ``skypacs.services``. Every adapter of a port passes the same contract suite under
``tests/contract/``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, runtime_checkable

if TYPE_CHECKING:
    from skypacs.query.matcher import SearchPage
    from skypacs.query.model import Query

DicomJson = dict[str, Any]
"""A dataset in the DICOM JSON model (PS3.18 Annex F): ``{"0020000D": {"vr": "UI", "Value": [...]}}``."""


@dataclass(frozen=True)
class ObjectInfo:
    """What an ObjectStore knows of one stored object.

    ``etag`` is a content fingerprint with S3's single-part ETag semantics: the MD5 hex digest of the
    bytes. Equal bytes give equal etags in every adapter; ingest uses it to tell a re-send of the same
    instance from a new version. (S3 multipart uploads have composite ETags; the archive's own writers
    never use multipart below 5 GB.)
    """

    key: str
    size: int
    etag: str


@runtime_checkable
class ObjectStore(Protocol):
    """DICOM Part 10 bytes by key. Writes are atomic: a reader sees the old object or the whole new one."""

    def put(self, key: str, data: bytes | BinaryIO) -> ObjectInfo: ...

    def open(self, key: str) -> BinaryIO:
        """A stream over the whole object, read as it is consumed (bounded memory)."""
        ...

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``start``; fewer only at the end of the object."""
        ...

    def head(self, key: str) -> ObjectInfo: ...

    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error (idempotent retries)."""
        ...

    def move(self, source_key: str, target_key: str) -> ObjectInfo: ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...


@dataclass(frozen=True)
class InstanceRecord:
    """The catalog's record of one stored instance: where it is and what it is.

    ``metadata`` is the instance's DICOM JSON without bulk data (Pixel Data and large binary values are
    left in the object and marked with a BulkDataURI).
    """

    StudyInstanceUID: str
    SeriesInstanceUID: str
    SOPInstanceUID: str
    SOPClassUID: str
    TransferSyntaxUID: str
    PatientID: str
    key: str
    size: int
    etag: str
    stored_at: str
    metadata: DicomJson = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class QuarantineRecord:
    """An object that could not be ingested, kept under ``quarantine/`` with the reason."""

    quarantine_id: str
    original_key: str
    quarantine_key: str
    reason: str
    message: str
    size: int
    quarantined_at: str


@dataclass(frozen=True)
class ReplacementRecord:
    """An instance stored again with different bytes: the new version replaced the old one."""

    SOPInstanceUID: str
    previous_key: str
    previous_etag: str
    key: str
    etag: str
    replaced_at: str


@dataclass(frozen=True)
class CatalogEntry:
    """One instance to catalog with the series, study and patient records it belongs to."""

    record: InstanceRecord
    series: DicomJson
    study: DicomJson
    patient: DicomJson


@runtime_checkable
class Catalog(Protocol):
    """Source of truth for what is stored: patient/study/series/instance records and their objects."""

    def get_instance(self, sop_instance_uid: str) -> InstanceRecord | None: ...

    def put_instance(
        self,
        record: InstanceRecord,
        *,
        series: DicomJson,
        study: DicomJson,
        patient: DicomJson,
    ) -> None:
        """Upsert the instance and the series, study and patient records it belongs to."""
        ...

    def put_instances(self, entries: Sequence[CatalogEntry]) -> dict[int, Exception]:
        """``put_instance`` for a batch (the indexer's), writing records shared by several entries (a
        series' levels) once: the failures by position, empty when all were written. A failed write
        may fail the other entries written with it; each failed entry can be put again."""
        ...

    def delete_instance(self, sop_instance_uid: str) -> None: ...

    def list_instances(
        self, study_instance_uid: str, series_instance_uid: str | None = None, *, with_metadata: bool = True
    ) -> Iterator[InstanceRecord]:
        """Instances in series then SOP Instance UID order. ``with_metadata=False`` leaves ``metadata``
        empty: retrieval needs only keys and sizes, and decoding every record's metadata would cost
        more than the listing itself (0.4 s and 66 MB for a 2,000-instance study)."""
        ...

    def get_study(self, study_instance_uid: str) -> DicomJson | None: ...

    def get_series(self, study_instance_uid: str, series_instance_uid: str) -> DicomJson | None: ...

    def get_patient(self, patient_id: str) -> DicomJson | None: ...

    def add_quarantine(self, record: QuarantineRecord) -> None: ...

    def list_quarantine(self) -> list[QuarantineRecord]: ...

    def add_replacement(self, record: ReplacementRecord) -> None: ...

    def list_replacements(self) -> list[ReplacementRecord]: ...


@runtime_checkable
class QueryIndex(Protocol):
    """Attribute matching and free text over every attribute (query semantics: ``skypacs.query``)."""

    def index_instance(self, record: InstanceRecord) -> None: ...

    def index_instances(self, records: Sequence[InstanceRecord]) -> None:
        """Index a batch, rebuilding each series, study and patient it touches once (ingest batches,
        re-index): all or nothing is not promised, but a retry of the whole batch repairs any part."""
        ...

    def remove_instance(self, sop_instance_uid: str) -> None: ...

    def get_document(self, sop_instance_uid: str) -> DicomJson | None: ...

    def search(self, query: Query) -> SearchPage:
        """The matching patients/studies/series/instances, exactly as the reference matcher answers."""
        ...


@dataclass(frozen=True)
class ArchiveEvent:
    """An event for plugins. ``detail`` holds UIDs, keys and outcomes, never patient data."""

    type: str
    detail: dict[str, Any]


INSTANCE_STORED = "InstanceStored"
INSTANCE_DELETED = "InstanceDeleted"
STUDY_CHANGED = "StudyChanged"

EventHandler = Callable[[ArchiveEvent], None]


@runtime_checkable
class EventBus(Protocol):
    def publish(self, event: ArchiveEvent) -> None: ...

    def publish_many(self, events: Sequence[ArchiveEvent]) -> dict[int, Exception]:
        """Publish a batch (the indexer's), in as few calls as the bus allows: the failures by position,
        empty when every event went out. A failed event can be published again."""
        ...
