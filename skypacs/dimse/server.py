"""The DIMSE gateway's Application Entity: what it accepts, from whom, and how it stops.

Accepts Verification and every storage SOP class pynetdicom knows (plus configured private ones), each
with the common transfer syntaxes, compressed ones included: objects are stored as received, so the
gateway never needs a codec. Given a query service, it also answers C-FIND in the Patient Root and
Study Root models (uncompressed transfer syntaxes). A calling-AE allow-list applies when configured;
without one the gateway is open to any AE and says so in the log.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from skypacs.dimse import find, handlers
from skypacs.services.query import QueryService
from skypacs.services.store import StoreService
from skypacs.sop_classes import storage_sop_classes

logger = logging.getLogger(__name__)

MAX_ASSOCIATIONS = 32
UNCOMPRESSED_TRANSFER_SYNTAXES = [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]


@dataclass(frozen=True)
class GatewayOptions:
    ae_title: str
    host: str
    port: int
    allowed_aes: frozenset[str] = frozenset()
    max_pdu: int = 0
    extra_sop_classes: frozenset[str] = field(default_factory=frozenset)
    maximum_associations: int = MAX_ASSOCIATIONS
    network_timeout: float = 60.0


def build_ae(options: GatewayOptions, *, find_scp: bool = False) -> AE:
    ae = AE(ae_title=options.ae_title)
    ae.maximum_pdu_size = options.max_pdu
    ae.maximum_associations = options.maximum_associations
    ae.network_timeout = options.network_timeout
    ae.dimse_timeout = options.network_timeout
    ae.acse_timeout = 30
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    for sop_class in sorted(storage_sop_classes() | options.extra_sop_classes):
        ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
    if find_scp:
        for sop_class in sorted(find.FIND_SOP_CLASSES):
            ae.add_supported_context(sop_class, UNCOMPRESSED_TRANSFER_SYNTAXES)
    if options.allowed_aes:
        ae.require_calling_aet = sorted(options.allowed_aes)
    return ae


class Gateway:
    """A running DIMSE server with a graceful stop: refuse new associations, finish current ones."""

    def __init__(
        self,
        options: GatewayOptions,
        store_service: StoreService,
        *,
        query_service: QueryService | None = None,
    ) -> None:
        self.options = options
        self.ae = build_ae(options, find_scp=query_service is not None)
        self._handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, handlers.handle_conn_open),
            (evt.EVT_C_ECHO, handlers.handle_echo),
            (evt.EVT_C_STORE, handlers.handle_store, [store_service]),
        ]
        if query_service is not None:
            self._handlers.append((evt.EVT_C_FIND, find.handle_find, [query_service, options.ae_title]))
        self.server: ThreadedAssociationServer | None = None
        self._stopped = threading.Event()

    @property
    def port(self) -> int:
        assert self.server is not None, "gateway not started"
        return int(self.server.server_address[1])

    def start(self) -> None:
        if not self.options.allowed_aes:
            logger.warning(
                "DIMSE gateway accepts associations from any calling AE title; set dimse.allowed_aes "
                "(or SKYPACS_ALLOWED_AES) to restrict it"
            )
        self.server = self.ae.start_server(
            (self.options.host, self.options.port), block=False, evt_handlers=self._handlers
        )
        logger.info("DIMSE listening as %s on %s:%d", self.options.ae_title, self.options.host, self.port)

    def stop(self, *, timeout: float = 30.0) -> None:
        """Stop accepting, let associations in progress finish (up to ``timeout``), abort the rest."""
        if self.server is None or self._stopped.is_set():
            return
        self._stopped.set()
        server = self.server
        active = server.active_associations
        server.shutdown()
        deadline = time.monotonic() + timeout
        for association in active:
            association.join(max(0.0, deadline - time.monotonic()))
        for association in server.active_associations:
            logger.warning("aborting association from %s still open at shutdown", association.requestor.ae_title)
            association.abort()
        logger.info("DIMSE gateway stopped")
