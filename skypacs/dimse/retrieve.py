"""The C-MOVE and C-GET SCPs of the Patient Root and Study Root Query/Retrieve models (PS3.4 C.4.2,
C.4.3, C.6).

A thin edge over :mod:`skypacs.services.retrieve_selection`: the Identifier becomes a
:class:`~skypacs.services.retrieve_selection.RetrieveRequest`, the Catalog says which instances it
names, and each becomes one C-STORE sub-operation, driven by pynetdicom's Q/R service class: the
handlers yield (for C-MOVE) the destination, then the number of sub-operations, then one
``(0xFF00, dataset)`` per instance; pynetdicom sends the Pending responses with the counts and the
final Success / Warning 0xB000 / Failure 0xA702 with the Failed SOP Instance UID List.

Which encoding each instance travels in is decided against the presentation contexts the Storage SCP
accepted (the C-MOVE destination's sub-association, or the C-GET SCU's own association with SCP/SCU
role selection):

1. a context with the stored transfer syntax: the object is sent **as stored**, its dataset bytes
   sent from the file untouched (see :func:`send_files_as_stored`), never decoded;
2. otherwise a context whose syntax the object can be converted to, Explicit VR Little Endian first:
   between little endian uncompressed syntaxes (Explicit / Implicit VR, deflated) pynetdicom re-encodes
   the dataset as it sends it; anything else (decompression, byte order) goes through
   :mod:`skypacs.imaging.transcode` into a temporary file, then is sent;
3. otherwise the sub-operation fails, with a log line naming the instance, its stored syntax and what
   the destination accepted.

Objects come from the ObjectStore: a filesystem store gives the file itself (no copy); others (S3) are
spooled to a temporary file, one at a time, removed once sent: memory stays bounded whatever the size.

Refusals before any sub-operation (a bad Identifier 0xA900 / 0xC000, a backend that cannot list the
matches 0xA701) carry an Error Comment and no sub-operation counts. pynetdicom's Q/R loop has no way to
refuse before it associates with the C-MOVE destination (only "destination unknown") nor to refuse a
C-GET without inventing a failed sub-operation, so a refusal takes pynetdicom's shortest path (unknown
destination, zero sub-operations) and rewrites the one response it sends (:func:`_refuse`); no
association with the destination is opened.
"""

from __future__ import annotations

import logging
import shutil
import struct
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import _config as pynetdicom_config
from pynetdicom import build_context, events, evt
from pynetdicom._handlers import standard_dimse_sent_handler
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_GET, C_MOVE, C_STORE
from pynetdicom.dsutils import split_dataset
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from skypacs.audit import dimse_outcome
from skypacs.dimse.handlers import audit_dimse, handle_conn_open, not_authorized
from skypacs.dimse.permissions import Permissions
from skypacs.dimse.status import Status, retrieve_status_for, status_dataset
from skypacs.errors import CannotTranscode, SkyPacsError
from skypacs.imaging.transcode import can_transcode, read_part10, transcode_dataset
from skypacs.ports import Catalog, InstanceRecord, ObjectStore
from skypacs.query.model import InformationModel
from skypacs.services.query import QueryService
from skypacs.services.retrieve_selection import retrieve_request_from_identifier, select_instances

logger = logging.getLogger(__name__)

MOVE_SOP_CLASSES: dict[str, InformationModel] = {
    str(PatientRootQueryRetrieveInformationModelMove): InformationModel.PATIENT_ROOT,
    str(StudyRootQueryRetrieveInformationModelMove): InformationModel.STUDY_ROOT,
}
GET_SOP_CLASSES: dict[str, InformationModel] = {
    str(PatientRootQueryRetrieveInformationModelGet): InformationModel.PATIENT_ROOT,
    str(StudyRootQueryRetrieveInformationModelGet): InformationModel.STUDY_ROOT,
}

