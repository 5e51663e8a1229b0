"""The C-FIND SCP of the Patient Root and Study Root Query/Retrieve models (PS3.4 C.4.1, C.6).

A thin edge: the Identifier becomes a :class:`~skypacs.query.model.Query`
(:func:`~skypacs.query.identifier.query_from_identifier`), the query service answers it, and each
match goes back as one Pending response holding the keys the SCU asked for. Failures are statuses,
never exceptions; logs name the calling AE, the level and counts, never a key's value.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom import events
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from skypacs.audit import dimse_outcome
from skypacs.dimse.handlers import audit_dimse, not_authorized
from skypacs.dimse.permissions import Permissions
from skypacs.dimse.status import Status, status_dataset, status_for
from skypacs.errors import SkyPacsError
from skypacs.ports import DicomJson
from skypacs.query.identifier import AMBIGUOUS_VRS, query_from_identifier
from skypacs.query.model import InformationModel, Level
from skypacs.services.query import QueryService

logger = logging.getLogger(__name__)

FIND_SOP_CLASSES: dict[str, InformationModel] = {
    str(PatientRootQueryRetrieveInformationModelFind): InformationModel.PATIENT_ROOT,
    str(StudyRootQueryRetrieveInformationModelFind): InformationModel.STUDY_ROOT,
}

RESPONSE_CHARACTER_SET = "ISO_IR 192"
"""Answers are Unicode (DICOM JSON), so they go out as UTF-8 whatever the SCU's own character set."""

SET_BY_SCP = frozenset({"00080005", "00080052", "00080054"})
"""SpecificCharacterSet, QueryRetrieveLevel and RetrieveAETitle: filled in by the SCP, not the match."""

FindResponse = tuple[int | Dataset, Dataset | None]


def handle_find(
    event: events.Event, query_service: QueryService, ae_title: str | None = None,
    permissions: Permissions | None = None,
) -> Iterator[FindResponse]:
    """:func:`answer_find`, and one audit record before the final response (pynetdicom asks for nothing
    after it): the level, the key names (never their values), the matches sent and the final status.
    An AE not permitted to query gets 0x0124 and no matches."""
    matches = 0
    refusal = not_authorized(event, permissions, "find")
    answers: Iterator[FindResponse] = (
        iter([(refusal, None)]) if refusal is not None else answer_find(event, query_service, ae_title)
    )
    for answer, identifier in answers:
        status = int(answer.Status) if isinstance(answer, Dataset) else int(answer)
        if status in (Status.PENDING, 0xFF01):
            matches += 1
        else:
            _audit_find(event, status, matches)
        yield answer, identifier


def _audit_find(event: events.Event, status: int, matches: int) -> None:
    what: dict[str, object] = {"matches": matches}
    try:
        identifier = event.identifier
        what["level"] = str(identifier.get("QueryRetrieveLevel", ""))
        what["keys"] = sorted(element.keyword or f"{int(element.tag):08X}" for element in identifier
                              if element.keyword not in ("QueryRetrieveLevel", "SpecificCharacterSet"))
    except Exception:  # noqa: BLE001 - an undecodable Identifier was answered above; audit what is known
        logger.debug("C-FIND: the audit record names no keys: the Identifier cannot be decoded")
    status_hex, outcome = dimse_outcome(status)
    audit_dimse(event, "query", what, outcome, status_hex)


