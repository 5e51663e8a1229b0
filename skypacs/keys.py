"""Object keys, the one naming scheme shared by every ObjectStore (DESIGN.md "Keys").

Keys are built only from UIDs, which ``skypacs.uids`` has validated (digits and dots), so a key can
never escape its prefix on a filesystem or collide across studies.
"""

from __future__ import annotations

STUDIES_PREFIX = "studies/"
QUARANTINE_PREFIX = "quarantine/"
INCOMING_PREFIX = "incoming/"
"""Objects not yet filed under their canonical key: uploads, and rejected C-STOREs awaiting quarantine."""
INSTANCE_SUFFIX = ".dcm"
CATALOG_METADATA_PREFIX = "catalog/metadata/"
"""Instance metadata too large for a catalog item (DynamoDB's 400 KB), kept beside the objects. Not under
``studies/`` or ``incoming/``: writing here must not notify the indexer."""


def instance_key(study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str) -> str:
    return (
        f"{STUDIES_PREFIX}{study_instance_uid}/series/{series_instance_uid}"
        f"/instances/{sop_instance_uid}{INSTANCE_SUFFIX}"
    )


def is_instance_key(key: str) -> bool:
    """True for keys under ``studies/`` shaped like :func:`instance_key` output."""
    parts = key.split("/")
    return (
        len(parts) == 6
        and parts[0] + "/" == STUDIES_PREFIX
        and parts[2] == "series"
        and parts[4] == "instances"
        and parts[5].endswith(INSTANCE_SUFFIX)
    )


def quarantine_key(original_key: str, quarantine_id: str) -> str:
    """Where a rejected object is kept: one folder per quarantine event, original name preserved.

    ``quarantine_id`` is unique per event (time-ordered), so quarantining the same key twice never
    overwrites the first rejected copy.
    """
    name = original_key.rsplit("/", 1)[-1] or "object"
    return f"{QUARANTINE_PREFIX}{quarantine_id}/{name}"


def incoming_key(name: str) -> str:
    return f"{INCOMING_PREFIX}{name}{INSTANCE_SUFFIX}"


def catalog_metadata_key(sop_instance_uid: str, digest: str) -> str:
    """Where oversized catalog metadata of one instance version lives: named by its content, so that a
    new version never overwrites what the current catalog item still points to."""
    return f"{CATALOG_METADATA_PREFIX}{sop_instance_uid}/{digest}.json.gz"
