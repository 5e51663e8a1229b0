"""Custom resource (``infra.constructs.search.Search``): create the QueryIndex indices and map IAM roles.

Why a custom resource. The domain runs with fine-grained access control (FGAC): an IAM role allowed by
the domain's access policy still sees nothing until an OpenSearch role is mapped to it. And the AWS
archive opens the index adapter with ``create_indices=False`` (:mod:`skypacs.aws`: no function should
need the right to create indices at run time), so the indices must exist before the first ingest. This
function runs as the domain's FGAC master user, once per deployment that changes its properties.

The CDK ``custom_resources.Provider`` framework speaks the CloudFormation protocol; this handler only
returns the physical id. Properties (strings, as CloudFormation passes them):

- ``Endpoint``: the domain endpoint (host name);
- ``Prefix``: the index name prefix (``skypacs``);
- ``ReaderRoles``, ``WriterRoles``: IAM role ARNs mapped to :data:`READ_ROLE` / :data:`WRITE_ROLE`;
- ``InstanceShards``: primary shards of the instances index (default 1). OpenSearch fixes it when the
  index is created: a later change applies to a new deployment's index, not to the existing one (a
  re-index into a new prefix is the way to re-shard).

It also sets slow log thresholds on the indices (:data:`SLOW_LOG_SETTINGS`) and the security plugin's
audit configuration (:data:`AUDIT_CONFIG`): the domain publishes those logs, but OpenSearch writes slow
logs only above a threshold and audit logs only once configured.

Create and Update apply everything (idempotent PUTs; existing indices are kept as they are). Delete does
nothing: the domain is retained with the stack's data, and so are its roles; removing them on a
replacement would cut off the roles the replacement has just mapped.

Everything that decides what is sent is a pure function below, tested without a cluster
(tests/infra/test_data_plane.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from skypacs.adapters.opensearch_index import (
    LEVEL_INDEX,
    SEQUENCE_INDEX,
    OpenSearchQueryIndex,
    opensearch_client,
)

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)

READ_ROLE = "skypacs_read"
WRITE_ROLE = "skypacs_write"
SECURITY_API = "/_plugins/_security/api"

#: Slow log thresholds set on the SkyPACS indices: OpenSearch publishes slow logs (to the domain's log
#: groups) only for operations above a threshold, and none is set by default.
SLOW_LOG_SETTINGS: Mapping[str, str] = {
    "index.search.slowlog.threshold.query.warn": "5s",
    "index.search.slowlog.threshold.query.info": "2s",
    "index.search.slowlog.threshold.fetch.warn": "1s",
    "index.indexing.slowlog.threshold.index.warn": "5s",
    "index.indexing.slowlog.threshold.index.info": "2s",
}

#: The security plugin's audit logging (``AUDIT_LOGS`` publishing delivers only what it is told to log):
#: REST requests refused or failing authentication, and index and security changes; never request
#: bodies, which hold DICOM metadata (patient data).
AUDIT_CONFIG: Mapping[str, Any] = {
    "enabled": True,
    "audit": {
        "enable_rest": True,
        "disabled_rest_categories": ["AUTHENTICATED", "GRANTED_PRIVILEGES"],
        "enable_transport": False,
        "disabled_transport_categories": ["AUTHENTICATED", "GRANTED_PRIVILEGES"],
        "resolve_bulk_requests": False,
        "log_request_body": False,
        "resolve_indices": True,
        "exclude_sensitive_headers": True,
        "ignore_users": [],
        "ignore_requests": [],
    },
    "compliance": {
        "enabled": True,
        "internal_config": True,
        "external_config": False,
        "read_metadata_only": True,
        "read_watched_fields": {},
        "read_ignore_users": [],
        "write_metadata_only": True,
        "write_log_diffs": False,
        "write_watched_indices": [],
        "write_ignore_users": [],
    },
}


@dataclass(frozen=True)
class SetupRequest:
    """What one Create/Update asks for."""

    endpoint: str
    prefix: str
    reader_roles: tuple[str, ...]
    writer_roles: tuple[str, ...]
    instance_shards: int = 1

    @classmethod
    def from_properties(cls, properties: Mapping[str, Any]) -> SetupRequest:
        endpoint = str(properties.get("Endpoint", "")).strip()
        prefix = str(properties.get("Prefix", "")).strip()
        if not endpoint or not prefix:
            raise ValueError("the Endpoint and Prefix properties are required")
        shards = str(properties.get("InstanceShards", "1")).strip() or "1"
        if not shards.isdigit() or not 1 <= int(shards) <= 1024:
            raise ValueError(f"InstanceShards must be a whole number from 1 to 1024, got {shards!r}")
        return cls(
            endpoint=endpoint,
            prefix=prefix,
            reader_roles=_arns(properties.get("ReaderRoles")),
            writer_roles=_arns(properties.get("WriterRoles")),
            instance_shards=int(shards),
        )


@dataclass(frozen=True)
class Call:
    """One REST call to the cluster."""

    method: str
    path: str
    body: Mapping[str, Any]


def _arns(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    values = [value] if isinstance(value, str) else list(value)
    return tuple(sorted({str(v).strip() for v in values if str(v).strip()}))


def index_names(prefix: str) -> list[str]:
    """The indices of one archive, named as the adapter names them (``{prefix}-instances``, ...).

    Named one by one rather than as ``{prefix}-*``, which would also cover the indices of an archive
    whose prefix merely starts with this one (``skypacs`` and ``skypacs-test``)."""
    return [f"{prefix}-{name}" for name in (*LEVEL_INDEX.values(), SEQUENCE_INDEX)]


def role_bodies(prefix: str) -> dict[str, dict[str, Any]]:
    """The two OpenSearch roles, limited to the archive's indices.

    Readers search (``_search``, ``_msearch``, ``_mget``: ``cluster_composite_ops_ro``); the writer also
    bulk-writes, updates the sequence counter and deletes documents (``crud``, ``cluster_composite_ops``
    for ``_bulk``). Neither may create, delete or re-map indices: that stays with this setup.
    """
    patterns = index_names(prefix)
    return {
        READ_ROLE: {
            "description": "SkyPACS QueryIndex: search (DICOMweb QIDO-RS, C-FIND)",
            "cluster_permissions": ["cluster_composite_ops_ro"],
            "index_permissions": [{"index_patterns": patterns, "allowed_actions": ["read"]}],
        },
        WRITE_ROLE: {
            "description": "SkyPACS QueryIndex: index and remove instances (indexer, delete)",
            "cluster_permissions": ["cluster_composite_ops"],
            "index_permissions": [{"index_patterns": patterns, "allowed_actions": ["crud"]}],
        },
    }


def role_mapping_body(role_arns: Sequence[str]) -> dict[str, Any]:
    """IAM roles as FGAC backend roles: a SigV4 request signed by a role session matches its role ARN."""
    return {"backend_roles": list(role_arns)}


def security_calls(request: SetupRequest) -> list[Call]:
    """Roles first, then their mappings (a mapping of a missing role is refused)."""
    calls = [Call("PUT", f"{SECURITY_API}/roles/{name}", body) for name, body in role_bodies(request.prefix).items()]
    for name, arns in ((READ_ROLE, request.reader_roles), (WRITE_ROLE, request.writer_roles)):
        calls.append(Call("PUT", f"{SECURITY_API}/rolesmapping/{name}", role_mapping_body(arns)))
    return calls


def slow_log_call(prefix: str) -> Call:
    return Call("PUT", f"/{','.join(index_names(prefix))}/_settings", {"index": dict(SLOW_LOG_SETTINGS)})


def audit_call() -> Call:
    return Call("PUT", f"{SECURITY_API}/audit/config", AUDIT_CONFIG)


def perform(client: Any, calls: Iterable[Call]) -> None:
    """Send ``calls`` through ``client.transport`` (an ``opensearchpy.OpenSearch``); errors propagate."""
    for call in calls:
        logger.info("%s %s", call.method, call.path)
        client.transport.perform_request(call.method, call.path, body=dict(call.body))


def apply(client: Any, request: SetupRequest, *, index_factory: Any = None) -> None:
    """Create the missing indices, set their slow log thresholds, define and map the roles, and turn
    on audit logging."""
    (index_factory or OpenSearchQueryIndex)(
        client, prefix=request.prefix, create_indices=True, shards=request.instance_shards
    )
    perform(client, [slow_log_call(request.prefix), *security_calls(request)])
    try:
        perform(client, [audit_call()])
    except Exception:
        # Audit configuration is an improvement, not a precondition of a working archive: a refusal
        # (a plugin version that rejects a field) is logged with its cause, and the deployment goes on.
        logger.exception("audit logging could not be configured; set it in OpenSearch Dashboards")


def physical_id(request: SetupRequest) -> str:
    """Stable across updates, so CloudFormation never sees a replacement (and never sends Delete for
    the previous one)."""
    return f"skypacs-search-setup-{request.prefix}"


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    request_type = event["RequestType"]
    if request_type == "Delete":
        return {"PhysicalResourceId": event["PhysicalResourceId"]}
    request = SetupRequest.from_properties(event["ResourceProperties"])
    client = opensearch_client(request.endpoint, region=os.environ["AWS_REGION"])
    apply(client, request)
    return {"PhysicalResourceId": physical_id(request)}
