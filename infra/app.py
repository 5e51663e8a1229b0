"""CDK entry point (``cdk.json``: ``python3 -m infra.app``).

cdk-nag v3 runs as a CDK policy-validation plugin (``Validations.of(app).add_plugins``), not as an Aspect
as in v2: findings that are not acknowledged with ``Validations.of(construct).acknowledge(...)`` fail the
synthesis and are listed in ``policy-validation-report.json`` in the cloud assembly.
"""

from __future__ import annotations

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks

from infra.stack import SkyPacsStack

STACK_ID = "SkyPacs"


def build_app(app: cdk.App | None = None) -> tuple[cdk.App, SkyPacsStack]:
    """Add the SkyPACS stack and the AwsSolutions and HIPAA Security checks to ``app`` (a new
    ``cdk.App()`` by default)."""
    app = app if app is not None else cdk.App()
    stack = SkyPacsStack(app, STACK_ID, description="SkyPACS: serverless PACS archive")
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app), HIPAASecurityChecks(app))
    return app, stack


def main() -> None:
    app, _ = build_app()
    app.synth()


if __name__ == "__main__":
    main()