MAX_PROPOSED_CONTEXTS = 128
"""Presentation contexts one association may propose (PS3.8 9.3.2.2: odd IDs 1-255)."""
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
"""What an object is converted to when the Storage SCP does not take it as stored, in that order."""
RE_ENCODABLE = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian})
"""Syntaxes pynetdicom converts between by itself when it encodes a dataset (no pixel data change)."""
SPOOL_CHUNK = 1024 * 1024
RETRIEVE_POLL_DELAY = 0.0001
"""pynetdicom's DUL thread sleeps 1 ms whenever it finds nothing to do, and each sub-operation meets
that sleep several times (sending the C-STORE, receiving its response, sending the Pending response):
about 2 ms of every 4 ms. While a retrieve runs its associations poll every 0.1 ms instead (measured
with DCMTK peers, 1,000 CT instances: C-GET 4.5 s -> 2.7 s)."""
MAX_SUB_OPERATIONS = 65535
"""The sub-operation counts of the responses are US (PS3.7 9.3.3.2): no retrieve can name more instances."""
NOT_SENT = Status.PROCESSING_FAILURE
"""The C-STORE status a sub-operation counts when the gateway could not send the instance at all."""


@runtime_checkable
class LocalFiles(Protocol):
    """An ObjectStore whose objects are files on this machine (the filesystem store)."""

    def local_path(self, key: str) -> Path: ...


@dataclass(frozen=True)
class RetrieveSources:
    """What the C-MOVE/C-GET SCPs read: the catalog (which instances), the store (their bytes) and,
    for PATIENT level only, the query service (a patient's studies)."""

    catalog: Catalog
    store: ObjectStore
    query_service: QueryService | None = None
    spool_dir: Path | None = None
    """Where objects without a local file (S3) and converted objects are written while they are sent."""


class SubOperation(Dataset):
    """One instance handed to pynetdicom's Q/R loop, which only carries Datasets to ``send_c_store``.

    It holds the SOP Instance UID (pynetdicom lists it as failed if the C-STORE fails) and the file
    to send; ``file_path`` None means the gateway could not prepare the instance: the wrapped
    ``send_c_store`` answers a failure without sending anything.
    """

    def __init__(self, record: InstanceRecord, path: Path | None, transfer_syntax: str | None = None) -> None:
        super().__init__()
        self.SOPClassUID = record.SOPClassUID
        self.SOPInstanceUID = record.SOPInstanceUID
        self.file_path = path
        self.transfer_syntax = transfer_syntax or record.TransferSyntaxUID
        """The transfer syntax of the file's dataset: the stored one (from the catalog), or the converted one."""


def _re_encoded(path: Path) -> Dataset:
    """The object as a Dataset (pixel data untouched) for pynetdicom to encode in the accepted syntax."""
    with path.open("rb") as stream:
        return read_part10(stream)


def handle_move(
    event: events.Event, sources: RetrieveSources, destinations: Mapping[str, tuple[str, int]],
    permissions: Permissions | None = None,
) -> Iterator[Any]:
    """Answer a C-MOVE: the destination from configuration, then the sub-operations (see module doc).
    An AE not permitted to move gets 0x0124 before any sub-association."""
    calling = event.assoc.requestor.ae_title
    destination = str(cast(C_MOVE, event.request).MoveDestination or "").strip()
    refusal = not_authorized(event, permissions, "move")
    if refusal is not None:
        _audit_retrieve(event, int(refusal.Status), Counter(), destination=destination)
        _refuse(event.assoc, refusal)
        yield None, None
        return
    address = destinations.get(destination)
    if address is None:
        logger.warning("C-MOVE from %s refused: move destination %r is not configured (0xA801)", calling, destination)
        _audit_retrieve(event, int(Status.MOVE_DESTINATION_UNKNOWN), Counter(), destination=destination)
        yield None, None
        return
    outcome = _selection(event, sources, MOVE_SOP_CLASSES, "C-MOVE")
    if isinstance(outcome, Dataset):
        _audit_retrieve(event, int(outcome.Status), Counter(), destination=destination)
        _refuse(event.assoc, outcome)
        yield None, None
        return
    sub_association = _SubAssociation()
    logger.info("C-MOVE from %s to %s: %d instances", calling, destination, len(outcome))
    yield address[0], address[1], sub_association.kwargs(proposed_contexts(outcome))
    yield len(outcome)
    sent = yield from _sub_operations(event, outcome, sources, sub_association.get, f"C-MOVE to {destination}")
    _audit_retrieve(event, None, sent, destination=destination)


