"""pynetdicom event handlers. Each is bound with its dependencies and never raises: every failure
becomes a DIMSE status (STYLE.md, after pynetdicom's qrscp app)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from typing import Any, cast

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pynetdicom import events
from pynetdicom.dimse_primitives import C_STORE

from skypacs import __version__
from skypacs.audit import audit, dimse_outcome
from skypacs.dimse.permissions import Operation, Permissions
from skypacs.dimse.status import Status, status_dataset, status_for
from skypacs.errors import SkyPacsError
from skypacs.services.store import StoreService

logger = logging.getLogger(__name__)

IMPLEMENTATION_VERSION_NAME = f"SKYPACS_{__version__}"[:16]


def handle_conn_open(event: events.Event) -> None:
    """Disable Nagle's algorithm: pynetdicom leaves it on, costing ~40 ms per DIMSE exchange."""
    try:
        event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]
    except (AttributeError, OSError):  # pragma: no cover - a socket already closed by the peer
        logger.debug("could not set TCP_NODELAY on an accepted connection")


def handle_echo(event: events.Event) -> int:
    return int(Status.SUCCESS)


def part10_bytes(event: events.Event, calling_ae: str) -> bytes:
    """The received dataset bytes, untouched, behind a PS3.10 file meta header that also names the
    sending AE (Source Application Entity Title) and this implementation."""
    meta = event.file_meta
    meta.SourceApplicationEntityTitle = calling_ae
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    header = DicomBytesIO()
    write_file_meta_info(header, meta, enforce_standard=True)
    return b"".join((b"\x00" * 128, b"DICM", header.getvalue(), event.encoded_dataset(include_meta=False)))


def handle_store(
    event: events.Event, service: StoreService, permissions: Permissions | None = None
) -> int | Dataset:
    """Store the dataset exactly as received (bytes + a file meta header), then answer.

    The answer waits only for the durable write; indexing follows from the ingest queue.
    """
    request = cast(C_STORE, event.request)
    what: dict[str, object] = {"SOPInstanceUID": str(request.AffectedSOPInstanceUID or ""),
            "SOPClassUID": str(request.AffectedSOPClassUID or "")}
    refusal = not_authorized(event, permissions, "store")
    answer = refusal if refusal is not None else _store(event, service, request, what)
    status = int(answer.Status) if isinstance(answer, Dataset) else answer
    status_hex, outcome = dimse_outcome(status)
    audit_dimse(event, "store", what, outcome, status_hex)
    return answer


def not_authorized(event: events.Event, permissions: Permissions | None, operation: Operation) -> Dataset | None:
    """The 0x0124 answer when the calling AE may not invoke ``operation`` (:mod:`.permissions`), else None."""
    calling = str(event.assoc.requestor.ae_title)
    if permissions is None or permissions.allows(calling, operation):
        return None
    logger.warning("C-%s from %s refused (0x0124): the AE is not permitted to %s", operation.upper(), calling, operation)
    return status_dataset(Status.NOT_AUTHORIZED, f"{calling.strip()} is not permitted to {operation}")


def audit_dimse(event: events.Event, action: str, what: Mapping[str, Any], outcome: str, status: str,
                **extra: Any) -> None:
    """The audit record of a DIMSE request: the calling AE title, the peer's address, the status."""
    requestor = event.assoc.requestor
    audit(action, who=str(requestor.ae_title), what=what, outcome=outcome, protocol="DIMSE", status=status,
          address=f"{requestor.address}:{requestor.port}", **extra)


def _store(event: events.Event, service: StoreService, request: C_STORE, what: dict[str, object]) -> int | Dataset:
    calling = event.assoc.requestor.ae_title
    try:
        data = part10_bytes(event, calling)
    except Exception as exc:  # noqa: BLE001 - whatever the SCU sent that cannot be read gets 0xC210
        logger.warning("C-STORE from %s: cannot read the received dataset: %s", calling, exc)
        return status_dataset(Status.CANNOT_DECODE, "cannot read the received dataset")
    try:
        receipt = service.store_part10(
            data,
            expected_sop_class=str(request.AffectedSOPClassUID or ""),
            expected_sop_instance=str(request.AffectedSOPInstanceUID or ""),
        )
    except SkyPacsError as exc:
        status = status_for(exc)
        logger.warning("C-STORE from %s refused with 0x%04X: %s", calling, status, exc)
        return status_dataset(status, str(exc))
    except Exception as exc:  # never let an exception reach pynetdicom: it would answer 0xC211 blindly
        logger.exception("C-STORE from %s failed unexpectedly", calling)
        return status_dataset(Status.OUT_OF_RESOURCES, f"storage failed: {type(exc).__name__}")
    logger.debug("C-STORE from %s stored %s (%d bytes)", calling, receipt.info.key, receipt.info.size)
    identity = receipt.identity
    what.update(StudyInstanceUID=identity.StudyInstanceUID, SeriesInstanceUID=identity.SeriesInstanceUID,
                SOPInstanceUID=identity.SOPInstanceUID)
    return int(Status.SUCCESS)
