"""Which stored instances a C-MOVE or C-GET asks for (PS3.4 C.4.2.1.4, C.4.3.1.3, C.6).

A retrieve Identifier is not a query: it names entities by their Unique Keys only. In the baseline
(hierarchical) behaviour the gateway offers (relational retrieve, C.4.2.2.2, is not negotiated), the
Identifier carries:

- the Query/Retrieve Level, one of the model's levels (PATIENT exists in the Patient Root model only);
- a single value for the Unique Key of every level above the retrieve level (Patient ID in the Patient
  Root model, then Study and Series Instance UIDs);
- the Unique Key of the retrieve level itself: one or more UIDs (List of UID Matching), or a single
  Patient ID at PATIENT level (PS3.4 C.4.2.1.4.1, note).

Other attributes (Specific Character Set, Timezone Offset, any key an SCU copies from its C-FIND) do
not narrow a retrieve and are ignored, except a value in the Unique Key of a level *below* the retrieve
level: the SCU meant something narrower than the level says, and sending the whole study for a
series would deliver more than was asked, so that is refused too.

Selection reads the Catalog, the source of truth for what is stored; only PATIENT level needs the query
index, to find a patient's studies. Within Patient Root, instances recorded under another Patient ID
than the one asked for are not sent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from skypacs.errors import BackendError, InvalidQuery
from skypacs.model import tag_hex
from skypacs.ports import Catalog, InstanceRecord
from skypacs.query.identifier import FIND_LIMIT, LEVELS, UNIQUE_KEYS
from skypacs.query.model import AttributeMatch, InformationModel, Level, Query
from skypacs.services.query import QueryService
from skypacs.uids import is_valid_uid

logger = logging.getLogger(__name__)

IMAGE_LOOKUP_LIMIT = 16
"""At IMAGE level, up to this many SOP Instance UIDs are looked up one by one; more are picked from a
listing of their series (one catalog query instead of hundreds)."""

_STUDY_INSTANCE_UID = tag_hex("StudyInstanceUID")
_PATIENT_ID = tag_hex("PatientID")


@dataclass(frozen=True)
class RetrieveRequest:
    """A valid C-MOVE/C-GET Identifier: the level and the Unique Key values that name what to send.

    Keys above ``level`` hold exactly one value, the key of ``level`` one or more, keys below none.
    ``patient_id`` is set in the Patient Root model only (Study Root has no patient level).
    """

    model: InformationModel
    level: Level
    patient_id: str | None = None
    study_instance_uids: tuple[str, ...] = ()
    series_instance_uids: tuple[str, ...] = ()
    sop_instance_uids: tuple[str, ...] = ()


def retrieve_request_from_identifier(identifier: Dataset, model: InformationModel) -> RetrieveRequest:
    """The retrieve a C-MOVE/C-GET Identifier asks for in ``model``; :class:`InvalidQuery` (0xA900)
    when it is not a baseline retrieve of that model."""
    level = _level(identifier, model)
    levels = LEVELS[model]
    position = levels.index(level)
    values: dict[Level, tuple[str, ...]] = {}
    for index, each in enumerate(levels):
        keyword = UNIQUE_KEYS[each]
        found = _values(identifier, keyword)
        where = f"at {level.value} level ({model.value})"
        if index < position:
            if not found:
                raise InvalidQuery(f"{keyword} is required {where}")
            if len(found) > 1:
                raise InvalidQuery(f"{keyword} must be one value, not a list, {where}")
        elif index == position:
            if not found:
                raise InvalidQuery(f"{keyword} is required {where}")
            if each is Level.PATIENT and len(found) > 1:
                raise InvalidQuery(f"{keyword} must be one value, not a list, {where}")
        elif found:
            raise InvalidQuery(f"{keyword} names a level below the retrieve level {level.value}")
        for value in found:
            _check_value(keyword, value)
        values[each] = found
    patient = values.get(Level.PATIENT, ())
    return RetrieveRequest(
        model=model,
        level=level,
        patient_id=patient[0] if patient else None,
        study_instance_uids=_unique(values.get(Level.STUDY, ())),
        series_instance_uids=_unique(values.get(Level.SERIES, ())),
        sop_instance_uids=_unique(values.get(Level.IMAGE, ())),
    )


def _level(identifier: Dataset, model: InformationModel) -> Level:
    try:
        value: Any = identifier.get("QueryRetrieveLevel")
    except Exception as exc:
        raise InvalidQuery("cannot read QueryRetrieveLevel (0008,0052)") from exc
    if isinstance(value, MultiValue) or not value or not str(value).strip():
        raise InvalidQuery("the Identifier needs one QueryRetrieveLevel (0008,0052)")
    name = str(value).strip()
    allowed = [each.value for each in LEVELS[model]]
    if name not in allowed:
        raise InvalidQuery(f"QueryRetrieveLevel {name[:16]!r} is not one of {', '.join(allowed)} ({model.value})")
    return Level(name)


def _values(identifier: Dataset, keyword: str) -> tuple[str, ...]:
    try:
        value: Any = identifier.get(keyword)
    except Exception as exc:  # a value pydicom cannot decode
        raise InvalidQuery(f"cannot read the value of {keyword}") from exc
    if value is None:
        return ()
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    found = tuple(str(item).strip("\x00 ") for item in items)
    if all(not item for item in found):  # universal matching: no value
        return ()
    if any(not item for item in found):
        raise InvalidQuery(f"{keyword} has an empty value in its list")
    return found


def _check_value(keyword: str, value: str) -> None:
    if "*" in value or "?" in value:
        raise InvalidQuery(f"{keyword}: wildcards are not allowed in a retrieve")
    if keyword != "PatientID" and not is_valid_uid(value):
        raise InvalidQuery(f"{keyword} {value[:64]!r} is not a valid UID")


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def select_instances(
    request: RetrieveRequest, catalog: Catalog, query_service: QueryService | None = None
) -> list[InstanceRecord]:
    """The stored instances ``request`` names, each once, study by study in catalog order.

    Entities that are not stored are simply not matched (the retrieve succeeds with fewer, possibly
    zero, sub-operations). ``query_service`` is needed at PATIENT level only; without one that level
    raises :class:`BackendError`.

    The records come without their ``metadata``: sending needs only where each object is and what it
    is, and a study's metadata held all at once would cost ~100 KB per instance.
    """
    selected: dict[str, InstanceRecord] = {}
    for record in _matching(request, catalog, query_service):
        if request.patient_id is not None and record.PatientID != request.patient_id:
            continue
        if record.SOPInstanceUID not in selected:
            selected[record.SOPInstanceUID] = replace(record, metadata={})
    return list(selected.values())


def _matching(
    request: RetrieveRequest, catalog: Catalog, query_service: QueryService | None
) -> Iterator[InstanceRecord]:
    if request.level is Level.PATIENT:
        assert request.patient_id is not None
        for study in _patient_studies(request.patient_id, query_service):
            yield from catalog.list_instances(study, with_metadata=False)
    elif request.level is Level.STUDY:
        for study in request.study_instance_uids:
            yield from catalog.list_instances(study, with_metadata=False)
    elif request.level is Level.SERIES:
        (study,) = request.study_instance_uids
        for series in request.series_instance_uids:
            yield from catalog.list_instances(study, series, with_metadata=False)
    else:
        yield from _images(request, catalog)


def _images(request: RetrieveRequest, catalog: Catalog) -> Iterator[InstanceRecord]:
    (study,), (series,) = request.study_instance_uids, request.series_instance_uids
    wanted = request.sop_instance_uids
    if len(wanted) > IMAGE_LOOKUP_LIMIT:
        listed = {record.SOPInstanceUID: record
                  for record in catalog.list_instances(study, series, with_metadata=False)}
        records: Iterable[InstanceRecord | None] = (listed.get(sop) for sop in wanted)
    else:
        records = (catalog.get_instance(sop) for sop in wanted)
    for record in records:
        # Hierarchical retrieve: an instance stored under another study or series is not a match.
        if record is not None and record.StudyInstanceUID == study and record.SeriesInstanceUID == series:
            yield record


def _patient_studies(patient_id: str, query_service: QueryService | None) -> list[str]:
    """The patient's studies, from the query index (the catalog lists instances by study only)."""
    if query_service is None:
        raise BackendError("a PATIENT level retrieve needs the query index, which is not configured")
    query = Query(
        level=Level.STUDY,
        matches=(AttributeMatch(_PATIENT_ID, "LO", patient_id),),
        include=frozenset({_STUDY_INSTANCE_UID}),
        limit=FIND_LIMIT,
        model=InformationModel.PATIENT_ROOT,
    )
    studies = []
    for document in query_service.search(query).items:
        value = document.get(_STUDY_INSTANCE_UID, {}).get("Value") or []
        if value:
            studies.append(str(value[0]))
    logger.debug("PATIENT level retrieve: %d studies in the index", len(studies))
    return studies


__all__ = ["IMAGE_LOOKUP_LIMIT", "RetrieveRequest", "retrieve_request_from_identifier", "select_instances"]