def handle_get(
    event: events.Event, sources: RetrieveSources, permissions: Permissions | None = None
) -> Iterator[Any]:
    """Answer a C-GET: the sub-operations go back over the SCU's own association, in the storage
    contexts it proposed with the SCP role (SCP/SCU Role Selection, PS3.7 D.3.3.4). An AE not
    permitted to get gets 0x0124 and no sub-operation."""
    calling = event.assoc.requestor.ae_title
    refusal = not_authorized(event, permissions, "get")
    outcome = refusal if refusal is not None else _selection(event, sources, GET_SOP_CLASSES, "C-GET")
    if isinstance(outcome, Dataset):
        _audit_retrieve(event, int(outcome.Status), Counter())
        _refuse(event.assoc, outcome)
        yield 0
        return
    logger.info("C-GET from %s: %d instances", calling, len(outcome))
    yield len(outcome)
    sent = yield from _sub_operations(event, outcome, sources, lambda: event.assoc, f"C-GET from {calling}")
    _audit_retrieve(event, None, sent)


def _audit_retrieve(event: events.Event, status: int | None, sent: Counter[str], **extra: Any) -> None:
    """The audit record of a C-MOVE/C-GET: level, UIDs, destination, sub-operation counts, and the
    final status (given for a refusal; otherwise the one pynetdicom derives from the counts)."""
    if status is None:
        status = (Status.CANCEL if sent["cancelled"] else 0xA702 if sent["failed"] and not sent["completed"]
                  else 0xB000 if sent["failed"] or sent["warning"] else Status.SUCCESS)
    what: dict[str, Any] = {name: sent[name] for name in ("completed", "failed", "warning")}
    try:
        identifier = event.identifier
        what["level"] = str(identifier.get("QueryRetrieveLevel", ""))
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            if identifier.get(keyword):
                value = identifier.get(keyword)
                what[keyword] = [str(uid) for uid in value] if isinstance(value, list | tuple) else str(value)
    except Exception:  # noqa: BLE001 - an undecodable Identifier was refused; audit what is known
        logger.debug("the audit record names no UIDs: the Identifier cannot be decoded")
    status_hex, outcome = dimse_outcome(int(status))
    audit_dimse(event, "retrieve", {**what, **extra}, outcome, status_hex)


def _selection(
    event: events.Event, sources: RetrieveSources, models: Mapping[str, InformationModel], what: str
) -> list[InstanceRecord] | Dataset:
    """The instances to send, or the status Dataset refusing the request."""
    calling = event.assoc.requestor.ae_title
    request = cast(C_MOVE | C_GET, event.request)
    model = models.get(str(request.AffectedSOPClassUID or ""))
    if model is None:  # only the retrieve contexts are accepted, but a handler never trusts that
        return status_dataset(Status.SOP_CLASS_NOT_SUPPORTED, "not a supported retrieve model")
    try:
        identifier = event.identifier
        retrieve = retrieve_request_from_identifier(identifier, model)
    except SkyPacsError as exc:
        status = retrieve_status_for(exc)
        logger.warning("%s from %s refused with 0x%04X: %s", what, calling, status, exc)
        return status_dataset(status, str(exc))
    except Exception:  # noqa: BLE001 - pydicom decodes lazily: any error is an undecodable Identifier
        logger.warning("%s from %s: cannot decode the Identifier", what, calling)
        return status_dataset(Status.UNABLE_TO_PROCESS, "cannot decode the Identifier")
    try:
        records = select_instances(retrieve, sources.catalog, sources.query_service)
    except SkyPacsError as exc:
        status = retrieve_status_for(exc)
        logger.warning("%s from %s refused with 0x%04X: %s", what, calling, status, exc)
        return status_dataset(status, str(exc))
    except Exception as exc:  # never let an exception reach pynetdicom
        logger.exception("%s from %s: selecting the instances failed", what, calling)
        return status_dataset(Status.UNABLE_TO_CALCULATE_NUMBER_OF_MATCHES, f"catalog failed: {type(exc).__name__}")
    if len(records) > MAX_SUB_OPERATIONS:
        logger.warning("%s from %s refused: %d instances, more than %d", what, calling, len(records), MAX_SUB_OPERATIONS)
        return status_dataset(Status.UNABLE_TO_PROCESS, f"{len(records)} instances: more than 65535, retrieve by series")
    return records


