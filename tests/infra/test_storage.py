"""The Storage construct and the stack around it: CloudFormation assertions and cdk-nag AwsSolutions.

One app is synthesized per module: synthesis goes through the jsii Node.js process and dominates the run
time.
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Annotations, Match, Template
from cdk_nag import AwsSolutionsChecks

from infra.app import build_app
from infra.stack import SkyPacsStack

BUCKET = "AWS::S3::Bucket"
DICOM_BUCKET_ID = "StorageBucket"  # logical-id prefix; CDK appends a hash
LOGS_BUCKET_ID = "StorageAccessLogsBucket"


@pytest.fixture(scope="module")
def app_and_stack(
    cdk_context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> tuple[cdk.App, SkyPacsStack]:
    # The app exactly as `cdk synth` builds it: cdk.json context and the AwsSolutions plugin.
    app = cdk.App(context=cdk_context, outdir=str(tmp_path_factory.mktemp("cdk.out")))
    return build_app(app)


@pytest.fixture(scope="module")
def stack(app_and_stack: tuple[cdk.App, SkyPacsStack]) -> SkyPacsStack:
    return app_and_stack[1]


@pytest.fixture(scope="module")
def template(stack: SkyPacsStack) -> Template:
    # Synthesizes the whole app once, running the registered validation plugins (cdk-nag).
    return Template.from_stack(stack)


def _logical_id(template: Template, prefix: str, resource_type: str = BUCKET) -> str:
    ids = [i for i in template.find_resources(resource_type) if i.startswith(prefix)]
    assert len(ids) == 1, f"expected one {resource_type} named {prefix}*, found {ids}"
    return ids[0]


def _bucket_properties(template: Template, prefix: str) -> dict[str, Any]:
    resources = template.find_resources(BUCKET)
    return dict(resources[_logical_id(template, prefix)]["Properties"])


def _storage_ids(template: Template, resource_type: str, **props: Any) -> list[str]:
    return [i for i in template.find_resources(resource_type, props or None) if i.startswith("Storage")]


def test_two_buckets_and_one_key(template: Template) -> None:
    # Storage's own; the stack's other constructs (load balancer and CDN logs, ...) have buckets too.
    assert len(_storage_ids(template, BUCKET)) == 2
    assert len(_storage_ids(template, "AWS::KMS::Key")) == 1


def test_dicom_bucket_encrypted_with_rotating_kms_key(template: Template) -> None:
    key_id = _logical_id(template, "StorageKey", "AWS::KMS::Key")
    template.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})
    encryption = _bucket_properties(template, DICOM_BUCKET_ID)["BucketEncryption"]
    rules = encryption["ServerSideEncryptionConfiguration"]
    assert rules == [
        {
            "BucketKeyEnabled": True,
            "ServerSideEncryptionByDefault": {
                "SSEAlgorithm": "aws:kms",
                "KMSMasterKeyID": {"Fn::GetAtt": [key_id, "Arn"]},
            },
        }
    ]


def test_logs_bucket_encrypted_with_s3_managed_keys(template: Template) -> None:
    # Server access log delivery supports SSE-S3 destinations only.
    encryption = _bucket_properties(template, LOGS_BUCKET_ID)["BucketEncryption"]
    rules = encryption["ServerSideEncryptionConfiguration"]
    assert rules == [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]


def test_dicom_bucket_versioned(template: Template) -> None:
    assert _bucket_properties(template, DICOM_BUCKET_ID)["VersioningConfiguration"] == {"Status": "Enabled"}


@pytest.mark.parametrize("prefix", [DICOM_BUCKET_ID, LOGS_BUCKET_ID])
def test_public_access_blocked_and_acls_disabled(template: Template, prefix: str) -> None:
    props = _bucket_properties(template, prefix)
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    assert "AccessControl" not in props


@pytest.mark.parametrize("prefix", [DICOM_BUCKET_ID, LOGS_BUCKET_ID])
def test_bucket_policy_denies_requests_without_tls(template: Template, prefix: str) -> None:
    bucket_id = _logical_id(template, prefix)
    template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": bucket_id},
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Action": "s3:*",
                                "Principal": {"AWS": "*"},
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                                "Resource": Match.array_with([{"Fn::GetAtt": [bucket_id, "Arn"]}]),
                            }
                        )
                    ]
                )
            },
        },
    )


def test_server_access_logs_delivered_to_logs_bucket_by_policy(template: Template) -> None:
    logs_id = _logical_id(template, LOGS_BUCKET_ID)
    dicom_id = _logical_id(template, DICOM_BUCKET_ID)
    assert _bucket_properties(template, DICOM_BUCKET_ID)["LoggingConfiguration"] == {
        "DestinationBucketName": {"Ref": logs_id},
        "LogFilePrefix": "dicom-bucket/",
    }
    template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": logs_id},
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Allow",
                                "Action": "s3:PutObject",
                                "Principal": {"Service": "logging.s3.amazonaws.com"},
                                "Condition": Match.object_like(
                                    {"ArnLike": {"aws:SourceArn": {"Fn::GetAtt": [dicom_id, "Arn"]}}}
                                ),
                            }
                        )
                    ]
                )
            },
        },
    )


def test_buckets_and_key_retained(template: Template) -> None:
    for resource_type, count in ((BUCKET, 2), ("AWS::KMS::Key", 1)):
        retained = _storage_ids(template, resource_type, DeletionPolicy="Retain", UpdateReplacePolicy="Retain")
        assert len(retained) == count, resource_type


def test_lifecycle_default_retention(template: Template) -> None:
    assert _bucket_properties(template, DICOM_BUCKET_ID)["LifecycleConfiguration"] == {
        "Rules": [
            {
                "Id": "NoncurrentVersions",
                "Status": "Enabled",
                "NoncurrentVersionTransitions": [{"StorageClass": "STANDARD_IA", "TransitionInDays": 30}],
                "NoncurrentVersionExpiration": {"NoncurrentDays": 365},
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
            }
        ]
    }


def test_stack_is_environment_agnostic(stack: SkyPacsStack) -> None:
    # No account/region lookups: `cdk synth` needs no credentials.
    assert cdk.Token.is_unresolved(stack.account)
    assert cdk.Token.is_unresolved(stack.region)


def test_bucket_exposed_and_output(stack: SkyPacsStack, template: Template) -> None:
    assert isinstance(stack.storage.bucket, s3.Bucket)
    template.has_output("BucketName", {"Value": {"Ref": _logical_id(template, DICOM_BUCKET_ID)}})


def test_cdk_json(cdk_json: dict[str, Any]) -> None:
    assert cdk_json["app"] == "python3 -m infra.app"
    assert cdk_json["context"]["noncurrentRetentionDays"] == 365
    assert cdk_json["context"]["@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy"] is True


# --- cdk-nag -------------------------------------------------------------------------------------------


def _findings(report: Any) -> list[str]:
    return [
        f"{v.severity} {v.rule_name} at {[r.construct_path for r in v.violating_resources]}: {v.description}"
        for v in report.violations
    ]


def test_no_unacknowledged_aws_solutions_findings(stack: SkyPacsStack) -> None:
    # cdk-nag v3 reports errors and warnings alike as violations; acknowledged rules are left out.
    report = AwsSolutionsChecks().validate_scope(stack)
    assert _findings(report) == []
    assert report.success


def test_app_synthesizes_with_nag_plugin(template: Template, stack: SkyPacsStack) -> None:
    # Template.from_stack synthesized the app with the AwsSolutions plugin registered; a violation
    # would have raised "ValidationFailed". No other error or warning annotation either.
    annotations = Annotations.from_stack(stack)
    assert annotations.find_error("*", Match.any_value()) == []
    assert annotations.find_warning("*", Match.any_value()) == []


def test_nag_check_is_live() -> None:
    # Guards the test above against passing vacuously: a bare bucket must be flagged.
    stack = cdk.Stack(cdk.App(), "NagControl")
    s3.Bucket(stack, "Bare")
    rules = {v.rule_name for v in AwsSolutionsChecks().validate_scope(stack).violations}
    assert {"AwsSolutions-S1", "AwsSolutions-S10"} <= rules


# --- context -------------------------------------------------------------------------------------------


def test_short_retention_from_cli_context_skips_transition(cdk_context: dict[str, Any]) -> None:
    # `cdk synth -c noncurrentRetentionDays=20` passes a string.
    app = cdk.App(context={**cdk_context, "noncurrentRetentionDays": "20"})
    stack = SkyPacsStack(app, "ShortRetention")
    buckets = Template.from_stack(stack).find_resources(BUCKET)
    (lifecycle,) = [
        b["Properties"]["LifecycleConfiguration"]
        for logical_id, b in buckets.items()
        if logical_id.startswith(DICOM_BUCKET_ID) and "LifecycleConfiguration" in b["Properties"]
    ]
    assert lifecycle["Rules"][0]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 20}
    assert "NoncurrentVersionTransitions" not in lifecycle["Rules"][0]


@pytest.mark.parametrize("value", ["0", "-5", "a year", 1.5, True, ""])
def test_invalid_retention_context_rejected(cdk_context: dict[str, Any], value: object) -> None:
    app = cdk.App(context={**cdk_context, "noncurrentRetentionDays": value})
    with pytest.raises(ValueError, match="noncurrentRetentionDays"):
        SkyPacsStack(app, "Invalid")
