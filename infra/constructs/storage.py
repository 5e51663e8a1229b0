"""Object storage for DICOM Part 10 files: the S3 side of the ObjectStore port.

Objects are written once per version under ``studies/{Study}/series/{Series}/instances/{SOP}.dcm``
(DESIGN.md, Keys). A re-sent SOP Instance with other bytes replaces the current object; versioning keeps the
previous bytes as a noncurrent version for the consistency report, and the lifecycle rule bounds how long
those are kept.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment as Ack
from aws_cdk import Duration, RemovalPolicy, Validations
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

#: Days a replaced or deleted object version is kept unless the stack says otherwise.
DEFAULT_NONCURRENT_RETENTION_DAYS = 365

#: Noncurrent versions move to Standard-IA after this many days. S3 refuses transitions to Standard-IA
#: earlier than 30 days, and bills IA objects for 30 days at least.
NONCURRENT_TRANSITION_DAYS = 30

#: CDK feature flag: grant S3 log delivery with a bucket policy instead of an ACL.
SERVER_ACCESS_LOGS_USE_BUCKET_POLICY = "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy"

#: Parts of multipart uploads (large STOW-RS bodies, multi-frame objects) that never complete are removed.
INCOMPLETE_UPLOAD_DAYS = 7


class Storage(Construct):
    """The DICOM object bucket, its KMS key, and a separate bucket for its server access logs.

    Attributes:
        bucket: the DICOM object bucket (SSE-KMS with a customer managed key and S3 Bucket Keys).
        key: the KMS key that encrypts ``bucket``; ``bucket.grant_*`` also grants use of it.
        access_logs_bucket: receives the server access logs of ``bucket``.
    """

    bucket: s3.Bucket
    key: kms.Key
    access_logs_bucket: s3.Bucket

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        noncurrent_version_retention: Duration | None = None,
        removal_policy: RemovalPolicy = RemovalPolicy.RETAIN,
    ) -> None:
        """Create the buckets.

        Args:
            noncurrent_version_retention: how long a replaced or deleted object version is kept before S3
                expires it; whole days, at least one (default DEFAULT_NONCURRENT_RETENTION_DAYS).
            removal_policy: what happens to the buckets and the key when they leave the stack. RETAIN
                by default: an archive of medical images is never deleted by a deployment.
        """
        super().__init__(scope, construct_id)
        # Grant log delivery through the log bucket's policy rather than the LogDeliveryWrite ACL, which
        # BucketOwnerEnforced ownership (ACLs disabled) forbids. cdk.json sets this flag for the whole app;
        # setting it here too keeps the construct correct in an app without that context (context must be
        # set before any child is added).
        self.node.set_context(SERVER_ACCESS_LOGS_USE_BUCKET_POLICY, True)
        retention = noncurrent_version_retention or Duration.days(DEFAULT_NONCURRENT_RETENTION_DAYS)
        retention_days = int(retention.to_days())
        if retention_days < 1:
            raise ValueError(f"noncurrent_version_retention must be at least one day, got {retention_days}")

        # S3 server access logs can only be delivered to a bucket encrypted with SSE-S3, not SSE-KMS.
        self.access_logs_bucket = s3.Bucket(
            self,
            "AccessLogsBucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            # Who read which study is evidence: a deleted or overwritten log object stays recoverable.
            versioned=True,
            removal_policy=removal_policy,
        )
        Validations.of(self.access_logs_bucket).acknowledge(Ack(
            id="HIPAA.Security-S3DefaultEncryptionKMS",
            reason="S3 delivers server access logs only to buckets encrypted with SSE-S3, not SSE-KMS."))
        # cdk-nag AwsSolutions-S1 (server access logs) holds for this bucket without logs of its own because it
        # is the log destination of `bucket`; logging it into itself would log its own deliveries, without end.

        self.key = kms.Key(
            self,
            "Key",
            description="Encrypts SkyPACS DICOM objects at rest",
            enable_key_rotation=True,
            removal_policy=removal_policy,
        )

        # Standard-IA only pays off for versions kept past its 30-day minimum; shorter retentions expire
        # straight from Standard.
        noncurrent_transitions = (
            [
                s3.NoncurrentVersionTransition(
                    storage_class=s3.StorageClass.INFREQUENT_ACCESS,
                    transition_after=Duration.days(NONCURRENT_TRANSITION_DAYS),
                )
            ]
            if retention_days > NONCURRENT_TRANSITION_DAYS
            else None
        )
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            # One data key per bucket rather than per object: far fewer (billed) KMS requests on ingest.
            bucket_key_enabled=True,
            versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_logs_bucket,
            server_access_logs_prefix="dicom-bucket/",
            removal_policy=removal_policy,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="NoncurrentVersions",
                    noncurrent_version_transitions=noncurrent_transitions,
                    noncurrent_version_expiration=Duration.days(retention_days),
                    abort_incomplete_multipart_upload_after=Duration.days(INCOMPLETE_UPLOAD_DAYS),
                )
            ],
        )
        for bucket in (self.bucket, self.access_logs_bucket):
            Validations.of(bucket).acknowledge(Ack(
                id="HIPAA.Security-S3BucketReplicationEnabled",
                reason="Cross-region replication doubles storage cost and needs a second region's key and "
                "bucket: a disaster-recovery choice for the deploying team (docs/scale-plan.md), not a "
                "default. Versioning, the retained bucket and key, and S3's 11 nines cover durability."))

    def allow_browser_uploads(self, origins: list[str]) -> None:
        """Let browser pages on ``origins`` PUT to the presigned upload URLs of ``POST /uploads`` (keys
        under ``incoming/``; the URL's signature is what authorizes a PUT, CORS only lets the browser
        send it)."""
        if origins:
            self.bucket.add_cors_rule(
                allowed_methods=[s3.HttpMethods.PUT], allowed_origins=origins,
                allowed_headers=["Content-Type", "Content-MD5"], exposed_headers=["ETag"], max_age=600)