def _refuse(association: Association, status: Dataset) -> None:
    """Make the next C-MOVE/C-GET response pynetdicom sends on ``association`` carry ``status`` (and its
    Error Comment) without sub-operation counts. It is sent at once, on this thread, after the handler
    yields "unknown destination" (C-MOVE) or zero sub-operations (C-GET)."""
    dimse = association.dimse
    send_msg = dimse.send_msg
    _refusing.active = True

    def send_refusal(primitive: Any, context_id: int) -> None:
        del dimse.send_msg  # one response only: back to pynetdicom's own method
        _refusing.active = False
        if isinstance(primitive, C_MOVE | C_GET):
            primitive.Status = int(status.Status)
            primitive.ErrorComment = status.get("ErrorComment")
            for name in ("Remaining", "Completed", "Failed", "Warning"):
                setattr(primitive, f"NumberOf{name}Suboperations", None)
            primitive.Identifier = None
        send_msg(primitive, context_id)

    dimse.send_msg = send_refusal  # type: ignore[method-assign]


_refusing = threading.local()


class _NotAnUnknownDestination(logging.Filter):
    """Drops pynetdicom's "Unknown Move Destination" error while :func:`_refuse` borrows that path
    (the refusal is logged by the handler, with its real reason)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (getattr(_refusing, "active", False) and str(record.msg).startswith("Unknown Move Destination"))


logging.getLogger("pynetdicom.service_class").addFilter(_NotAnUnknownDestination())


def proposed_contexts(records: list[InstanceRecord]) -> list[PresentationContext]:
    """The contexts to propose to a C-MOVE destination: per SOP class one context with Explicit and
    Implicit VR Little Endian (anything decodable can be sent in those), then one per stored transfer
    syntax (so it can go as stored), the most used first, up to 128 contexts in all."""
    syntaxes: dict[str, Counter[str]] = {}
    for record in records:
        syntaxes.setdefault(record.SOPClassUID, Counter())[record.TransferSyntaxUID] += 1
    contexts = [build_context(sop_class, list(UNCOMPRESSED)) for sop_class in syntaxes]
    stored = sorted(
        ((count, sop_class, syntax) for sop_class, counts in syntaxes.items() for syntax, count in counts.items()),
        key=lambda item: -item[0],
    )
    contexts += [build_context(sop_class, [syntax]) for _, sop_class, syntax in stored]
    if len(contexts) > MAX_PROPOSED_CONTEXTS:
        logger.warning(
            "%d SOP class/transfer syntax pairs to send: proposing only the first %d contexts",
            len(contexts), MAX_PROPOSED_CONTEXTS,
        )
    return contexts[:MAX_PROPOSED_CONTEXTS]


@dataclass
class _SubAssociation:
    """The C-MOVE sub-association pynetdicom opens with the destination, caught when it is accepted."""

    association: Association | None = None

    def kwargs(self, contexts: list[PresentationContext]) -> dict[str, Any]:
        return {
            "contexts": contexts,
            "evt_handlers": [(evt.EVT_CONN_OPEN, handle_conn_open), (evt.EVT_ACCEPTED, self._accepted)],
        }

    def _accepted(self, event: events.Event) -> None:
        self.association = event.assoc
        keep_stolen_store_responses(event.assoc)

    def get(self) -> Association | None:
        return self.association


def _sub_operations(
    event: events.Event,
    records: list[InstanceRecord],
    sources: RetrieveSources,
    storage_association: Callable[[], Association | None],
    what: str,
) -> Generator[tuple[int, Dataset | None], None, Counter[str]]:
    """One ``(0xFF00, SubOperation)`` per instance; ``(0xFE00, None)`` on C-CANCEL. The final response
    is pynetdicom's, from the C-STORE statuses it collected; returns those statuses counted (completed,
    failed, warning; cancelled on C-CANCEL) for the audit trail."""
    association = storage_association()
    if association is None:  # pragma: no cover - pynetdicom resumes us only once associated
        logger.error("%s: no storage association to send on", what)
        return Counter(failed=len(records))
    send_files_as_stored(association)
    sender = cast(_FileSender, association.send_c_store)
    before = Counter(sender.statuses)
    accepted = accepted_transfer_syntaxes(association)
    counts: Counter[str] = Counter()
    with _polling_fast(association, event.assoc):
        for index, record in enumerate(records):
            if event.is_cancelled:
                logger.info("%s cancelled after %d of %d instances", what, index, len(records))
                yield Status.CANCEL, None
                return sender.statuses - before + Counter(cancelled=1)
            with _prepared(record, accepted.get(record.SOPClassUID, ()), sources, counts, what) as sub_operation:
                yield Status.PENDING, sub_operation
    logger.info(
        "%s: %d instances, %d as stored, %d converted, %d not sent",
        what, len(records), counts["as stored"], counts["converted"], counts["not sent"],
    )
    return sender.statuses - before


@contextmanager
def _polling_fast(*associations: Association) -> Iterator[None]:
    """Poll the sockets of the associations a retrieve runs on every :data:`RETRIEVE_POLL_DELAY` while
    it runs (see there), then go back to pynetdicom's idle pace."""
    previous = [(dul, dul._run_loop_delay) for dul in {id(a.dul): a.dul for a in associations}.values()]
    for dul, _ in previous:
        dul._run_loop_delay = RETRIEVE_POLL_DELAY
    try:
        yield
    finally:
        for dul, delay in previous:
            dul._run_loop_delay = delay


