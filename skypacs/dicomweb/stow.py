"""STOW-RS: store instances sent as ``multipart/related; type="application/dicom"`` (PS3.18 10.5).

Each part is one DICOM Part 10 object, validated and stored through :class:`StoreService` as it
arrives (the body is read as a stream: :mod:`skypacs.dicomweb.multipart_reader`), exactly as a
C-STORE is: durable before the answer, indexed afterwards from the ingest queue, refused objects
quarantined with their reason so that nothing a sender gave us is lost. Storing an instance again
overwrites it with the same bytes, so a client may safely resend a request whose answer it lost.

The answer (PS3.18 10.5.3, Table 10.5.3-1) is 200 when every instance was stored, 202 when some were
and others failed, 409 when none was; its ``application/dicom+json`` body is the Store Instances
Response Module (PS3.18 Annex I): RetrieveURL (0008,1190) of the study, ReferencedSOPSequence
(0008,1199) for the stored instances, FailedSOPSequence (0008,1198) with a FailureReason (0008,1197)
for the others. The request itself is refused with 415 when its Content-Type is not the multipart
above, 400 when the body is not well-formed multipart, 413 when it is larger than ``max_body_bytes``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from functools import partial
from io import BytesIO
from typing import TYPE_CHECKING, Any

import pydicom

from skypacs.dicomweb.http import (
    DICOM_JSON,
    JSON,
    PayloadTooLarge,
    Request,
    Response,
    Route,
    UnsupportedMediaType,
    json_response,
    negotiate,
)
from skypacs.dicomweb.multipart_reader import BodyPart, MalformedMultipart, media_type, read_parts
from skypacs.errors import BackendError, InvalidObject, InvalidQuery, UnsupportedSOPClass
from skypacs.uids import is_valid_uid

if TYPE_CHECKING:
    from skypacs.parsing import InstanceIdentity
    from skypacs.services.store import StoreService

logger = logging.getLogger(__name__)

DICOM = "application/dicom"
MULTIPART_RELATED = "multipart/related"
DEFAULT_MAX_BODY_BYTES = 2 * 1024**3
"""2 GiB: a large study in one request; bigger uploads are split by clients anyway."""
SUPPORTED = f'{MULTIPART_RELATED}; type="{DICOM}"; boundary=...'
XML_NOTE = 'The XML response (application/dicom+xml) is not supported.'

RETRIEVE_URL = "00081190"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
FAILURE_REASON = "00081197"
REFERENCED_SOP_CLASS_UID = "00081150"
REFERENCED_SOP_INSTANCE_UID = "00081155"


class FailureReason(IntEnum):
    """Failure Reason (0008,1197) values, PS3.18 Annex I Table I.2-2 ("Store Instances Response Failure
    Reason Values"), which also allows further codes for other issues."""

    PROCESSING_FAILURE = 0x0110
    REFERENCED_SOP_CLASS_NOT_SUPPORTED = 0x0122
    OUT_OF_RESOURCES = 0xA700
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122
    STUDY_INSTANCE_UID_MISMATCH = 0xC409
    """Not in Table I.2-2 (which names no code for it, though Table 10.5.3-1 names the case): the value
    dcm4chee-arc answers (``DIFF_STUDY_INSTANCE_UID``), in the "cannot understand" range."""


@dataclass
class StoreReport:
    """What happened to each part, in order: the Store Instances Response Module's content."""

    stored: list[InstanceIdentity] = field(default_factory=list)
    failed: list[tuple[str, str, FailureReason]] = field(default_factory=list)
    """(SOPClassUID, SOPInstanceUID, reason); the UIDs are empty when they cannot be read."""

    @property
    def status(self) -> int:
        if not self.failed:
            return 200
        return 202 if self.stored else 409


def routes(store_service: StoreService, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> list[Route]:
    """``POST /studies`` and ``POST /studies/{study}``, bound to ``store_service``."""
    handler = partial(store_instances, store_service, max_body_bytes)
    return [
        Route("POST", "/studies", handler, "stow-studies"),
        Route("POST", "/studies/{study}", handler, "stow-study"),
    ]


def store_instances(
    service: StoreService, max_body_bytes: int, request: Request, params: Mapping[str, str]
) -> Response:
    study = params.get("study")
    if study is not None and not is_valid_uid(study):
        raise InvalidQuery(f"the path's StudyInstanceUID {study!r} is not a valid UID")
    answer_type = negotiate(request, {DICOM_JSON: DICOM_JSON, JSON: DICOM_JSON}, unsupported_note=XML_NOTE)
    boundary = _boundary(request.headers.get("Content-Type", ""))
    _check_length(request, max_body_bytes)
    report = StoreReport()
    parts = read_parts(_limited(_chunks(request.body), max_body_bytes), boundary)
    try:
        for number, part in enumerate(parts, start=1):
            _store_part(service, part, number, study, report)
    except MalformedMultipart as exc:
        if report.stored:
            # The instances before the damage are stored; a client resending the request is safe.
            logger.warning("STOW-RS: malformed body after %d stored instances", len(report.stored))
        raise MalformedMultipart(f"{exc} (after {len(report.stored)} stored instances)") from None
    if not report.stored and not report.failed:
        raise MalformedMultipart("the multipart body has no parts")
    logger.info("STOW-RS stored %d instances, %d failed", len(report.stored), len(report.failed))
    return json_response(response_module(report, request.base_url, study), status=report.status,
                         content_type=answer_type)


def _boundary(content_type: str) -> str:
    kind, params = media_type(content_type)
    root_type = media_type(params.get("type", DICOM))[0]
    if kind != MULTIPART_RELATED or root_type != DICOM:
        shown = content_type.split(";", 1)[0].strip() or "none"
        if kind == MULTIPART_RELATED:
            shown = f'{shown}; type="{params.get("type", "")}"'
        raise UnsupportedMediaType(
            f"cannot store a request body of Content-Type {shown}; this service accepts {SUPPORTED} "
            f"(each part one DICOM Part 10 instance)"
        )
    boundary = params.get("boundary", "")
    if not boundary:
        raise MalformedMultipart("the Content-Type has no boundary parameter")
    return boundary


def _check_length(request: Request, max_body_bytes: int) -> None:
    declared = request.headers.get("Content-Length", "").strip()
    if declared.isdigit() and int(declared) > max_body_bytes:
        raise PayloadTooLarge(f"the request body ({int(declared)} bytes) is larger than the "
                              f"{max_body_bytes} bytes this service accepts in one request")


def _chunks(body: Iterator[bytes] | bytes) -> Iterator[bytes]:
    if isinstance(body, bytes | bytearray):
        yield bytes(body)
    else:
        yield from body


def _limited(chunks: Iterable[bytes], max_body_bytes: int) -> Iterator[bytes]:
    """The chunks, until more than ``max_body_bytes`` have come (a body without Content-Length, or
    one that lies about it)."""
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > max_body_bytes:
            raise PayloadTooLarge(f"the request body is larger than the {max_body_bytes} bytes this "
                                  f"service accepts in one request")
        yield chunk


def _store_part(service: StoreService, part: BodyPart, number: int, study: str | None,
                report: StoreReport) -> None:
    part_type = part.content_type or DICOM  # the root type (RFC 2387 3.1) when a part says none
    if part_type != DICOM:
        _refuse(service, report, part.body, FailureReason.CANNOT_UNDERSTAND, f"part-{number}",
                "unsupported-media-type", f"part {number} is {part_type}, not {DICOM}")
        return
    try:
        identity = service.validate(part.body)  # quarantines what it refuses
    except InvalidObject as exc:
        sop_class, sop_instance = _peek_uids(part.body)
        logger.warning("STOW-RS part %d refused (%s): %s", number, exc.reason, exc)
        report.failed.append((sop_class, sop_instance, _failure_reason(exc)))
        return
    except Exception as exc:  # one part's failure must not lose the others' answers
        logger.exception("STOW-RS part %d: validation failed unexpectedly", number)
        _refuse(service, report, part.body, FailureReason.PROCESSING_FAILURE, f"part-{number}",
                "processing-failure", f"validation failed: {type(exc).__name__}")
        return
    if study is not None and identity.StudyInstanceUID != study:
        _refuse(service, report, part.body, FailureReason.STUDY_INSTANCE_UID_MISMATCH,
                f"{identity.SOPInstanceUID}.dcm", "study-mismatch",
                f"StudyInstanceUID {identity.StudyInstanceUID} differs from the request's {study}",
                identity)
        return
    try:
        service.commit(identity, part.body)
    except Exception as exc:  # noqa: BLE001 - the sender learns it failed and may resend it
        reason = (FailureReason.OUT_OF_RESOURCES if isinstance(exc, BackendError)
                  else FailureReason.PROCESSING_FAILURE)
        logger.error("STOW-RS: storing %s failed: %s", identity.SOPInstanceUID, type(exc).__name__)
        report.failed.append((identity.SOPClassUID, identity.SOPInstanceUID, reason))
        return
    report.stored.append(identity)


def _refuse(service: StoreService, report: StoreReport, data: bytes, reason: FailureReason, name: str,
            code: str, message: str, identity: InstanceIdentity | None = None) -> None:
    """Record a failure and keep the bytes in quarantine (what :meth:`StoreService.validate` does for
    the objects it refuses itself)."""
    logger.warning("STOW-RS refused %s (%s): %s", name, code, message)
    sop_class, sop_instance = ((identity.SOPClassUID, identity.SOPInstanceUID) if identity is not None
                               else _peek_uids(data))
    report.failed.append((sop_class, sop_instance, reason))
    try:
        service.quarantine.keep(data, name, code, message)
    except Exception:  # the answer still says it failed; the sender keeps its copy
        logger.exception("STOW-RS: could not quarantine %s", name)


def _failure_reason(error: InvalidObject) -> FailureReason:
    if isinstance(error, UnsupportedSOPClass):
        return FailureReason.REFERENCED_SOP_CLASS_NOT_SUPPORTED
    if error.reason == "sop-class-mismatch":
        return FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS
    return FailureReason.CANNOT_UNDERSTAND


def _peek_uids(data: bytes) -> tuple[str, str]:
    """The SOP Class and Instance UIDs of a refused object when they can be read, for the client to
    tell which of its instances failed; empty strings otherwise."""
    try:
        dataset = pydicom.dcmread(BytesIO(data), stop_before_pixels=True, force=True,
                                  specific_tags=["SOPClassUID", "SOPInstanceUID"])
        uids = (str(dataset.get("SOPClassUID", "") or "").strip(),
                str(dataset.get("SOPInstanceUID", "") or "").strip())
    except Exception:  # noqa: BLE001 - anything unreadable just has no UIDs to report
        return "", ""
    sop_class, sop_instance = uids
    return (sop_class if is_valid_uid(sop_class) else "", sop_instance if is_valid_uid(sop_instance) else "")


# --- the Store Instances Response Module (PS3.18 Annex I) ---------------------------------------------

def response_module(report: StoreReport, base_url: str, study: str | None = None) -> dict[str, Any]:
    """DICOM JSON of the answer. RetrieveURL (0008,1190) of the study is given for ``POST
    /studies/{study}`` and when every stored instance is of one study."""
    root = base_url.rstrip("/")
    module: dict[str, Any] = {}
    studies = {identity.StudyInstanceUID for identity in report.stored}
    study_url = study or (next(iter(studies)) if len(studies) == 1 else None)
    if study_url is not None:
        module[RETRIEVE_URL] = _value("UR", f"{root}/studies/{study_url}")
    if report.failed:
        module[FAILED_SOP_SEQUENCE] = {"vr": "SQ", "Value": [
            _failed_item(sop_class, sop_instance, reason) for sop_class, sop_instance, reason in report.failed
        ]}
    if report.stored:
        module[REFERENCED_SOP_SEQUENCE] = {"vr": "SQ", "Value": [
            {
                REFERENCED_SOP_CLASS_UID: _value("UI", identity.SOPClassUID),
                REFERENCED_SOP_INSTANCE_UID: _value("UI", identity.SOPInstanceUID),
                RETRIEVE_URL: _value("UR", f"{root}/studies/{identity.StudyInstanceUID}/series/"
                                           f"{identity.SeriesInstanceUID}/instances/{identity.SOPInstanceUID}"),
            }
            for identity in report.stored
        ]}
    return module


def _failed_item(sop_class: str, sop_instance: str, reason: FailureReason) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if sop_class:
        item[REFERENCED_SOP_CLASS_UID] = _value("UI", sop_class)
    if sop_instance:
        item[REFERENCED_SOP_INSTANCE_UID] = _value("UI", sop_instance)
    item[FAILURE_REASON] = _value("US", int(reason))
    return item


def _value(vr: str, value: str | int) -> dict[str, Any]:
    return {"vr": vr, "Value": [value]}
