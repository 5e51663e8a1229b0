"""The delete service: remove a study, a series or one instance from the archive (what the DICOMweb
``DELETE`` routes call).

Each instance goes through four steps, in this order, before the next instance starts:

1. its QueryIndex entry, so that QIDO-RS and C-FIND stop showing it first (an instance that cannot be
   found can no longer be asked for);
2. its Catalog record, so that WADO-RS, C-MOVE and C-GET stop retrieving it (the catalog prunes the
   series, study and patient records it leaves empty);
3. its object in the ObjectStore;
4. an ``InstanceDeleted`` event, whose detail carries UIDs and the key only, never patient data.

Every step is idempotent, so a request that failed half-way (a backend error, a crash) is simply sent
again. The catalog is the source of truth for *which* instances to delete, but a retry after a failure
between steps 2 and 3 would find no record left: so after the catalog's instances, the objects still
under the study's, series' or instance's key prefix (``skypacs.keys``) are deleted as well, and
announced. The one window a retry cannot repair is between steps 3 and 4: if the event bus refuses the
event after the object is gone, the request fails (503) and that instance's event is lost; plugins that
must never miss a deletion can reconcile against the catalog.

Nothing that matches is :class:`~skypacs.errors.NotFound` (a second identical DELETE is a 404). A store
racing a delete of the same study may leave the new instance in place or delete it: whichever finishes
last wins, as for any two writers of one key.

On AWS the bucket is versioned (``infra/constructs/storage.py``): an S3 delete leaves a delete marker,
and the bytes stay recoverable as a noncurrent version until the bucket's lifecycle rule expires
noncurrent versions: 365 days by default (``DEFAULT_NONCURRENT_RETENTION_DAYS``, and
``noncurrentRetentionDays`` in ``cdk.json``; set it with ``cdk deploy -c noncurrentRetentionDays=N``),
moved to Standard-IA after 30 days when kept longer than that. Until then a deleted instance can be
restored by removing its delete marker (its catalog and index entries come back when it is ingested
again). The embedded filesystem store keeps nothing: a deleted object is gone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from skypacs.errors import InvalidQuery, NotFound
from skypacs.keys import INSTANCE_SUFFIX, STUDIES_PREFIX, instance_key, is_instance_key
from skypacs.ports import (
    INSTANCE_DELETED,
    ArchiveEvent,
    Catalog,
    EventBus,
    InstanceRecord,
    ObjectStore,
    QueryIndex,
)
from skypacs.uids import is_valid_uid

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeleteSummary:
    """What one delete removed: the level asked for, its UIDs, and the instances deleted."""

    StudyInstanceUID: str
    SeriesInstanceUID: str | None
    SOPInstanceUID: str | None
    SOPInstanceUIDs: tuple[str, ...]

    @property
    def instances(self) -> int:
        return len(self.SOPInstanceUIDs)


class DeleteService:
    def __init__(self, catalog: Catalog, store: ObjectStore, index: QueryIndex | None,
                 events: EventBus | None) -> None:
        self.catalog, self.store, self.index, self.events = catalog, store, index, events

    def delete_study(self, study_instance_uid: str) -> DeleteSummary:
        _check(("StudyInstanceUID", study_instance_uid))
        records = self.catalog.list_instances(study_instance_uid, with_metadata=False)
        return self._delete(study_instance_uid, None, None, list(records), _study_prefix(study_instance_uid))

    def delete_series(self, study_instance_uid: str, series_instance_uid: str) -> DeleteSummary:
        _check(("StudyInstanceUID", study_instance_uid), ("SeriesInstanceUID", series_instance_uid))
        records = self.catalog.list_instances(study_instance_uid, series_instance_uid, with_metadata=False)
        prefix = _series_prefix(study_instance_uid, series_instance_uid)
        return self._delete(study_instance_uid, series_instance_uid, None, list(records), prefix)

    def delete_instance(self, study_instance_uid: str, series_instance_uid: str,
                        sop_instance_uid: str) -> DeleteSummary:
        _check(("StudyInstanceUID", study_instance_uid), ("SeriesInstanceUID", series_instance_uid),
               ("SOPInstanceUID", sop_instance_uid))
        record = self.catalog.get_instance(sop_instance_uid)
        # An instance of the same SOP Instance UID filed under another study or series is not this one.
        records = [record] if (record is not None and record.StudyInstanceUID == study_instance_uid
                               and record.SeriesInstanceUID == series_instance_uid) else []
        key = instance_key(study_instance_uid, series_instance_uid, sop_instance_uid)
        return self._delete(study_instance_uid, series_instance_uid, sop_instance_uid, records, key)

    # --- the steps ------------------------------------------------------------------------------------

    def _delete(self, study: str, series: str | None, sop: str | None, records: list[InstanceRecord],
                prefix: str) -> DeleteSummary:
        deleted: list[str] = []
        for record in records:
            self._delete_record(record)
            deleted.append(record.SOPInstanceUID)
        # Objects whose records an earlier, interrupted delete already removed (see the module doc).
        for key in self._leftover_keys(prefix):
            leftover = _uids_of(key)
            if leftover is None:
                continue
            late = self.catalog.get_instance(leftover[2])
            if late is not None and late.key == key:
                self._delete_record(late)  # ingested since the listing: delete it the whole way
            else:
                self.store.delete(key)
                self._announce(*leftover, key, sop_class_uid=None)
                logger.info("deleted object %s that no catalog record describes", key)
            deleted.append(leftover[2])
        what = (f"instance {sop}" if sop else f"series {series}" if series else f"study {study}")
        if not deleted:
            raise NotFound(f"no such {what}")
        logger.info("deleted %s: %d instances", what, len(deleted))
        return DeleteSummary(study, series, sop, tuple(deleted))

    def _delete_record(self, record: InstanceRecord) -> None:
        if self.index is not None:
            self.index.remove_instance(record.SOPInstanceUID)
        self.catalog.delete_instance(record.SOPInstanceUID)
        self.store.delete(record.key)
        self._announce(record.StudyInstanceUID, record.SeriesInstanceUID, record.SOPInstanceUID, record.key,
                       sop_class_uid=record.SOPClassUID)
        logger.debug("deleted instance %s (series %s, study %s)", record.SOPInstanceUID,
                     record.SeriesInstanceUID, record.StudyInstanceUID)

    def _leftover_keys(self, prefix: str) -> list[str]:
        if prefix.endswith(INSTANCE_SUFFIX):
            try:
                self.store.head(prefix)
            except NotFound:
                return []
            return [prefix]
        return [info.key for info in self.store.list(prefix)]

    def _announce(self, study: str, series: str, sop: str, key: str, *, sop_class_uid: str | None) -> None:
        if self.events is None:
            return
        self.events.publish(ArchiveEvent(INSTANCE_DELETED, {
            "StudyInstanceUID": study,
            "SeriesInstanceUID": series,
            "SOPInstanceUID": sop,
            "SOPClassUID": sop_class_uid,
            "key": key,
        }))


def _check(*uids: tuple[str, str]) -> None:
    """UIDs become key prefixes: anything but a valid UID (PS3.5 9.1) could name other objects."""
    for keyword, value in uids:
        if not is_valid_uid(value):
            raise InvalidQuery(f"{keyword} is not a valid UID (PS3.5 9.1)")


def _study_prefix(study: str) -> str:
    return f"{STUDIES_PREFIX}{study}/"


def _series_prefix(study: str, series: str) -> str:
    return f"{STUDIES_PREFIX}{study}/series/{series}/"


def _uids_of(key: str) -> tuple[str, str, str] | None:
    """(study, series, SOP instance) of a key shaped by :func:`skypacs.keys.instance_key`."""
    if not is_instance_key(key):
        return None
    parts = key.split("/")
    return parts[1], parts[3], parts[5][: -len(INSTANCE_SUFFIX)]


__all__ = ["DeleteService", "DeleteSummary"]