def accepted_transfer_syntaxes(association: Association) -> dict[str, tuple[str, ...]]:
    """SOP class -> the transfer syntaxes this end may send it in (contexts where it is the SCU)."""
    accepted: dict[str, list[str]] = {}
    for context in association.accepted_contexts:
        if context.as_scu and context.transfer_syntax:
            accepted.setdefault(str(context.abstract_syntax), []).append(str(context.transfer_syntax[0]))
    return {sop_class: tuple(dict.fromkeys(syntaxes)) for sop_class, syntaxes in accepted.items()}


def conversion_target(stored: str, accepted: tuple[str, ...]) -> str | None:
    """The syntax to convert an object stored in ``stored`` to, given what was ``accepted`` for its
    SOP class (the stored syntax itself not being among them): uncompressed first."""
    candidates = [str(syntax) for syntax in UNCOMPRESSED if syntax in accepted]
    candidates += [syntax for syntax in accepted if syntax not in UNCOMPRESSED]
    return next((target for target in candidates if _can_transcode(stored, target)), None)


def _can_transcode(stored: str, target: str) -> bool:
    try:
        return can_transcode(stored, target)
    except Exception:  # noqa: BLE001 - a UID no codec registry knows: no conversion
        return False


@contextmanager
def _prepared(
    record: InstanceRecord, accepted: tuple[str, ...], sources: RetrieveSources, counts: Counter[str], what: str
) -> Iterator[Dataset]:
    """What to hand pynetdicom for ``record``, and whatever it needs (a temporary file) until it is sent:
    the file as stored, a converted file or dataset, or a :class:`SubOperation` without a file (failure,
    logged with the instance's UID, its stored syntax and what the Storage SCP accepted)."""
    with ExitStack() as resources:
        try:
            item, how = _sendable(record, accepted, sources, resources)
        except SkyPacsError as exc:
            logger.warning("%s: SOP Instance %s not sent: %s", what, record.SOPInstanceUID, exc)
            item, how = SubOperation(record, None), "not sent"
        except Exception:
            logger.exception("%s: SOP Instance %s not sent", what, record.SOPInstanceUID)
            item, how = SubOperation(record, None), "not sent"
        counts[how] += 1
        yield item


def _sendable(
    record: InstanceRecord, accepted: tuple[str, ...], sources: RetrieveSources, resources: ExitStack
) -> tuple[Dataset, str]:
    stored = record.TransferSyntaxUID
    if stored in accepted:
        return SubOperation(record, resources.enter_context(_object_file(record, sources))), "as stored"
    target = conversion_target(stored, accepted)
    if target is None:
        raise CannotTranscode(
            f"stored as {stored}, the Storage SCP accepted {', '.join(accepted) or 'nothing'} for SOP class "
            f"{record.SOPClassUID} and none of those can be made from it"
        )
    if stored in RE_ENCODABLE and target in RE_ENCODABLE:
        with _object_file(record, sources) as path:
            return _re_encoded(path), "converted"
    converted = resources.enter_context(_converted_file(record, target, sources))
    return SubOperation(record, converted, target), "converted"


@contextmanager
def _object_file(record: InstanceRecord, sources: RetrieveSources) -> Iterator[Path]:
    """The stored object as a file: the store's own file, or a temporary copy removed afterwards."""
    store = sources.store
    if isinstance(store, LocalFiles):
        yield store.local_path(record.key)  # a missing file fails when sent (see _FileSender)
        return
    with tempfile.NamedTemporaryFile(prefix="skypacs-retrieve-", suffix=".dcm", dir=sources.spool_dir) as spool:
        with store.open(record.key) as stream:
            shutil.copyfileobj(stream, spool, SPOOL_CHUNK)
        spool.flush()
        yield Path(spool.name)


