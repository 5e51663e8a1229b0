"""Accept a whole DICOM Part 10 object from an edge (C-STORE, import, STOW) and put it in the store.

The edge gets an answer as soon as the bytes are durable; indexing follows asynchronously from the
ObjectStore's notification (S3 -> SQS on AWS, the ingest queue in embedded mode), which is what lets a
burst of C-STOREs run at network speed. Validation happens here too, so that the sender learns at once
that an object is unacceptable; the rejected bytes are quarantined with the reason: nothing a sender gave us is lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from skypacs.errors import InvalidObject
from skypacs.parsing import InstanceIdentity, identify_bytes
from skypacs.ports import ObjectInfo, ObjectStore
from skypacs.services.quarantine import Quarantine
from skypacs.uids import is_valid_uid


class IngestNotifier(Protocol):
    """Records that a key is about to be written and must be ingested (embedded mode's queue).

    ``enqueue`` is called before the write, so that a crash between the write and ingest leaves the
    key queued, and ``ready`` after it; the queue's consumer tolerates keys whose write never
    completed. On AWS the store itself notifies.
    """

    def enqueue(self, key: str) -> int: ...

    def ready(self, entry_id: int, info: ObjectInfo) -> None:
        """The write of the entry's object completed, with this size and etag."""
        ...


@dataclass(frozen=True)
class StoreReceipt:
    identity: InstanceIdentity
    info: ObjectInfo
    queue_id: int | None = None
    """The notifier's entry for this object, for a writer that ingests inline and acks it."""


class StoreService:
    def __init__(
        self,
        store: ObjectStore,
        *,
        quarantine: Quarantine,
        notifier: IngestNotifier | None = None,
        extra_sop_classes: frozenset[str] = frozenset(),
    ) -> None:
        self.store = store
        self.quarantine = quarantine
        self.notifier = notifier
        self.extra_sop_classes = extra_sop_classes

    def store_part10(
        self,
        data: bytes,
        *,
        expected_sop_class: str = "",
        expected_sop_instance: str = "",
    ) -> StoreReceipt:
        """Validate and durably store one Part 10 object; raise :class:`InvalidObject` if refused."""
        parsed = self.validate(
            data, expected_sop_class=expected_sop_class, expected_sop_instance=expected_sop_instance
        )
        return self.commit(parsed, data)

    def validate(
        self,
        data: bytes,
        *,
        expected_sop_class: str = "",
        expected_sop_instance: str = "",
    ) -> InstanceIdentity:
        """Check an object before anything is written.

        ``expected_*`` are what the sender announced (C-STORE Affected SOP Class/Instance UID); a
        dataset that contradicts them is refused (PS3.4 B.2.3: 0xA900 for the class). Refused bytes
        are quarantined.
        """
        try:
            identity = identify_bytes(data, extra_sop_classes=self.extra_sop_classes)
            _check_expected(identity, expected_sop_class, expected_sop_instance)
        except InvalidObject as exc:
            name = expected_sop_instance if is_valid_uid(expected_sop_instance) else "object"
            self.quarantine.keep(data, f"{name}.dcm", exc.reason, str(exc))
            raise
        return identity

    def commit(self, identity: InstanceIdentity, data: bytes) -> StoreReceipt:
        """Queue the object for ingest, then write it (see :class:`IngestNotifier` for the order)."""
        if self.notifier is None:
            return StoreReceipt(identity, self.store.put(identity.key, data))
        queue_id = self.notifier.enqueue(identity.key)
        info = self.store.put(identity.key, data)
        self.notifier.ready(queue_id, info)
        return StoreReceipt(identity, info, queue_id)


def _check_expected(identity: InstanceIdentity, sop_class: str, sop_instance: str) -> None:
    if sop_class and sop_class != identity.SOPClassUID:
        raise InvalidObject(
            f"dataset SOPClassUID {identity.SOPClassUID} differs from the announced {sop_class}",
            reason="sop-class-mismatch",
        )
    if sop_instance and sop_instance != identity.SOPInstanceUID:
        raise InvalidObject(
            f"dataset SOPInstanceUID {identity.SOPInstanceUID} differs from the announced {sop_instance}",
            reason="uid-mismatch",
        )
