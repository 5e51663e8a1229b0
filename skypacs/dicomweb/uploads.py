"""``POST /uploads``: upload URLs for files too large for the API (:mod:`skypacs.services.uploads`).

Not a DICOMweb transaction: a SkyPACS extension beside STOW-RS, for the AWS deployment, where the API
takes request bodies of at most 10 MB. The answer lists one presigned ``PUT`` per requested file::

    POST /uploads?count=2          (write scope)
    201 {"uploads": [{"id": "...", "method": "PUT", "url": "https://...", "key": "incoming/uploads/....dcm",
                      "headers": {"Content-Type": "application/dicom"}, "expiresIn": 900}, ...]}

then ``curl -X PUT -H 'Content-Type: application/dicom' --upload-file big.dcm "$url"`` per file. Stored
instances appear in QIDO-RS and WADO-RS once indexed (seconds); refused ones are quarantined with their
reason, as for every other intake.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from skypacs.dicomweb.http import Request, Response, Route, json_response
from skypacs.errors import InvalidQuery

if TYPE_CHECKING:
    from skypacs.services.uploads import UploadService

UPLOADS = "/uploads"
DICOM = "application/dicom"


def routes(service: UploadService) -> list[Route]:
    def create(request: Request, _params: Mapping[str, str]) -> Response:
        values = [value for name, value in request.query if name == "count"]
        if len(values) > 1 or (values and not values[0].isdigit()):
            raise InvalidQuery("count must be one whole number")
        uploads = service.create(int(values[0]) if values else 1)
        return json_response({"uploads": [
            {"id": u.id, "method": "PUT", "url": u.url, "key": u.key, "headers": {"Content-Type": DICOM},
             "expiresIn": u.expires_seconds}
            for u in uploads
        ]}, status=201)

    return [Route("POST", UPLOADS, create, "upload-create")]