@contextmanager
def _converted_file(record: InstanceRecord, target: str, sources: RetrieveSources) -> Iterator[Path]:
    with _object_file(record, sources) as source, source.open("rb") as stream:
        dataset = transcode_dataset(read_part10(stream), target)
    with tempfile.NamedTemporaryFile(prefix="skypacs-retrieve-", suffix=".dcm", dir=sources.spool_dir) as out:
        # dcmwrite, not save_as, as in skypacs.imaging.transcode.write_part10 (endianness changes).
        pydicom.dcmwrite(out, dataset, enforce_file_format=True)
        out.flush()
        del dataset
        yield Path(out.name)


def send_files_as_stored(association: Association) -> None:
    """Make ``association.send_c_store`` send a :class:`SubOperation`'s file byte for byte.

    pynetdicom's Q/R loop hands each yielded Dataset to ``send_c_store``, which would re-encode it;
    :class:`_FileSender` sends the file's dataset bytes instead, in the context of exactly the file's
    transfer syntax, itself or (when it must fall back) through pynetdicom's ``send_c_store`` of a
    *path* with ``STORE_SEND_CHUNKED_DATASET`` on. That flag is pynetdicom's documented process-wide
    switch; the gateway process only sends stored files, so it is turned on here.
    """
    if isinstance(association.send_c_store, _FileSender):
        return
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
    association.send_c_store = _FileSender(association)  # type: ignore[method-assign]


class _FileSender:
    """``send_c_store`` for :class:`SubOperation` datasets (others go to pynetdicom's unchanged).

    pynetdicom's ``send_c_store`` of a file spends most of the gateway's time per sub-operation in
    pydicom (profiled: ~20% parsing the file meta in ``split_dataset``, ~33% building the C-STORE
    command set as a Dataset and encoding it twice, for its group length and for the message). Neither
    is needed here: the SOP class and instance and the transfer syntax are the catalog record's,
    where the dataset starts is read off the file's first bytes (:func:`dataset_offset`), and the command set
    is packed directly (:func:`encode_store_command`). The message is then queued on the DUL as
    P-DATA fragments, as pynetdicom's ``DIMSEServiceProvider.send_msg`` does, and the response taken
    and checked by pynetdicom. Nothing of pynetdicom is patched but this association's ``send_c_store``.

    That path raises no ``EVT_DIMSE_SENT`` (it would need the pydicom command set): when a handler other
    than pynetdicom's standard logging one is bound, or pynetdicom logs at INFO (which that handler
    would feed), or this pynetdicom lacks the internals used, pynetdicom's own send is used instead.

    On a requestor association (the C-MOVE sub-association) every ``send_c_store`` pauses the reactor
    thread and waits for it to reach its pause point, which it visits once per millisecond: up to 1 ms
    per instance. This sender pauses it once and keeps it paused between its own sends (as pynetdicom's
    does during each send); pynetdicom starts it again when the association is released. An acceptor
    association (C-GET) runs the handler on its reactor thread, already paused.
    """

    def __init__(self, association: Association) -> None:
        self.association = association
        self.send_c_store = association.send_c_store
        self.lost = False
        self.contexts: dict[tuple[str, str], int] = {}
        self.fast = all(
            hasattr(association, name)
            for name in ("_reactor_checkpoint", "_is_paused", "_get_valid_context", "_check_received_status",
                         "_handle_no_response", "dimse", "dul")
        )
        self.statuses: Counter[str] = Counter()
        """The C-STORE statuses sent so far, as pynetdicom counts them: completed, warning, failed."""

    def __call__(self, dataset: Any, *args: Any, **kwargs: Any) -> Dataset:
        status = self._send(dataset, *args, **kwargs)
        code = int(status.get("Status", 0xC000)) if isinstance(status, Dataset) else 0xC000
        self.statuses["completed" if code == 0 else "warning" if code == 1 or 0xB000 <= code <= 0xBFFF
                      else "failed"] += 1
        return status

    def _send(self, dataset: Any, *args: Any, **kwargs: Any) -> Dataset:
        if not isinstance(dataset, SubOperation):
            return self.send_c_store(dataset, *args, **kwargs)
        if dataset.file_path is None:
            return _not_sent()
        try:
            if self.fast and not args and not self._observed():
                return self._send_file(dataset, **kwargs)
            return self.send_c_store(dataset.file_path, *args, **kwargs)
        except OSError as exc:  # the stored file is gone or unreadable: nothing was sent
            logger.warning("SOP Instance %s not sent: cannot read its object: %s", dataset.SOPInstanceUID, exc)
            return _not_sent()

    def _observed(self) -> bool:
        """Whether anything would notice the missing ``EVT_DIMSE_SENT`` (see the class doc)."""
        if _pynetdicom_logger.isEnabledFor(logging.INFO):
            return True
        handlers = self.association.get_handlers(evt.EVT_DIMSE_SENT)
        return any(handler is not standard_dimse_sent_handler for handler, _ in cast(list[Any], handlers))

    def _context_id(self, sop_class: str, transfer_syntax: str) -> int:
        key = (sop_class, transfer_syntax)
        if key not in self.contexts:
            association: Any = self.association
            context = association._get_valid_context(sop_class, transfer_syntax, "scu", allow_conversion=False)
            self.contexts[key] = int(context.context_id)
        return self.contexts[key]

    def _send_file(
        self,
        sub_operation: SubOperation,
        *,
        msg_id: int = 1,
        priority: int = 2,
        originator_aet: str | None = None,
        originator_id: int | None = None,
    ) -> Dataset:
        """pynetdicom's ``send_c_store`` of a file in chunked mode, without pydicom and, on a requestor,
        without restarting the reactor after each instance."""
        association: Any = self.association
        path = cast(Path, sub_operation.file_path)
        if not association.is_established or association.acse.is_aborted():
            # The peer went away: let the reactor see it (pynetdicom then ends the association)
            # and fail at once, rather than wait out the DIMSE timeout for every instance left.
            association._reactor_checkpoint.set()
            if not self.lost:
                logger.warning("the Storage SCP association was aborted: the remaining instances are not sent")
            self.lost = True
            return _not_sent()
        dataset = _dataset_bytes(path)
        context_id = self._context_id(str(sub_operation.SOPClassUID), sub_operation.transfer_syntax)
        command = encode_store_command(
            sop_class=str(sub_operation.SOPClassUID),
            sop_instance=str(sub_operation.SOPInstanceUID),
            message_id=msg_id,
            priority=priority,
            originator_aet=originator_aet,
            originator_id=originator_id,
        )
        if association.is_requestor:
            association._reactor_checkpoint.clear()
            while not association._is_paused:
                time.sleep(0.0001)
        for pdata in _p_data(context_id, command, dataset, association.dimse.maximum_pdu_size):
            association.dul.send_pdu(pdata)
        _, response = association.dimse.get_msg(block=True)
        if response is None:  # DIMSE timeout: as pynetdicom does, restart the reactor and abort
            association._reactor_checkpoint.set()
            association._handle_no_response()
            return Dataset()
        status: Dataset = association._check_received_status(response)
        return status


