"""The OpenSearch domain behind the QueryIndex port: QIDO-RS, C-FIND, free text and facets.

Access is decided in three layers, each of which must admit a request:

1. the network: the domain lives in the VPC's private subnets, reachable only on 443 from security
   groups admitted with :meth:`Search.allow_from`;
2. IAM: the domain's access policy delegates to IAM in this account, and :meth:`Search.grant_read` /
   :meth:`Search.grant_write` give a principal the ``es:ESHttp*`` actions it needs;
3. fine-grained access control (FGAC): OpenSearch maps IAM roles to its own roles, ``skypacs_read``
   (search the archive's indices) and ``skypacs_write`` (also write documents to them). The mapping, and
   the indices themselves, are made by a custom resource (``functions/search_setup/handler.py``) running
   as the FGAC master user; :meth:`Search.add_reader` / :meth:`Search.add_writer` add roles to it.

The access policy is set on the domain resource itself rather than through the CDK's access-policy custom
resource (an extra Lambda function outside the VPC): that needs the domain ARN before the domain exists,
so the domain gets a name derived from its construct path (:func:`domain_name`).

Prerequisite, once per account: a VPC domain needs the OpenSearch service-linked role. An account that
never had a domain creates it with
``aws iam create-service-linked-role --aws-service-name opensearchservice.amazonaws.com``
(CloudFormation cannot declare it idempotently: the create fails where it exists).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import jsii
from aws_cdk import Acknowledgment as Ack
from aws_cdk import (
    CustomResource,
    Duration,
    IStableListProducer,
    Lazy,
    Names,
    RemovalPolicy,
    Stack,
    Validations,
)
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_opensearchservice as opensearch
from aws_cdk import custom_resources as cr
from constructs import Construct, IConstruct

from infra.bundling import LAMBDA_ARCHITECTURE, LAMBDA_RUNTIME, lambda_code
from infra.constructs.network import log_encryption_key

ENGINE_VERSION = opensearch.EngineVersion.OPENSEARCH_3_3
#: Index name prefix of the archive (``skypacs.aws`` defaults to the same when SKYPACS_OPENSEARCH_PREFIX
#: is unset).
INDEX_PREFIX = "skypacs"
#: Instance type of dedicated master nodes, when there are any.
MASTER_INSTANCE_TYPE = "m6g.large.search"
LOG_RETENTION = logs.RetentionDays.ONE_YEAR
SETUP_HANDLER = "functions.search_setup.handler.handler"

#: IAM actions of a reader: GET/HEAD, and POST for ``_search``, ``_msearch`` and ``_mget`` (FGAC keeps a
#: reader from writing with POST).
READ_ACTIONS = ("es:ESHttpGet", "es:ESHttpHead", "es:ESHttpPost")
WRITE_ACTIONS = (*READ_ACTIONS, "es:ESHttpPut", "es:ESHttpPatch", "es:ESHttpDelete")

_DOMAIN_NAME_LENGTH = 28


def domain_name(scope: Construct) -> str:
    """A domain name unique to ``scope``'s path (stack and construct ids, plus a hash), in the form
    OpenSearch requires: 3-28 characters of ``a-z0-9-``, starting with a letter."""
    name = re.sub(r"[^a-z0-9-]", "", Names.unique_resource_name(scope, max_length=_DOMAIN_NAME_LENGTH - 1).lower())
    return name if name[:1].isalpha() else f"d{name}"[:_DOMAIN_NAME_LENGTH]


def nag_resource(scope: IConstruct, arn: str) -> str:
    """A resource ARN as cdk-nag spells it in an IAM5 finding (``<Logical.Arn>/*``), so that the finding
    can be acknowledged on exactly that resource."""

    def flatten(node: object) -> str:
        if isinstance(node, str):
            return node.replace("${", "<").replace("}", ">")
        if isinstance(node, dict):
            if "Fn::Join" in node:
                delimiter, items = node["Fn::Join"]
                return str(delimiter).join(flatten(item) for item in items)
            if "Fn::GetAtt" in node:
                resource, attribute = node["Fn::GetAtt"]
                return f"<{flatten(resource)}.{flatten(attribute)}>"
            if "Ref" in node:
                return f"<{flatten(node['Ref'])}>"
            if "Fn::Sub" in node:
                return flatten(node["Fn::Sub"])
        raise ValueError(f"cannot flatten {node!r}")

    return flatten(Stack.of(scope).resolve(arn))


def acknowledge_iam5(principal: object, resources: Sequence[str], reason: str) -> None:
    """Acknowledge AwsSolutions-IAM5 for ``resources`` (ARN tokens) on ``principal``'s policies, when the
    principal is a construct of this app (a role made elsewhere acknowledges its own)."""
    if not isinstance(principal, Construct):
        return
    for resource in resources:
        Validations.of(principal).acknowledge(
            Ack(id=f"AwsSolutions-IAM5[Resource::{nag_resource(principal, resource)}]", reason=reason)
        )


@jsii.implements(IStableListProducer)
class _RoleArns:
    """The ARNs of roles added until synthesis (add_reader/add_writer may come after construction)."""

    def __init__(self, roles: list[iam.IRole]) -> None:
        self._roles = roles

    def produce(self) -> list[str]:
        return [role.role_arn for role in self._roles]


class Search(Construct):
    """The OpenSearch domain, its log groups, and the custom resource that prepares it for SkyPACS.

    Attributes:
        domain: the OpenSearch Service domain (VPC, FGAC, encryption at rest with ``key``, node-to-node
            encryption, HTTPS only with TLS 1.2).
        security_group: the domain's security group; :meth:`allow_from` admits clients on 443.
        key: the KMS key encrypting the domain's data at rest.
        index_prefix: prefix of the archive's index names (``SKYPACS_OPENSEARCH_PREFIX``).
        instance_shards: primary shards the setup gives the instances index.
        setup_function: the custom resource's Lambda function, whose role is the FGAC master user.
        log_groups: slow search, slow index, application (error) and audit logs, by kind.
    """

    domain: opensearch.Domain
    security_group: ec2.SecurityGroup
    key: kms.Key
    index_prefix: str
    instance_shards: int
    setup_function: lambda_.Function
    log_groups: dict[str, logs.LogGroup]

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        instance_type: str = "r6g.large.search",
        data_nodes: int = 2,
        volume_size_gib: int = 100,
        dedicated_master_nodes: int = 0,
        instance_shards: int | None = None,
        removal_policy: RemovalPolicy = RemovalPolicy.RETAIN,
        log_key: kms.IKey | None = None,
    ) -> None:
        """Create the domain.

        Args:
            vpc: its private subnets (with egress) hold the domain and the setup function.
            instance_type: of the data nodes (Graviton memory-optimised by default: the indices are
                mostly keyword fields held in heap and page cache).
            data_nodes: 1 for a trial; 2 or more spreads the nodes over zones (zone awareness), in
                multiples of the zone count (2, or 3 when the VPC has three zones and data_nodes allows).
            volume_size_gib: gp3 EBS storage per data node.
            dedicated_master_nodes: 0 (small deployments) or 3 (production clusters).
            instance_shards: primary shards of the instances index, fixed when the setup creates it
                (default: one per data node; ~50 GB of documents a shard, 36 for 100 million instances).
            removal_policy: of the domain, its key and its log groups.
            log_key: encrypts the log groups (``Network.log_key``); a key of its own when not given.
        """
        super().__init__(scope, construct_id)
        if data_nodes < 1:
            raise ValueError(f"data_nodes must be at least 1, got {data_nodes}")
        if dedicated_master_nodes not in (0, 3, 5):
            raise ValueError(f"dedicated_master_nodes must be 0, 3 or 5, got {dedicated_master_nodes}")
        subnets = vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, one_per_az=True).subnets
        zones = self._zone_count(data_nodes, len(subnets))
        self.index_prefix = INDEX_PREFIX
        self.instance_shards = instance_shards if instance_shards is not None else data_nodes
        if not 1 <= self.instance_shards <= 1024:
            raise ValueError(f"instance_shards must be from 1 to 1024, got {self.instance_shards}")
        self._readers: list[iam.IRole] = []
        self._writers: list[iam.IRole] = []

        self.key = kms.Key(
            self,
            "Key",
            description="Encrypts the SkyPACS OpenSearch domain at rest",
            enable_key_rotation=True,
            removal_policy=removal_policy,
        )
        log_key = log_key or log_encryption_key(self, "LogKey", removal_policy=removal_policy)
        self.log_groups = {
            kind: logs.LogGroup(
                self, f"{kind}Logs", retention=LOG_RETENTION, encryption_key=log_key, removal_policy=removal_policy
            )
            for kind in ("SlowSearch", "SlowIndex", "App", "Audit")
        }
        # One resource policy for the four groups (CloudWatch Logs allows ten per account and region),
        # declared here rather than by the Domain construct, which would add a custom resource for it.
        log_policy = logs.ResourcePolicy(
            self,
            "LogPolicy",
            policy_statements=[
                iam.PolicyStatement(
                    principals=[iam.ServicePrincipal("es.amazonaws.com")],
                    actions=["logs:PutLogEvents", "logs:CreateLogStream"],
                    resources=[group.log_group_arn for group in self.log_groups.values()],
                    conditions={"StringEquals": {"aws:SourceAccount": Stack.of(self).account}},
                )
            ],
        )

        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            description="SkyPACS OpenSearch domain: HTTPS from admitted clients only",
            allow_all_outbound=False,
        )
        # Made before the domain: its role is the domain's FGAC master user.
        self.setup_function = self._setup_function(vpc, log_key)
        assert self.setup_function.role is not None
        name = domain_name(self)
        self.domain = opensearch.Domain(
            self,
            "Domain",
            domain_name=name,
            version=ENGINE_VERSION,
            enable_version_upgrade=True,
            capacity=opensearch.CapacityConfig(
                data_nodes=data_nodes,
                data_node_instance_type=instance_type,
                master_nodes=dedicated_master_nodes or None,
                master_node_instance_type=MASTER_INSTANCE_TYPE if dedicated_master_nodes else None,
                # Multi-AZ with standby needs three zones and dedicated masters; cdk.json turns it on by
                # default, so it is decided here.
                multi_az_with_standby_enabled=False,
            ),
            ebs=opensearch.EbsOptions(volume_size=volume_size_gib, volume_type=ec2.EbsDeviceVolumeType.GP3),
            zone_awareness=(
                opensearch.ZoneAwarenessConfig(enabled=True, availability_zone_count=zones) if zones > 1 else None
            ),
            vpc=vpc,
            vpc_subnets=[ec2.SubnetSelection(subnets=subnets[:zones])],
            security_groups=[self.security_group],
            encryption_at_rest=opensearch.EncryptionAtRestOptions(enabled=True, kms_key=self.key),
            node_to_node_encryption=True,
            enforce_https=True,
            tls_security_policy=opensearch.TLSSecurityPolicy.TLS_1_2_PFS,
            fine_grained_access_control=opensearch.AdvancedSecurityOptions(master_user_arn=self.setup_function.role.role_arn),
            logging=opensearch.LoggingOptions(
                slow_search_log_enabled=True,
                slow_search_log_group=self.log_groups["SlowSearch"],
                slow_index_log_enabled=True,
                slow_index_log_group=self.log_groups["SlowIndex"],
                app_log_enabled=True,
                app_log_group=self.log_groups["App"],
                audit_log_enabled=True,
                audit_log_group=self.log_groups["Audit"],
            ),
            suppress_logs_resource_policy=True,
            enable_auto_software_update=True,
            off_peak_window_enabled=True,
            removal_policy=removal_policy,
        )
        self.domain.node.add_dependency(log_policy)
        # Delegate to IAM in this account (layer 2); FGAC (layer 3) decides per index.
        cfn_domain = self.domain.node.default_child
        assert isinstance(cfn_domain, opensearch.CfnDomain)
        cfn_domain.access_policies = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:{Stack.of(self).partition}:iam::{Stack.of(self).account}:root"},
                    "Action": list(WRITE_ACTIONS),
                    "Resource": Stack.of(self).format_arn(service="es", resource="domain", resource_name=f"{name}/*"),
                }
            ],
        }
        self._acknowledge_domain_findings(data_nodes=data_nodes, dedicated_master_nodes=dedicated_master_nodes)

        self.allow_from(self.setup_function.connections.security_groups[0])
        self.grant_write(self.setup_function)
        self._setup_resource(vpc, log_key)

    @staticmethod
    def _zone_count(data_nodes: int, subnet_count: int) -> int:
        if data_nodes == 1:
            return 1
        if subnet_count >= 3 and data_nodes % 3 == 0:
            return 3
        if subnet_count < 2:
            raise ValueError("zone awareness (data_nodes > 1) needs private subnets in two zones")
        if data_nodes % 2:
            raise ValueError(f"data_nodes over two zones must be even, got {data_nodes}")
        return 2

    # ------------------------------------------------------------------------------------ access

    @property
    def endpoint(self) -> str:
        """``https://`` URL of the domain (``SKYPACS_OPENSEARCH_ENDPOINT``)."""
        return f"https://{self.domain.domain_endpoint}"

    def grant_read(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let ``grantee`` search (IAM layer; map its role with :meth:`add_reader` for FGAC)."""
        return self._grant(grantee, READ_ACTIONS)

    def grant_write(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let ``grantee`` read and write documents (IAM layer; :meth:`add_writer` for FGAC)."""
        return self._grant(grantee, WRITE_ACTIONS)

    def _grant(self, grantee: iam.IGrantable, actions: Sequence[str]) -> iam.Grant:
        arn = self.domain.domain_arn
        grant = iam.Grant.add_to_principal(grantee=grantee, actions=list(actions), resource_arns=[arn, f"{arn}/*"])
        acknowledge_iam5(
            grantee.grant_principal,
            [f"{arn}/*"],
            "OpenSearch HTTP paths under this one domain (indices and APIs); fine-grained access control "
            "limits the role to the SkyPACS indices.",
        )
        return grant

    def allow_from(self, peer: ec2.ISecurityGroup) -> None:
        """Admit clients in ``peer`` to the domain on HTTPS (443)."""
        self.security_group.connections.allow_from(peer, ec2.Port.tcp(443), "HTTPS to OpenSearch")

    def add_reader(self, role: iam.IRole) -> None:
        """Map ``role`` to ``skypacs_read`` (FGAC); also grants the IAM read actions."""
        self._readers.append(role)
        self.grant_read(role)

    def add_writer(self, role: iam.IRole) -> None:
        """Map ``role`` to ``skypacs_write`` (FGAC); also grants the IAM write actions."""
        self._writers.append(role)
        self.grant_write(role)

    # ------------------------------------------------------------------------------------- setup

    def _setup_function(self, vpc: ec2.IVpc, log_key: kms.IKey) -> lambda_.Function:
        return lambda_.Function(
            self,
            "SetupFunction",
            description="Creates the SkyPACS OpenSearch indices and maps IAM roles to FGAC roles",
            code=lambda_code(),
            handler=SETUP_HANDLER,
            runtime=LAMBDA_RUNTIME,
            architecture=LAMBDA_ARCHITECTURE,
            memory_size=256,
            timeout=Duration.minutes(5),
            reserved_concurrent_executions=1,
            tracing=lambda_.Tracing.ACTIVE,
            vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            log_group=logs.LogGroup(
                self, "SetupFunctionLogs", retention=LOG_RETENTION, encryption_key=log_key,
                removal_policy=RemovalPolicy.DESTROY,
            ),
        )

    def _setup_resource(self, vpc: ec2.IVpc, log_key: kms.IKey) -> None:
        function = self.setup_function
        provider = cr.Provider(
            self,
            "SetupProvider",
            on_event_handler=function,
            vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            log_group=logs.LogGroup(
                self, "SetupProviderLogs", retention=LOG_RETENTION, encryption_key=log_key,
                removal_policy=RemovalPolicy.DESTROY,
            ),
        )
        setup = CustomResource(
            self,
            "Setup",
            service_token=provider.service_token,
            resource_type="Custom::SkyPacsSearchSetup",
            properties={
                "Endpoint": self.domain.domain_endpoint,
                "Prefix": self.index_prefix,
                "ReaderRoles": Lazy.list(_RoleArns(self._readers), omit_empty=False),
                "WriterRoles": Lazy.list(_RoleArns(self._writers), omit_empty=False),
                "InstanceShards": str(self.instance_shards),
            },
        )
        setup.node.add_dependency(self.domain)
        self._acknowledge_setup_findings(function, provider)

    # ------------------------------------------------------------------------------------ cdk-nag

    def _acknowledge_domain_findings(self, *, data_nodes: int, dedicated_master_nodes: int) -> None:
        acks = [
            Ack(
                id="AwsSolutions-OS3",
                reason="A VPC domain cannot use IP-based access policies; the security group admits clients "
                "(allow_from), IAM and fine-grained access control authorise them.",
            )
        ]
        if not dedicated_master_nodes:
            acks.append(
                Ack(
                    id="AwsSolutions-OS4",
                    reason="Dedicated master nodes are off for small deployments (dedicated_master_nodes=0); "
                    "production clusters set 3.",
                )
            )
        if data_nodes == 1:
            acks.append(
                Ack(
                    id="AwsSolutions-OS7",
                    reason="A single data node (data_nodes=1, trials) cannot spread over zones; any larger "
                    "deployment enables zone awareness.",
                )
            )
        for ack in acks:
            Validations.of(self.domain).acknowledge(ack)

    def _acknowledge_setup_findings(self, function: lambda_.Function, provider: cr.Provider) -> None:
        acknowledge_lambda_findings(function)
        acknowledge_lambda_findings(provider, xray=False)
        Validations.of(provider).acknowledge(
            Ack(
                id=f"AwsSolutions-IAM5[Resource::{nag_resource(function, function.function_arn)}:*]",
                reason="The CDK provider framework may invoke any version of the setup function.",
            )
        )
        for rule, reason in (
            ("HIPAA.Security-LambdaConcurrency", ("The CDK provider framework runs once per deployment; its "
             "reserved concurrency is not configurable.")),
            ("HIPAA.Security-LambdaDLQ", "Invoked synchronously by CloudFormation, which reports failures."),
        ):
            Validations.of(provider).acknowledge(Ack(id=rule, reason=reason))
        Validations.of(function).acknowledge(
            Ack(
                id="HIPAA.Security-LambdaDLQ",
                reason="Invoked synchronously by the provider framework; a failure fails the deployment.",
            )
        )


def acknowledge_lambda_findings(function: Construct, *, xray: bool = True) -> None:
    """The findings every SkyPACS function in the VPC shares, with their reasons."""
    for policy in ("AWSLambdaBasicExecutionRole", "AWSLambdaVPCAccessExecutionRole"):
        Validations.of(function).acknowledge(
            Ack(
                id=f"AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/{policy}]",
                reason="The AWS managed policies for a Lambda function in a VPC: its CloudWatch Logs and its "
                "network interfaces in the VPC, kept current by AWS.",
            )
        )
    Validations.of(function).acknowledge(
        Ack(
            id="HIPAA.Security-IAMNoInlinePolicy",
            reason="CDK grants write one AWS::IAM::Policy per role, attached to that role only; a managed "
            "policy would be just as scoped, and no other identity is meant to share it.",
        )
    )
    if xray:
        Validations.of(function).acknowledge(
            Ack(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="X-Ray PutTraceSegments/PutTelemetryRecords accept no resource other than *.",
            )
        )
        Validations.of(function).acknowledge(
            Ack(
                id="AwsSolutions-L1",
                reason="Every SkyPACS function runs the runtime its one code bundle is built for "
                "(infra.bundling.LAMBDA_RUNTIME: its wheels are built for python3.12).",
            )
        )
