"""The stack's settings from CDK context (``cdk.json`` or ``cdk deploy -c key=value``), read and checked in
one place.

Values given with ``-c`` arrive as strings, values from ``cdk.json`` as JSON (numbers, booleans, lists), so
every reader accepts both: ``-c gatewayAllowedAes=CT01,MR01`` and ``"gatewayAllowedAes": ["CT01", "MR01"]``
mean the same. A malformed value stops the synthesis with a message naming the key.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from constructs import Construct

SETTINGS: dict[str, str] = {
    "noncurrentRetentionDays": "days a replaced or deleted object version is kept (default 365)",
    "maxAzs": "availability zones of the VPC (default 2)",
    "natGateways": "NAT gateways (default 1; one per AZ for zone-failure tolerance)",
    "searchInstanceType": "OpenSearch data node type (default r6g.large.search)",
    "searchDataNodes": "OpenSearch data nodes (default 2)",
    "searchVolumeGiB": "EBS volume per data node, GiB (default 100)",
    "searchMasterNodes": "dedicated OpenSearch master nodes (default 0; 3 for production clusters)",
    "searchShards": "primary shards of the instances index (default: one per data node; fixed at creation)",
    "authIssuer": "OIDC issuer URL of an external identity provider (default: a Cognito user pool)",
    "authAudience": "accepted audiences (client ids) of that issuer, comma-separated",
    "authReadScope": "scope allowing search and retrieve (default skypacs/read)",
    "authWriteScope": "scope allowing store and delete (default skypacs/write)",
    "authWriteGroups": "groups (groups claim) of that issuer whose members may write with a read token",
    "authCallbackUrls": "OAuth callback URLs of the viewer (OHIF), comma-separated",
    "authViewerWrite": "give the Cognito viewer client the write scope too (default false)",
    "authDomainPrefix": "Cognito hosted sign-in domain prefix (default skypacs-<account>)",
    "corsOrigins": "browser origins allowed to call the API, comma-separated",
    "apiReservedConcurrency": "reserved concurrency of the API function (default 100; the authorizer reserves 20)",
    "indexerReservedConcurrency": "reserved concurrency of the indexer (default 50)",
    "gatewayAeTitle": "called AE title of the DIMSE gateway (default SKYPACS)",
    "gatewayAllowedAes": "calling AE titles allowed to associate, comma-separated (default: any)",
    "gatewayDestinations": "C-MOVE destinations, AE=host:port, comma-separated",
    "gatewayAllowedCidrs": "networks allowed to reach port 11112/2762, comma-separated (default: the VPC)",
    "gatewayInternetFacing": "put the gateway's NLB on the internet (default false)",
    "gatewayTlsCertificateArn": "ACM certificate for DICOM TLS on port 2762",
    "gatewayDesiredCount": "gateway tasks (default 2)",
    "gatewayMaxCount": "most gateway tasks under load (default 10)",
    "streamingDesiredCount": "streaming service tasks (default 1)",
    "streamingMaxCount": "most streaming tasks under load, autoscaled on CPU (default: streamingDesiredCount)",
    "streamingDomainName": "custom domain of the streaming service (with streamingCertificateArn)",
    "streamingCertificateArn": "its ACM certificate, in us-east-1 (CloudFront)",
    "alarmEmail": "address subscribed to the alarm topic",
    "plugins": "event plugins: a JSON list of {name, handler, detailTypes}",
}
"""Every context key the stack reads, with its meaning (README "Deploy to AWS" lists the same)."""


def unknown_keys(context: Mapping[str, Any]) -> list[str]:
    """Context keys shaped like ours (camelCase) that the stack does not read: a misspelt ``-c`` option
    would otherwise be ignored and deploy the default. CDK's own keys (``@aws-cdk/...``, ``aws:cdk:...``,
    ``availability-zones:...``, ``acknowledged-issue-numbers``) have other shapes and pass."""
    return sorted(key for key in context if key.isalnum() and key[:1].islower() and key not in SETTINGS)


class Settings:
    """Typed access to the context of ``scope``."""

    def __init__(self, scope: Construct) -> None:
        self._scope = scope
        unknown = unknown_keys(scope.node.get_all_context())
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, SETTINGS, n=1)
                hints.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
            raise ValueError(
                f"unknown context key(s) {', '.join(hints)}; the stack reads: {', '.join(SETTINGS)}"
            )

    def raw(self, key: str) -> Any:
        if key not in SETTINGS:
            raise KeyError(f"unknown context key {key!r}")
        return self._scope.node.try_get_context(key)

    def integer(self, key: str, default: int, *, minimum: int = 0) -> int:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str)
                                                                      and value.strip().lstrip("-").isdigit())):
            raise ValueError(f"context {key!r} must be a whole number, got {value!r}")
        number = int(value)
        if number < minimum:
            raise ValueError(f"context {key!r} must be at least {minimum}, got {number}")
        return number

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.raw(key)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.strip().lower() in ("true", "1", "yes")
        raise ValueError(f"context {key!r} must be true or false, got {value!r}")

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self.raw(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            return default
        if not isinstance(value, str):
            raise ValueError(f"context {key!r} must be a string, got {value!r}")  # noqa: TRY004 - context errors are ValueErrors
        return value.strip()

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.raw(key)
        if value is None:
            return ()
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return tuple(item.strip() for item in value if item.strip())
        raise ValueError(f"context {key!r} must be a comma-separated string or a list of strings")

    def destinations(self, key: str) -> dict[str, str]:
        value = self.raw(key)
        if isinstance(value, Mapping):
            return {str(title): str(address) for title, address in value.items()}
        result: dict[str, str] = {}
        for entry in self.strings(key):
            title, separator, address = entry.partition("=")
            host, colon, port = address.rpartition(":")
            if not separator or not colon or not host or not port.isdigit():
                raise ValueError(f"context {key!r}: {entry!r} is not AE=host:port")
            result[title.strip()] = address.strip()
        return result