_pynetdicom_logger = logging.getLogger("pynetdicom")
_AE_VR_PADDING = b" "


def encode_store_command(
    *,
    sop_class: str,
    sop_instance: str,
    message_id: int,
    priority: int = 2,
    originator_aet: str | None = None,
    originator_id: int | None = None,
) -> bytes:
    """The command set of a C-STORE-RQ with a data set (PS3.7 9.3.1.1), Implicit VR Little Endian
    (PS3.7 6.3.1), byte for byte what pynetdicom encodes for the same request, without pydicom."""
    elements = [
        (0x0002, _padded(sop_class.encode("ascii"), b"\0")),
        (0x0100, struct.pack("<H", 0x0001)),  # Command Field: C-STORE-RQ
        (0x0110, struct.pack("<H", message_id)),
        (0x0700, struct.pack("<H", priority)),
        (0x0800, struct.pack("<H", 0x0001)),  # Command Data Set Type: a data set follows
        (0x1000, _padded(sop_instance.encode("ascii"), b"\0")),
    ]
    if originator_aet is not None:
        elements.append((0x1030, _padded(originator_aet.encode("ascii"), _AE_VR_PADDING)))
    if originator_id is not None:
        elements.append((0x1031, struct.pack("<H", originator_id)))
    body = b"".join(struct.pack("<HHI", 0x0000, element, len(value)) + value for element, value in elements)
    return struct.pack("<HHII", 0x0000, 0x0000, 4, len(body)) + body


def _padded(value: bytes, padding: bytes) -> bytes:
    return value + padding if len(value) % 2 else value


