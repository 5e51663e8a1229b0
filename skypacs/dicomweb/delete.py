"""DELETE of studies, series and instances (the resources of PS3.18 10.4, removed as a whole).

PS3.18 defines no DELETE transaction; this follows what DICOMweb archives and viewers expect (dcm4chee,
Orthanc, OHIF's delete action): ``DELETE`` on the WADO-RS resource path answers 204 No Content once
everything under it is gone, 404 when nothing matches (so a repeated DELETE is a 404), 400 for a path
whose UIDs are not UIDs. What a delete does, in which order, and how a failed one is retried is
:mod:`skypacs.services.delete`'s business.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from skypacs.dicomweb.http import Request, Response, Route
from skypacs.dicomweb.wado import INSTANCE, SERIES, STUDY

if TYPE_CHECKING:
    from skypacs.services.delete import DeleteService


def routes(service: DeleteService) -> list[Route]:
    """The DELETE routes, bound to ``service``."""

    def delete_study(_request: Request, params: Mapping[str, str]) -> Response:
        service.delete_study(params["study"])
        return _no_content()

    def delete_series(_request: Request, params: Mapping[str, str]) -> Response:
        service.delete_series(params["study"], params["series"])
        return _no_content()

    def delete_instance(_request: Request, params: Mapping[str, str]) -> Response:
        service.delete_instance(params["study"], params["series"], params["instance"])
        return _no_content()

    return [
        Route("DELETE", STUDY, delete_study, "delete-study"),
        Route("DELETE", SERIES, delete_series, "delete-series"),
        Route("DELETE", INSTANCE, delete_instance, "delete-instance"),
    ]


def _no_content() -> Response:
    return Response(204, {}, ())
