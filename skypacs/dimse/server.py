"""The DIMSE gateway's Application Entity: what it accepts, from whom, and how it stops.

Accepts Verification and every storage SOP class pynetdicom knows (plus configured private ones), each
with the common transfer syntaxes, compressed ones included (Explicit VR Little Endian preferred):
objects are stored as received, so storing never needs a codec. Given a query service, it also answers C-FIND in the Patient Root and
Study Root models (uncompressed transfer syntaxes); given retrieve sources (catalog and object store),
C-MOVE to the configured destinations and C-GET in both models (:mod:`skypacs.dimse.retrieve`). For
C-GET the storage contexts also accept an SCU that proposes to act as the Storage SCP (SCP/SCU Role
Selection, PS3.7 D.3.3.4); SCUs that propose no role selection keep the default roles, so plain C-STORE
is unchanged. A calling-AE allow-list applies when configured; without one the gateway is open to any
AE and says so in the log.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from skypacs.dimse import find, handlers, retrieve
from skypacs.dimse.permissions import Permissions
from skypacs.dimse.retrieve import RetrieveSources
from skypacs.services.query import QueryService
from skypacs.services.store import StoreService
from skypacs.sop_classes import storage_sop_classes

logger = logging.getLogger(__name__)

MAX_ASSOCIATIONS = 32
UNCOMPRESSED_TRANSFER_SYNTAXES = [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]
STORAGE_TRANSFER_SYNTAXES = [ExplicitVRLittleEndian] + [
    uid for uid in ALL_TRANSFER_SYNTAXES if uid != ExplicitVRLittleEndian
]
"""pynetdicom accepts, of the syntaxes an SCU proposes in one context, the first in this list: Explicit VR
Little Endian first, so that objects arrive with their VRs, and C-GET sends explicit objects as stored."""


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
    destinations: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    """C-MOVE destinations: AE title -> (host, port); a C-MOVE to any other AE is refused (0xA801)."""
    permissions: Permissions = field(default_factory=Permissions)
    """What each calling AE may do once associated (store/find/move/get); unconfigured = everything."""
    ssl_context: ssl.SSLContext | None = None
    """TLS (:func:`skypacs.dimse.tls.server_ssl_context`); None = plain TCP."""


def build_ae(options: GatewayOptions, *, find_scp: bool = False, retrieve_scp: bool = False) -> AE:
    ae = AE(ae_title=options.ae_title)
    ae.maximum_pdu_size = options.max_pdu
    ae.maximum_associations = options.maximum_associations
    ae.network_timeout = options.network_timeout
    ae.dimse_timeout = options.network_timeout
    ae.acse_timeout = 30
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    # Role selection (C-GET): accept whatever roles the SCU proposes; None keeps the default roles.
    role = True if retrieve_scp else None
    for sop_class in sorted(storage_sop_classes() | options.extra_sop_classes):
        ae.add_supported_context(sop_class, STORAGE_TRANSFER_SYNTAXES, scu_role=role, scp_role=role)
    if find_scp:
        for sop_class in sorted(find.FIND_SOP_CLASSES):
            ae.add_supported_context(sop_class, UNCOMPRESSED_TRANSFER_SYNTAXES)
    if retrieve_scp:
        for sop_class in sorted(retrieve.MOVE_SOP_CLASSES | retrieve.GET_SOP_CLASSES):
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
        retrieve_sources: RetrieveSources | None = None,
    ) -> None:
        self.options = options
        self.ae = build_ae(options, find_scp=query_service is not None, retrieve_scp=retrieve_sources is not None)
        self._handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, handlers.handle_conn_open),
            (evt.EVT_C_ECHO, handlers.handle_echo),
            (evt.EVT_C_STORE, handlers.handle_store, [store_service, options.permissions]),
        ]
        if query_service is not None:
            self._handlers.append(
                (evt.EVT_C_FIND, find.handle_find, [query_service, options.ae_title, options.permissions])
            )
        if retrieve_sources is not None:
            self._handlers.append((evt.EVT_C_MOVE, retrieve.handle_move,
                                   [retrieve_sources, dict(options.destinations), options.permissions]))
            self._handlers.append((evt.EVT_C_GET, retrieve.handle_get, [retrieve_sources, options.permissions]))
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
            (self.options.host, self.options.port), block=False, evt_handlers=self._handlers,
            ssl_context=self.options.ssl_context,
        )
        if self.options.permissions.configured:
            logger.info("DIMSE permissions apply to %d AE entries", len(self.options.permissions.grants))
        logger.info("DIMSE listening as %s on %s:%d%s", self.options.ae_title, self.options.host, self.port,
                    " (TLS)" if self.options.ssl_context is not None else "")

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
