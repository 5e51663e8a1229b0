"""The SkyPACS stack: composes the constructs, grants access between them, and emits outputs.

Environment-agnostic (no account or region), so ``cdk synth`` runs offline without credentials.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Duration, Stack
from constructs import Construct

from infra.constructs.storage import DEFAULT_NONCURRENT_RETENTION_DAYS, Storage

#: Context key (``cdk.json`` or ``cdk synth -c noncurrentRetentionDays=N``): days a replaced or deleted
#: DICOM object version is kept.
NONCURRENT_RETENTION_DAYS_CONTEXT = "noncurrentRetentionDays"


class SkyPacsStack(Stack):
    """Everything SkyPACS deploys to one account and region."""

    storage: Storage

    def __init__(self, scope: Construct, construct_id: str, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        retention_days = self._context_days(
            NONCURRENT_RETENTION_DAYS_CONTEXT, default=DEFAULT_NONCURRENT_RETENTION_DAYS
        )
        self.storage = Storage(self, "Storage", noncurrent_version_retention=Duration.days(retention_days))
        CfnOutput(
            self, "BucketName", value=self.storage.bucket.bucket_name, description="DICOM object bucket"
        )

    def _context_days(self, key: str, *, default: int) -> int:
        # Values given with `-c key=value` arrive as strings, values from cdk.json as numbers.
        raw = self.node.try_get_context(key)
        if raw is None:
            return default
        if isinstance(raw, int) and not isinstance(raw, bool):
            days = raw
        elif isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
            days = int(raw)
        else:
            raise ValueError(f"context {key!r} must be a whole number of days, got {raw!r}")
        if days < 1:
            raise ValueError(f"context {key!r} must be at least 1, got {days}")
        return days
