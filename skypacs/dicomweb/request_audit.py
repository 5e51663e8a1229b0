"""The audit record of one DICOMweb request, for both HTTP edges (the embedded server, the Lambda API).

Which requests are audited and what a record names is decided here once: searches, retrievals, stores
(STOW-RS and upload URLs) and deletes, with the route, the UIDs of the path and the *names* of the query
parameters (never their values, which may be patient names or IDs). Health checks are not audited.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from skypacs.audit import audit
from skypacs.dicomweb.http import Router
from skypacs.errors import SkyPacsError

AUDITED_ROUTES = {"qido": "query", "wado": "retrieve", "stow": "store", "delete": "delete", "upload": "store"}
"""Route name prefix -> audit action (:mod:`skypacs.audit`)."""
PATH_UIDS = {"study": "StudyInstanceUID", "series": "SeriesInstanceUID", "instance": "SOPInstanceUID"}


def audit_request(router: Router, method: str, path: str, parameter_names: Iterable[str], *, who: str,
                  status: int, address: str) -> None:
    """One record for a request to ``path`` (relative to the DICOMweb root) that got ``status``."""
    try:
        route, params = router.resolve(method, path)
    except SkyPacsError:
        return
    action = AUDITED_ROUTES.get(route.name.partition("-")[0])
    if action is None:
        return
    what: dict[str, Any] = {"route": route.name}
    what.update({PATH_UIDS[name]: value for name, value in params.items() if name in PATH_UIDS})
    if action == "query":
        what["level"] = route.name.partition("-")[2].upper()
    what["parameters"] = sorted(set(parameter_names))
    audit(action, who=who, what=what, outcome="success" if status < 400 else "failure",
          protocol="DICOMweb", status=status, method=method, address=address)
