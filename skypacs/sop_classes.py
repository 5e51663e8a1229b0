"""Which SOP classes are storage SOP classes (PS3.4 Annex B), from pynetdicom's registry.

pynetdicom keeps the standard's list current with each release; the gateway proposes exactly these
plus ``dimse.extra_sop_classes`` from configuration (private classes a site wants archived).
"""

from __future__ import annotations

from functools import lru_cache

from pynetdicom.sop_class import _STORAGE_CLASSES


@lru_cache(maxsize=1)
def storage_sop_classes() -> frozenset[str]:
    return frozenset(str(uid) for uid in _STORAGE_CLASSES.values())


def is_storage_sop_class(uid: str) -> bool:
    return uid in storage_sop_classes()