def _p_data(context_id: int, command: bytes, dataset: memoryview, max_pdu: int) -> Iterator[P_DATA]:
    """The P-DATA primitives of one message (PS3.8 E.2): the command set, then the dataset, each in
    fragments fitting the peer's maximum PDU (0: unlimited), as pynetdicom's
    ``DIMSEMessage.encode_msg`` cuts them."""
    size = max(len(command), 1) if max_pdu == 0 else max_pdu - 6
    for start in range(0, len(command), size):
        last = start + size >= len(command)
        yield _pdv(context_id, (b"\x03" if last else b"\x01") + command[start:start + size])
    size = max(len(dataset), 1) if max_pdu == 0 else max_pdu - 6
    for start in range(0, max(len(dataset), 1), size):
        last = start + size >= len(dataset)
        yield _pdv(context_id, (b"\x02" if last else b"\x00") + dataset[start:start + size])


def _pdv(context_id: int, value: bytes) -> P_DATA:
    pdata = P_DATA()
    pdata.presentation_data_value_list.append((context_id, value))
    return pdata


FILE_META_BLOCK = 1024
"""Bytes read to find where a file's dataset starts: a file meta group is typically ~200 bytes."""
_LONG_LENGTH_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})


def dataset_offset(path: Path) -> int:
    """Where the dataset of the Part 10 file at ``path`` starts: after the preamble, ``DICM`` and the
    file meta group (PS3.10 7.1). The same answer as pynetdicom's ``split_dataset``, without pydicom."""
    with path.open("rb") as stream:
        offset = _file_meta_end(stream.read(FILE_META_BLOCK))
    return split_dataset(path)[1] if offset is None else offset


def _file_meta_end(data: bytes) -> int | None:
    """Where the file meta group of the Part 10 bytes ``data`` ends, walking its elements (Explicit VR
    Little Endian) until another group starts, as pynetdicom's ``split_dataset`` does with pydicom;
    None when ``data`` has no preamble and ``DICM`` or ends within the group (``split_dataset`` then
    decides, and raises for what is not a Part 10 file)."""
    if data[128:132] != b"DICM":
        return None
    position = 132
    while position + 8 <= len(data):
        group = struct.unpack_from("<H", data, position)[0]
        if group != 0x0002:
            return position
        if data[position + 4:position + 6] in _LONG_LENGTH_VRS:
            if position + 12 > len(data):
                return None
            position += 12 + struct.unpack_from("<I", data, position + 8)[0]
        else:
            position += 8 + struct.unpack_from("<H", data, position + 6)[0]
    return None


def _dataset_bytes(path: Path) -> memoryview:
    """The dataset of the Part 10 file at ``path``, as stored. The file is read whole, in one call
    (pynetdicom queues all of a message's P-DATA at once anyway): each open or read releases the GIL,
    and getting it back from the DUL threads polling every 0.1 ms costs more than reading 40 KB."""
    with path.open("rb") as stream:
        data = stream.read()
    offset = _file_meta_end(data)
    return memoryview(data)[split_dataset(path)[1] if offset is None else offset:]


def _not_sent() -> Dataset:
    status = Dataset()
    status.Status = int(NOT_SENT)
    return status


def keep_stolen_store_responses(association: Association) -> None:
    """Work around a race in pynetdicom 3.0's requestor: ``send_c_store`` pauses the reactor thread,
    but the reactor can pass its checkpoint just before and take the C-STORE response off the DIMSE
    queue itself, dropping it as unexpected; the sender then waits out the DIMSE timeout and aborts.
    Over thousands of sub-operations that happens. Such a response is put back where ``send_c_store``
    waits for it (the same fix as bench/ingest.py). Does nothing if pynetdicom lacks these internals.
    """
    original = getattr(association, "_serve_request", None)
    queue = getattr(getattr(association, "dimse", None), "msg_queue", None)
    if original is None or queue is None:
        return

    def serve_request(message: Any, context_id: int) -> None:
        if isinstance(message, C_STORE) and not message.is_valid_request and message.Status is not None:
            queue.put((context_id, message))
            return
        original(message, context_id)

    association._serve_request = serve_request  # type: ignore[method-assign,assignment]


__all__ = [
    "GET_SOP_CLASSES",
    "MOVE_SOP_CLASSES",
    "RetrieveSources",
    "SubOperation",
    "accepted_transfer_syntaxes",
    "conversion_target",
    "dataset_offset",
    "encode_store_command",
    "handle_get",
    "handle_move",
    "proposed_contexts",
]
