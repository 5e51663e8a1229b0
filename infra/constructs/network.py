"""The VPC every SkyPACS compute resource runs in: the gateway task, the Lambda functions, OpenSearch.

Two tiers of subnets. Private subnets with egress (through NAT) hold everything: the DIMSE gateway must
open associations to C-MOVE destinations outside AWS, and the functions call AWS APIs. Public subnets hold
only the NAT gateways (and, when the stack adds one, the gateway's Network Load Balancer).

Gateway endpoints for S3 and DynamoDB keep the archive's bulk traffic (DICOM objects, catalog reads and
writes) on the AWS network and off the NAT gateway, whose per-GB processing charge would otherwise apply to
every stored and retrieved image; gateway endpoints themselves cost nothing.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment as Ack
from aws_cdk import Aws, RemovalPolicy, Validations
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

#: How long VPC flow logs are kept: a year covers the look-back of most incident investigations.
FLOW_LOG_RETENTION = logs.RetentionDays.ONE_YEAR


def log_encryption_key(scope: Construct, construct_id: str, *, removal_policy: RemovalPolicy) -> kms.Key:
    """A rotating KMS key that CloudWatch Logs may use for the log groups of this account and region.

    Log groups hold request metadata that can name patients (audit logs, error messages), so cdk-nag
    HIPAA.Security-CloudWatchLogGroupEncrypted asks for a customer managed key. CloudWatch Logs encrypts
    with the key itself, so the key policy (not an IAM grant) must admit the regional logs service, bound
    by the encryption context to log groups of this account.
    """
    key = kms.Key(
        scope,
        construct_id,
        description="Encrypts SkyPACS CloudWatch log groups",
        enable_key_rotation=True,
        removal_policy=removal_policy,
    )
    key.add_to_resource_policy(
        iam.PolicyStatement(
            sid="AllowCloudWatchLogs",
            principals=[iam.ServicePrincipal(f"logs.{Aws.REGION}.amazonaws.com")],
            actions=["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
            resources=["*"],  # in a key policy, "*" is this key
            conditions={
                "ArnLike": {
                    "kms:EncryptionContext:aws:logs:arn": (
                        f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:*"
                    )
                }
            },
        )
    )
    return key


class Network(Construct):
    """The VPC, its flow logs and its gateway endpoints.

    Attributes:
        vpc: public and private-with-egress subnets in ``max_azs`` zones; the default security group
            admits nothing (every resource gets its own security group).
        log_key: the KMS key of the flow log group; other constructs may encrypt their log groups with it
            (one key for the stack's logs instead of one per construct).
        flow_log_group: receives the VPC flow logs (all traffic, accepted and rejected).
    """

    vpc: ec2.Vpc
    log_key: kms.Key
    flow_log_group: logs.LogGroup

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        max_azs: int = 2,
        nat_gateways: int = 1,
        removal_policy: RemovalPolicy = RemovalPolicy.RETAIN,
    ) -> None:
        """Create the VPC.

        Args:
            max_azs: availability zones to spread over (OpenSearch zone awareness needs two or three).
            nat_gateways: one is the cheap default; one per zone keeps egress up when a zone fails.
            removal_policy: of the flow log group and its key (RETAIN: network logs are audit evidence).
        """
        super().__init__(scope, construct_id)
        if not 1 <= nat_gateways <= max_azs:
            raise ValueError(f"nat_gateways must be between 1 and max_azs ({max_azs}), got {nat_gateways}")
        self.log_key = log_encryption_key(self, "LogKey", removal_policy=removal_policy)
        self.flow_log_group = logs.LogGroup(
            self,
            "FlowLogs",
            retention=FLOW_LOG_RETENTION,
            encryption_key=self.log_key,
            removal_policy=removal_policy,
        )
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=max_azs,
            nat_gateways=nat_gateways,
            subnet_configuration=[
                # Nothing launched here needs a public address of its own: NAT gateways and load
                # balancers get theirs explicitly (HIPAA.Security-VPCSubnetAutoAssignPublicIpDisabled).
                ec2.SubnetConfiguration(
                    name="Public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24, map_public_ip_on_launch=False
                ),
                ec2.SubnetConfiguration(name="Private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=20),
            ],
            restrict_default_security_group=True,
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3),
                "DynamoDB": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.DYNAMODB),
            },
            flow_logs={
                "All": ec2.FlowLogOptions(
                    destination=ec2.FlowLogDestination.to_cloud_watch_logs(self.flow_log_group),
                    traffic_type=ec2.FlowLogTrafficType.ALL,
                )
            },
        )
        Validations.of(self.vpc.node.find_child("All")).acknowledge(
            Ack(
                id="HIPAA.Security-IAMNoInlinePolicy",
                reason="The flow log delivery role's own policy: write to the flow log group only.",
            )
        )
        for subnet in self.vpc.public_subnets:
            Validations.of(subnet).acknowledge(
                Ack(
                    id="HIPAA.Security-VPCNoUnrestrictedRouteToIGW",
                    reason="The public subnets hold the NAT gateways, whose default route must lead to the "
                    "internet gateway; no instance runs in them and they assign no public addresses.",
                )
            )
