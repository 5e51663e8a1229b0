"""API Gateway TOKEN authorizer for the DICOMweb API: an OIDC/JWT bearer token -> an IAM policy.

Thin edge: :mod:`skypacs.dicomweb.oidc` verifies the token and writes the policy. API Gateway answers
401 itself when this function raises ``Exception("Unauthorized")`` (the one message it recognises), and
403 when the returned policy does not allow the method; either way the request never reaches the API
Lambda. The verifier (and the issuer's keys it fetched) lives as long as the Lambda container.

Logs: one JSON line per decision, with the outcome, the reason of a refusal and a digest of the
subject, never the token or its claims.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from skypacs.dicomweb.oidc import OidcSettings, OidcVerifier, allowed_methods, api_policy
from skypacs.errors import Unauthenticated

logger = Logger(service="skypacs-authorizer")
_verifier: OidcVerifier | None = None


def verifier() -> OidcVerifier:
    global _verifier
    if _verifier is None:
        _verifier = OidcVerifier(OidcSettings.from_environ(os.environ))
    return _verifier


def set_verifier(value: OidcVerifier | None) -> None:
    """Replace the verifier (tests); ``None`` rebuilds it from the environment on next use."""
    global _verifier
    _verifier = value


def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        principal = verifier().verify(str(event.get("authorizationToken") or ""))
    except Unauthenticated as error:
        logger.info("token refused", extra={"outcome": "unauthenticated", "reason": str(error)})
        raise Exception("Unauthorized") from None  # noqa: TRY002 (API Gateway's contract: 401)
    policy = api_policy(principal, str(event["methodArn"]))
    logger.info("token accepted", extra={
        "outcome": "allowed" if principal.access else "no-scope",
        "subject": hashlib.sha256(principal.subject.encode()).hexdigest()[:16],
        "methods": list(allowed_methods(policy)),
    })
    return policy
