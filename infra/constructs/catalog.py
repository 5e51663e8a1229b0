"""The catalog table: the DynamoDB side of the Catalog port, the archive's record of what is stored.

The schema is the one :func:`skypacs.adapters.dynamodb_catalog.create_catalog_table` creates for tests and
tools (string keys ``pk``/``sk``, the sparse keys-only GSI on ``SOPInstanceUID``), imported rather than
copied where the adapter names it, so the two cannot drift apart; tests/infra/test_data_plane.py compares
them.

Backups. Point-in-time recovery restores any second of the last 35 days; the AWS Backup plan keeps daily
recovery points for longer (HIPAA asks for both), in a vault encrypted with the table's key.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment as Ack
from aws_cdk import Duration, RemovalPolicy, Validations
from aws_cdk import aws_backup as backup
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_kms as kms
from constructs import Construct

from skypacs.adapters.dynamodb_catalog import SOP_INDEX

PARTITION_KEY = "pk"
SORT_KEY = "sk"
SOP_INDEX_KEY = "SOPInstanceUID"

#: Daily AWS Backup recovery points are kept this long (PITR covers the last 35 days at any second).
BACKUP_RETENTION = Duration.days(365)


class Catalog(Construct):
    """The catalog table, its KMS key and its backup plan.

    Attributes:
        table: on-demand, PITR, deletion protection, SSE with ``key``; the GSI ``SOP_INDEX``.
        key: the customer managed key (yearly rotation) encrypting the table and its backups;
            ``table.grant_*`` also grants its use.
        backup_plan: daily backups of ``table``.
    """

    table: dynamodb.Table
    key: kms.Key
    backup_plan: backup.BackupPlan

    def __init__(
        self, scope: Construct, construct_id: str, *, removal_policy: RemovalPolicy = RemovalPolicy.RETAIN
    ) -> None:
        """Create the table.

        Args:
            removal_policy: of the table, its key and the backup vault. RETAIN by default: the catalog
                says where every image of the archive is.
        """
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "Key",
            description="Encrypts the SkyPACS catalog table and its backups",
            enable_key_rotation=True,
            removal_policy=removal_policy,
        )
        self.table = dynamodb.Table(
            self,
            "Table",
            partition_key=dynamodb.Attribute(name=PARTITION_KEY, type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name=SORT_KEY, type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=self.key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            deletion_protection=True,
            removal_policy=removal_policy,
        )
        # Sparse: only instance items carry SOPInstanceUID. Keys only: the adapter reads the item itself
        # with a strongly consistent GetItem after the lookup.
        self.table.add_global_secondary_index(
            index_name=SOP_INDEX,
            partition_key=dynamodb.Attribute(name=SOP_INDEX_KEY, type=dynamodb.AttributeType.STRING),
            projection_type=dynamodb.ProjectionType.KEYS_ONLY,
        )

        vault = backup.BackupVault(self, "BackupVault", encryption_key=self.key, removal_policy=removal_policy)
        self.backup_plan = backup.BackupPlan(self, "BackupPlan", backup_vault=vault)
        self.backup_plan.add_rule(
            backup.BackupPlanRule(
                rule_name="Daily",
                schedule_expression=events.Schedule.cron(hour="3", minute="0"),
                delete_after=BACKUP_RETENTION,
            )
        )
        selection = self.backup_plan.add_selection(
            "Table", resources=[backup.BackupResource.from_dynamo_db_table(self.table)]
        )
        Validations.of(selection).acknowledge(
            Ack(
                id="AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AWSBackupServiceRolePolicyForBackup]",
                reason="AWS Backup assumes this role to back up the table; AWS maintains the policy as the "
                "service's own requirements change.",
            )
        )
