"""Signed URLs: how a retrieve too large for Lambda is handed to the streaming service on AWS.

The large-retrieval path (DESIGN.md "Limits that shape the AWS design"). API Gateway + Lambda answer
at most 6 MB (about 4.5 MB of binary once base64-encoded) and 10 MB through API Gateway. Instances,
frames, metadata, rendered images and thumbnails of typical CT and MR objects fit; whole studies and
series do not. So:

1. The Chalice app answers study and series retrieval, and any other answer that turns out larger
   than the limit, with ``303 See Other`` to the same resource on the *streaming service*, the same
   route table (:func:`skypacs.dicomweb.dicomweb_router`) served by waitress in a container (ECS
   Fargate behind a load balancer; ``skypacs dicomweb`` is its command), streaming from S3 part by part
   in bounded memory, with no size limit.
2. The ``Location`` carries a signature: HMAC-SHA256 over the method, the path below the DICOMweb root,
   the sorted query and an expiry time, under a key both sides share (``SKYPACS_URL_SIGNING_KEY``, a
   Secrets Manager secret in the CDK app). HTTP clients drop ``Authorization`` when a redirect goes to
   another host (``requests`` does, and so ``dicomweb-client``), so the URL itself must be the
   credential, the way a presigned S3 URL is. It grants one GET of one resource for
   :data:`DEFAULT_LIFETIME` seconds.
3. The streaming service serves only requests with a valid signature (plus its health checks), so it
   is never an unauthenticated door to the archive.

Why not presigned S3 URLs alone: a WADO-RS study answer is one multipart body built from many objects
(and transcoded on demand), which S3 cannot produce. Why not Lambda response streaming: Python Lambda
runtimes cannot stream responses, and streamed responses are capped at 20 MB anyway.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence
from urllib.parse import quote, urlencode

from skypacs.errors import AccessDenied

EXPIRES_PARAMETER = "X-SkyPACS-Expires"
SIGNATURE_PARAMETER = "X-SkyPACS-Signature"
DEFAULT_LIFETIME = 300
"""Seconds a signed URL stays valid: long enough to follow a redirect, short enough to leak harmlessly."""
MINIMUM_KEY_BYTES = 32


def _canonical(method: str, path: str, query: Sequence[tuple[str, str]], expires: int) -> bytes:
    pairs = sorted((name, value) for name, value in query if name not in (EXPIRES_PARAMETER, SIGNATURE_PARAMETER))
    canonical_query = urlencode(pairs, quote_via=quote)
    return f"{method.upper()}\n{path}\n{canonical_query}\n{expires}".encode()


def _signature(key: bytes, method: str, path: str, query: Sequence[tuple[str, str]], expires: int) -> str:
    return hmac.new(key, _canonical(method, path, query, expires), hashlib.sha256).hexdigest()


def check_key(key: bytes) -> bytes:
    if len(key) < MINIMUM_KEY_BYTES:
        raise ValueError(f"the URL signing key must have at least {MINIMUM_KEY_BYTES} bytes")
    return key


def sign(
    key: bytes,
    path: str,
    query: Sequence[tuple[str, str]] = (),
    *,
    method: str = "GET",
    lifetime: int = DEFAULT_LIFETIME,
    now: float | None = None,
) -> list[tuple[str, str]]:
    """The query of the signed URL for ``path`` (relative to the DICOMweb root): ``query`` plus the
    expiry and the signature."""
    expires = int((time.time() if now is None else now) + lifetime)
    kept = [(name, value) for name, value in query if name not in (EXPIRES_PARAMETER, SIGNATURE_PARAMETER)]
    signature = _signature(check_key(key), method, path, kept, expires)
    return [*kept, (EXPIRES_PARAMETER, str(expires)), (SIGNATURE_PARAMETER, signature)]


def signed_url(base_url: str, key: bytes, path: str, query: Sequence[tuple[str, str]] = (),
               *, lifetime: int = DEFAULT_LIFETIME, now: float | None = None) -> str:
    """``{base_url}{path}?...&X-SkyPACS-Expires=...&X-SkyPACS-Signature=...``."""
    signed = sign(key, path, query, lifetime=lifetime, now=now)
    return f"{base_url.rstrip('/')}{quote(path)}?{urlencode(signed, quote_via=quote)}"


def verify(
    key: bytes, method: str, path: str, query: Sequence[tuple[str, str]], *, now: float | None = None
) -> list[tuple[str, str]]:
    """The request's query without the signature parameters, if the signature is valid and unexpired;
    else AccessDenied (403), saying which (never why a signature differs)."""
    values = dict(query)
    expires_text, signature = values.get(EXPIRES_PARAMETER), values.get(SIGNATURE_PARAMETER)
    if not expires_text or not signature:
        raise AccessDenied("this service serves signed URLs only (ask the DICOMweb API for the resource)")
    try:
        expires = int(expires_text)
    except ValueError:
        raise AccessDenied("malformed signed URL") from None
    if expires < (time.time() if now is None else now):
        raise AccessDenied("the signed URL has expired; ask the DICOMweb API again")
    method = "GET" if method.upper() == "HEAD" else method
    expected = _signature(check_key(key), method, path, query, expires)
    if not hmac.compare_digest(expected, signature):
        raise AccessDenied("invalid URL signature")
    return [(name, value) for name, value in query if name not in (EXPIRES_PARAMETER, SIGNATURE_PARAMETER)]
