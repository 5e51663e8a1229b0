"""The DICOMweb API's OpenAPI definition for API Gateway, built from the Chalice app's own route table.

Why a definition rather than one ``Resource``/``Method`` construct per route: API Gateway would need a
Lambda permission per method (dozens), while a definition needs one, and it states the whole API in one
reviewable document, as ``chalice package`` would. Each path and method is exactly what Chalice
registered (``app.routes``), so ``requestContext.resourcePath`` matches Chalice's lookup; every method is
a Lambda proxy integration (the REST payload format Chalice speaks).

Every method but OPTIONS (CORS preflights, which browsers send without credentials) and the health
check requires the OIDC authorizer. Gateway responses (401 and 403 from the authorizer, throttling,
integration errors) carry CORS headers, so that a browser viewer sees a 401 as a 401 and can log in
again, instead of an opaque CORS failure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

AUTHORIZER = "oidc"
PUBLIC_PATHS = frozenset({"/health"})
"""Paths any caller may GET: the load balancer's and the operator's health check; they name no data."""
TOKEN_PATTERN = r"^[Bb]earer [-0-9A-Za-z._~+/]+=*$"
"""API Gateway answers 401 itself for an Authorization header of another shape, without invoking the
authorizer (one less Lambda call per junk request)."""
GATEWAY_RESPONSES = ("UNAUTHORIZED", "ACCESS_DENIED", "DEFAULT_4XX", "DEFAULT_5XX")


def lambda_invocation_uri(partition: str, region: str, function_arn: str) -> str:
    return f"arn:{partition}:apigateway:{region}:lambda:path/2015-03-31/functions/{function_arn}/invocations"


def openapi_definition(
    routes: Mapping[str, Iterable[str]],
    *,
    title: str,
    integration_uri: str,
    authorizer_uri: str,
    binary_media_types: Sequence[str],
    authorizer_ttl_seconds: int = 300,
    cors: bool = False,
) -> dict[str, Any]:
    """OpenAPI 3 with the ``x-amazon-apigateway-*`` extensions: ``routes`` maps each path (Chalice's
    ``/studies/{study}`` form) to its HTTP methods."""
    paths: dict[str, Any] = {}
    for path, methods in sorted(routes.items()):
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"{([^}]+)}", path)
        ]
        operations: dict[str, Any] = {}
        for method in sorted(set(methods)):
            operation: dict[str, Any] = {
                "responses": {"default": {"description": "DICOMweb answer"}},
                "x-amazon-apigateway-integration": {
                    "type": "aws_proxy", "httpMethod": "POST", "uri": integration_uri,
                    "passthroughBehavior": "when_no_match",
                },
            }
            if parameters:
                operation["parameters"] = parameters
            if method != "OPTIONS" and path not in PUBLIC_PATHS:
                operation["security"] = [{AUTHORIZER: []}]
            operations[method.lower()] = operation
        paths[path] = operations
    document: dict[str, Any] = {
        "openapi": "3.0.1",
        "info": {"title": title, "version": "1.0"},
        "paths": paths,
        "components": {"securitySchemes": {AUTHORIZER: {
            "type": "apiKey", "name": "Authorization", "in": "header",
            "x-amazon-apigateway-authtype": "custom",
            "x-amazon-apigateway-authorizer": {
                "type": "token", "authorizerUri": authorizer_uri,
                "authorizerResultTtlInSeconds": authorizer_ttl_seconds,
                "identityValidationExpression": TOKEN_PATTERN,
            },
        }}},
        "x-amazon-apigateway-binary-media-types": list(binary_media_types),
    }
    if cors:
        document["x-amazon-apigateway-gateway-responses"] = {
            name: {"responseParameters": {
                # The caller's origin, echoed on error answers only: they carry no data, and the
                # allowed origins are checked by the function for every real answer.
                "gatewayresponse.header.Access-Control-Allow-Origin": "method.request.header.Origin",
                "gatewayresponse.header.Vary": "'Origin'",
            }}
            for name in GATEWAY_RESPONSES
        }
    return document


def secured_operations(document: Mapping[str, Any]) -> dict[tuple[str, str], bool]:
    """(path, METHOD) -> whether the authorizer guards it (for tests and reviews)."""
    return {
        (path, method.upper()): bool(operation.get("security"))
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    }
