"""DICOMweb: the routes and service functions both HTTP adapters serve (DESIGN.md "HTTP edges").

:func:`dicomweb_router` is the one route table: the embedded server (:mod:`skypacs.dicomweb.server`)
mounts it under ``/dicom-web``, the Chalice app (``functions/dicomweb/app.py``) registers each of its
routes with API Gateway.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from skypacs.dicomweb import qido
from skypacs.dicomweb.http import Router, health_routes
from skypacs.query.model import DEFAULT_MAX_LIMIT

if TYPE_CHECKING:
    from skypacs.dicomweb.qido import Searcher


def dicomweb_router(query_service: Searcher, *, max_limit: int = DEFAULT_MAX_LIMIT) -> Router:
    """Health checks and QIDO-RS (WADO-RS and STOW-RS join here as they arrive)."""
    return Router([*health_routes(), *qido.routes(query_service, max_limit=max_limit)])


__all__ = ["dicomweb_router"]
