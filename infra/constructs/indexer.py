"""The indexer: S3 "object created" -> SQS -> Lambda (``functions/indexer/handler.py``) -> ingest.

S3 notifies the queue of every object created under ``studies/`` and ``incoming/``; the function ingests
a batch of up to 100 at once (one OpenSearch ``_bulk`` and one rebuild of each series, study and patient
the batch touches; catalog records and events one by one) and reports failed records in
``batchItemFailures``, so only those come back after the visibility timeout. After :data:`MAX_RECEIVE_COUNT` receives a message moves to the
dead-letter queue, where it stays for 14 days: a burst of C-STOREs never loses an index entry (DESIGN.md).

Queue encryption: SSE-SQS (SQS managed keys). S3 event notifications can only reach an SSE-KMS queue whose
key policy lets ``s3.amazonaws.com`` use the key; SSE-SQS needs no such opening of a key policy, has no
per-request KMS charge on a queue that sees every stored object, and the messages hold object keys
(UIDs), never image data or metadata.

Replaying the dead-letter queue (after fixing what made the messages fail; ingest is idempotent, so a
replay never duplicates anything):

- console: SQS > the dead-letter queue (``IngestDeadLetterQueue`` output of the stack) > "Start DLQ redrive",
  destination "Redrive to source queue(s)";
- CLI: ``aws sqs start-message-move-task --source-arn <dead-letter queue ARN>`` (no destination: back to
  the source queue), then ``aws sqs list-message-move-tasks --source-arn <...>`` to follow it.

Quarantined objects are not failures: ingest moved them under ``quarantine/`` with a catalog record, and
the message was consumed.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment as Ack
from aws_cdk import Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.bundling import LAMBDA_ARCHITECTURE, LAMBDA_RUNTIME, lambda_code
from infra.constructs.network import log_encryption_key
from infra.constructs.search import Search, acknowledge_iam5, acknowledge_lambda_findings
from skypacs.adapters.dynamodb_catalog import SOP_INDEX
from skypacs.config import (
    ENV_BUCKET,
    ENV_CATALOG_TABLE,
    ENV_EVENT_BUS,
    ENV_OPENSEARCH_ENDPOINT,
    ENV_OPENSEARCH_PREFIX,
)
from skypacs.keys import CATALOG_METADATA_PREFIX, INCOMING_PREFIX, QUARANTINE_PREFIX, STUDIES_PREFIX

INDEXER_HANDLER = "functions.indexer.handler.handler"
FUNCTION_TIMEOUT = Duration.seconds(60)
MEMORY_MB = 1024
#: SQS batching window: up to this long to fill a batch, fewer invocations in a burst.
MAX_BATCHING_WINDOW = Duration.seconds(2)
#: Receives before a message goes to the dead-letter queue.
MAX_RECEIVE_COUNT = 5
DLQ_RETENTION = Duration.days(14)  # the SQS maximum
LOG_RETENTION = logs.RetentionDays.ONE_YEAR
#: Prefixes whose new objects are ingested (``functions/indexer/handler.py`` skips everything else).
NOTIFIED_PREFIXES = (STUDIES_PREFIX, INCOMING_PREFIX)


def visibility_timeout(function_timeout: Duration, batching_window: Duration) -> Duration:
    """AWS's rule for a queue feeding Lambda: at least six times the function timeout plus the batching
    window, so that a message is never redelivered while a throttled or retried invocation still has it."""
    return Duration.seconds(6 * function_timeout.to_seconds() + batching_window.to_seconds())


class Indexer(Construct):
    """The queue, its dead-letter queue, the bucket notifications and the indexer function.

    Attributes:
        function: the indexer Lambda function (in the VPC, X-Ray active, reserved concurrency).
        queue: receives the bucket's object-created notifications (SSE-SQS, TLS only).
        dead_letter_queue: messages that failed MAX_RECEIVE_COUNT times (SSE-SQS, TLS only, 14 days).
    """

    function: lambda_.Function
    queue: sqs.Queue
    dead_letter_queue: sqs.Queue

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket: s3.IBucket,
        bucket_key: kms.IKey,
        table: dynamodb.ITable,
        vpc: ec2.IVpc,
        search: Search | None = None,
        event_bus: events.IEventBus | None = None,
        reserved_concurrency: int = 50,
        batch_size: int = 100,
        log_key: kms.IKey | None = None,
    ) -> None:
        """Create the indexer.

        Args:
            bucket, bucket_key: the DICOM object bucket and its KMS key (``Storage``).
            table: the catalog table (``Catalog``).
            vpc: the function runs in its private subnets.
            search: the QueryIndex domain; without it ingest catalogs only.
            event_bus: where InstanceStored events go; without it nothing is published.
            reserved_concurrency: the function's reserved concurrency, also the event source's maximum
                concurrency (so SQS polling never outruns it into throttles).
            batch_size: SQS messages per invocation; a modality's series arriving together is indexed
                together, so larger batches mean fewer OpenSearch refreshes and level rebuilds.
            log_key: encrypts the function's log group (``Network.log_key``); a key of its own when not given.
        """
        super().__init__(scope, construct_id)
        if reserved_concurrency < 2:
            raise ValueError(f"reserved_concurrency must be at least 2 (SQS event sources), got {reserved_concurrency}")

        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=DLQ_RETENTION,
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=visibility_timeout(FUNCTION_TIMEOUT, MAX_BATCHING_WINDOW),
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letter_queue, max_receive_count=MAX_RECEIVE_COUNT),
        )
        for prefix in NOTIFIED_PREFIXES:
            bucket.add_event_notification(
                s3.EventType.OBJECT_CREATED, s3n.SqsDestination(self.queue), s3.NotificationKeyFilter(prefix=prefix)
            )

        environment = {
            ENV_BUCKET: bucket.bucket_name,
            ENV_CATALOG_TABLE: table.table_name,
            "POWERTOOLS_SERVICE_NAME": "skypacs-indexer",
        }
        if event_bus is not None:
            environment[ENV_EVENT_BUS] = event_bus.event_bus_name
        if search is not None:
            environment[ENV_OPENSEARCH_ENDPOINT] = search.endpoint
            environment[ENV_OPENSEARCH_PREFIX] = search.index_prefix

        log_key = log_key or log_encryption_key(self, "LogKey", removal_policy=RemovalPolicy.RETAIN)
        self.function = lambda_.Function(
            self,
            "Function",
            description="SkyPACS indexer: S3 object-created notifications (SQS) -> ingest",
            code=lambda_code(),
            handler=INDEXER_HANDLER,
            runtime=LAMBDA_RUNTIME,
            architecture=LAMBDA_ARCHITECTURE,
            memory_size=MEMORY_MB,
            timeout=FUNCTION_TIMEOUT,
            reserved_concurrent_executions=reserved_concurrency,
            tracing=lambda_.Tracing.ACTIVE,
            vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            environment=environment,
            log_group=logs.LogGroup(self, "FunctionLogs", retention=LOG_RETENTION, encryption_key=log_key),
        )
        self.function.add_event_source(
            event_sources.SqsEventSource(
                self.queue,
                batch_size=batch_size,
                max_batching_window=MAX_BATCHING_WINDOW,
                report_batch_item_failures=True,
                max_concurrency=reserved_concurrency,
            )
        )

        object_resources = self._grant_objects(bucket, bucket_key)
        self._grant_catalog(table)
        if event_bus is not None:
            event_bus.grant_put_events_to(self.function)
        if search is not None:
            search.allow_from(self.function.connections.security_groups[0])
            assert self.function.role is not None
            search.add_writer(self.function.role)
        self._acknowledge_findings(bucket, object_resources)

    def _grant_objects(self, bucket: s3.IBucket, bucket_key: kms.IKey) -> list[str]:
        """Exactly what ingest does to S3 (``skypacs.services.ingest``, ``skypacs.adapters.s3``):

        - read (HEAD and ranged GET) any notified object; ListBucket so that a key gone before ingest
          answers 404, which ingest treats as "missing", instead of 403;
        - move an object dropped under ``incoming/`` (or a non-canonical ``studies/`` key) to its canonical
          ``studies/`` key: copy (write ``studies/*``), then delete the source;
        - move an object that fails validation, or one superseded by a re-stored SOP Instance, from
          ``studies/`` or ``incoming/`` into ``quarantine/``: copy (write ``quarantine/*``), delete the
          source. So deletes are needed under ``incoming/`` and ``studies/`` alike; never under
          ``quarantine/``.

        Returns the object ARNs (with wildcards) the statements name.
        """
        role = self.function
        arn = bucket.bucket_arn
        role.add_to_role_policy(iam.PolicyStatement(actions=["s3:GetObject"], resources=[bucket.arn_for_objects("*")]))
        role.add_to_role_policy(iam.PolicyStatement(actions=["s3:ListBucket"], resources=[arn]))
        role.add_to_role_policy(
            iam.PolicyStatement(
                # Multipart copies (objects over 5 GB) also abort their own failed uploads.
                actions=["s3:PutObject", "s3:AbortMultipartUpload"],
                resources=[
                    bucket.arn_for_objects(f"{p}*") for p in (STUDIES_PREFIX, QUARANTINE_PREFIX, CATALOG_METADATA_PREFIX)
                ],
            )
        )
        role.add_to_role_policy(
            iam.PolicyStatement(
                actions=["s3:DeleteObject"],
                resources=[
                    bucket.arn_for_objects(f"{p}*") for p in (STUDIES_PREFIX, INCOMING_PREFIX, CATALOG_METADATA_PREFIX)
                ],
            )
        )
        # SSE-KMS: reading decrypts; writing (and copying) generates a data key under the bucket key.
        role.add_to_role_policy(
            iam.PolicyStatement(actions=["kms:Decrypt", "kms:GenerateDataKey"], resources=[bucket_key.key_arn])
        )
        return [
            bucket.arn_for_objects("*"),
            *(
                bucket.arn_for_objects(f"{p}*")
                for p in (STUDIES_PREFIX, QUARANTINE_PREFIX, INCOMING_PREFIX, CATALOG_METADATA_PREFIX)
            ),
        ]

    def _grant_catalog(self, table: dynamodb.ITable) -> None:
        """What :class:`skypacs.adapters.dynamodb_catalog.DynamoDbCatalog` calls: GetItem, Query (table and
        the SOP Instance index), TransactWriteItems (authorised as PutItem/DeleteItem) and DeleteItem."""
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:DeleteItem"],
                resources=[table.table_arn],
            )
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(actions=["dynamodb:Query"], resources=[f"{table.table_arn}/index/{SOP_INDEX}"])
        )
        if table.encryption_key is not None:
            self.function.add_to_role_policy(
                iam.PolicyStatement(
                    actions=["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"],
                    resources=[table.encryption_key.key_arn],
                )
            )

    def _acknowledge_findings(self, bucket: s3.IBucket, object_resources: list[str]) -> None:
        acknowledge_iam5(
            self.function.role,
            object_resources,
            "Objects of the one DICOM bucket, limited by key prefix to what ingest reads, writes and deletes.",
        )
        acknowledge_lambda_findings(self.function)
        Validations.of(self.function).acknowledge(
            Ack(
                id="HIPAA.Security-LambdaDLQ",
                reason="Invoked by an SQS event source mapping, never asynchronously: failed messages go to "
                "the queue's dead-letter queue (dead_letter_queue), which a function DLQ would not see.",
            )
        )
        notifications = bucket.node.try_find_child("Notifications")
        if notifications is not None:
            Validations.of(notifications).acknowledge(
                Ack(
                    id="HIPAA.Security-IAMNoInlinePolicy",
                    reason="CDK's bucket-notifications policy: s3:PutBucketNotification on this bucket only, "
                    "for the deployment-time handler.",
                )
            )
        # The bucket notifications handler is a CDK singleton at the stack root (one per stack).
        handler = Stack.of(self).node.try_find_child("BucketNotificationsHandler050a0587b7544547bf325f094a3db834")
        if handler is not None:
            Validations.of(handler).acknowledge(
                Ack(
                    id="AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                    "AWSLambdaBasicExecutionRole]",
                    reason="CDK's bucket-notifications custom resource handler; logs only.",
                )
            )
