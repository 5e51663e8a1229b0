"""DICOMweb: the routes and service functions both HTTP adapters serve (DESIGN.md "HTTP edges").

:func:`dicomweb_router` is the one route table: the embedded server (:mod:`skypacs.dicomweb.server`)
mounts it under ``/dicom-web``, the Chalice app (``functions/dicomweb/app.py``) registers each of its
routes with API Gateway.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from skypacs.dicomweb import delete, qido, stow, uploads, wado
from skypacs.dicomweb.http import Route, Router, health_routes
from skypacs.query.model import DEFAULT_MAX_LIMIT

if TYPE_CHECKING:
    from skypacs.dicomweb.qido import Searcher
    from skypacs.services.delete import DeleteService
    from skypacs.services.retrieve import RetrieveService
    from skypacs.services.store import StoreService
    from skypacs.services.uploads import UploadService


def dicomweb_router(
    query_service: Searcher,
    retrieve_service: RetrieveService | None = None,
    *,
    store_service: StoreService | None = None,
    delete_service: DeleteService | None = None,
    upload_service: UploadService | None = None,
    max_limit: int = DEFAULT_MAX_LIMIT,
) -> Router:
    """Health checks, QIDO-RS and (given the services) WADO-RS, STOW-RS, DELETE and direct uploads."""
    routes: list[Route] = [*health_routes(), *qido.routes(query_service, max_limit=max_limit)]
    if retrieve_service is not None:
        routes.extend(wado.routes(retrieve_service))
    if store_service is not None:
        routes.extend(stow.routes(store_service))
    if delete_service is not None:
        routes.extend(delete.routes(delete_service))
    if upload_service is not None:
        routes.extend(uploads.routes(upload_service))
    return Router(routes)


__all__ = ["dicomweb_router"]