def answer_find(
    event: events.Event, query_service: QueryService, ae_title: str | None = None
) -> Iterator[FindResponse]:
    """Answer a C-FIND: one ``(0xFF00, identifier)`` per match, then ``(0x0000, None)``.

    A C-CANCEL stops the answers with ``0xFE00``, "matching terminated due to Cancel" (PS3.4
    C.4.1.3.1). An Identifier that is not a valid query in the model gets 0xA900 with an Error
    Comment; a failing backend 0xA700.
    """
    request = cast(C_FIND, event.request)
    calling = event.assoc.requestor.ae_title
    model = FIND_SOP_CLASSES.get(str(request.AffectedSOPClassUID or ""))
    if model is None:  # only the two FIND contexts are accepted, but a handler never trusts that
        yield status_dataset(Status.SOP_CLASS_NOT_SUPPORTED, "not a supported C-FIND model"), None
        return
    try:
        identifier = event.identifier
    except Exception:  # noqa: BLE001 - any decoding failure is the same answer to the SCU
        logger.warning("C-FIND from %s: cannot decode the Identifier", calling)
        yield status_dataset(Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, "cannot decode the Identifier"), None
        return
    try:
        query = query_from_identifier(identifier, model)
        result = query_service.search(query)
    except SkyPacsError as exc:
        status = status_for(exc)
        logger.warning("C-FIND from %s refused with 0x%04X: %s", calling, status, exc)
        yield status_dataset(status, str(exc)), None
        return
    except Exception as exc:  # never let an exception reach pynetdicom
        logger.exception("C-FIND from %s failed unexpectedly", calling)
        yield status_dataset(Status.OUT_OF_RESOURCES, f"query failed: {type(exc).__name__}"), None
        return
    retrieve_ae = ae_title if ae_title is not None else str(event.assoc.ae.ae_title)
    sent = 0
    for document in result.items:
        if event.is_cancelled:
            logger.info("C-FIND from %s cancelled after %d of %d matches", calling, sent, len(result.items))
            yield Status.CANCEL, None
            return
        try:
            response = response_identifier(document, identifier, query.level, retrieve_ae)
        except Exception as exc:
            logger.exception("C-FIND from %s: cannot encode a match", calling)
            comment = f"cannot encode a match: {type(exc).__name__}"
            yield status_dataset(Status.OUT_OF_RESOURCES, comment), None
            return
        sent += 1
        yield Status.PENDING, response
    logger.debug("C-FIND from %s at %s level: %d matches", calling, query.level.value, sent)
    yield Status.SUCCESS, None


def response_identifier(document: DicomJson, request: Dataset, level: Level, ae_title: str) -> Dataset:
    """The keys the SCU asked for (PS3.4 C.4.1.1.3.2), with the match's values; a key the match has
    no value for comes back empty. Sequences keep only the item keys asked for, unless the request's
    sequence was empty (then the whole sequence is returned)."""
    response = Dataset.from_json(_requested(document, request, top_level=True))
    response.SpecificCharacterSet = RESPONSE_CHARACTER_SET
    response.QueryRetrieveLevel = level.value
    if "RetrieveAETitle" in request:
        response.RetrieveAETitle = ae_title
    return response


def _requested(document: DicomJson, request: Dataset, *, top_level: bool = False) -> DicomJson:
    selected: DicomJson = {}
    for tag in request.keys():  # noqa: SIM118 - iterating a Dataset yields elements, not tags
        if tag.element == 0:
            continue
        key = f"{int(tag):08X}"
        if top_level and key in SET_BY_SCP:
            continue
        element = document.get(key)
        if element is None or "BulkDataURI" in element:  # bulk data is never a C-FIND answer
            selected[key] = {"vr": element["vr"] if element else _request_vr(request, tag)}
            continue
        if element.get("vr") == "SQ" and element.get("Value"):
            selected[key] = _sequence(element, request[tag].value)
            continue
        selected[key] = element
    return selected


def _sequence(element: dict[str, Any], requested_items: Any) -> dict[str, Any]:
    first = requested_items[0] if requested_items else None
    if first is None or len(first) == 0:
        return element
    return {"vr": "SQ", "Value": [_requested(item, first) for item in element["Value"]]}


def _request_vr(request: Dataset, tag: Any) -> str:
    vr = str(request[tag].VR)
    return AMBIGUOUS_VRS.get(vr, vr)


__all__ = ["FIND_SOP_CLASSES", "answer_find", "handle_find", "response_identifier"]
