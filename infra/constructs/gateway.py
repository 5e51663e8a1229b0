"""The DIMSE gateway on AWS: ``skypacs gateway`` on ECS Fargate behind a Network Load Balancer.

DIMSE is a long-lived TCP protocol (PS3.8), so the gateway is a container service, never a Lambda
(DESIGN.md, "Limits that shape the AWS design"). Modalities associate with the NLB on 11112 (plain DICOM
upper layer) and, when a certificate is given, on 2762 (the port PS3.15 B.1 assigns to DICOM over TLS),
where the NLB terminates TLS with an ACM certificate and forwards the plain association to 11112.

Internal by default: the NLB sits in the private subnets and admits only the VPC's own CIDR, because
modalities reach an archive over a site-to-site VPN or Direct Connect, not over the internet. An
internet-facing gateway must name the networks it admits (``allowed_cidrs``) and should use TLS.

The container image is built from the repository root with ``gateway/Dockerfile``; the streaming service
(:mod:`infra.constructs.streaming`) runs the same image with another command. Synthesis only stages the
build context (``.dockerignore`` keeps it to what ``pip install .`` needs); Docker runs at deploy time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from aws_cdk import (
    Acknowledgment,
    Aws,
    CfnCondition,
    CfnMapping,
    Duration,
    Fn,
    RemovalPolicy,
    Stack,
    Token,
    Validations,
)
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk.region_info import RegionInfo
from constructs import Construct, IConstruct

from infra.constructs.network import log_encryption_key
from infra.constructs.search import Search
from skypacs.config import (
    DEFAULT_AE_TITLE,
    DEFAULT_DIMSE_PORT,
    ENV_AE_TITLE,
    ENV_ALLOWED_AES,
    ENV_BUCKET,
    ENV_CATALOG_TABLE,
    ENV_DESTINATIONS,
    ENV_OPENSEARCH_ENDPOINT,
    ENV_OPENSEARCH_PREFIX,
    parse_address,
)
from skypacs.keys import CATALOG_METADATA_PREFIX, INCOMING_PREFIX, QUARANTINE_PREFIX, STUDIES_PREFIX

#: The build context of the image: the repository root (``gateway/Dockerfile`` copies ``pyproject.toml``
#: and ``skypacs/``).
REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = "gateway/Dockerfile"

#: DICOM upper layer port of the container and of the plain NLB listener.
DIMSE_PORT = DEFAULT_DIMSE_PORT
#: DICOM over TLS (PS3.15 B.1, IANA "dicom-tls").
DICOM_TLS_PORT = 2762

#: The Dockerfile's CMD and HEALTHCHECK, repeated in the task definition: ECS ignores HEALTHCHECK, and the
#: task definition should say what it runs (tests/unit/test_dockerfile.py keeps the two in step).
GATEWAY_COMMAND = ("skypacs", "gateway")
HEALTHCHECK_COMMAND = ("python", "-m", "skypacs.dimse.healthcheck")
HEALTHCHECK_INTERVAL = Duration.seconds(30)
HEALTHCHECK_TIMEOUT = Duration.seconds(10)
HEALTHCHECK_START_PERIOD = Duration.seconds(20)
HEALTHCHECK_RETRIES = 3

#: The image's numeric user (``USER 10001:10001``), also set on the container definition so that a
#: changed image cannot silently run as root.
CONTAINER_USER = "10001:10001"

#: ECS waits this long after SIGTERM before SIGKILL (Fargate allows at most 120 s): the gateway stops
#: accepting associations on SIGTERM and finishes the C-STOREs in flight. The NLB drains for as long.
GATEWAY_STOP_TIMEOUT = Duration.seconds(60)

#: Average CPU the service scales to keep (decoding is CPU-bound: C-GET/C-MOVE transcoding, parsing).
CPU_TARGET_PERCENT = 60

#: Retention of the services' log groups (and of the load balancer access logs, LOG_RETENTION_DAYS).
LOG_RETENTION = logs.RetentionDays.ONE_YEAR
LOG_RETENTION_DAYS = 365


def make_cluster(scope: Construct, construct_id: str, vpc: ec2.IVpc) -> ecs.Cluster:
    """An ECS cluster with Container Insights, for the gateway and the streaming service.

    The cluster belongs to the caller (one per stack, shared by every service); Container Insights gives
    per-task CPU, memory and network metrics, which the autoscaling and the alarms rely on.
    """
    return ecs.Cluster(scope, construct_id, vpc=vpc, container_insights_v2=ecs.ContainerInsights.ENABLED)


def container_image() -> ecs.ContainerImage:
    """The SkyPACS image: built by ``cdk deploy`` from the repository root with ``gateway/Dockerfile``.

    x86_64, matching the task definitions' runtime platform, so that the image built on a developer's
    ARM laptop still starts on Fargate.
    """
    return ecs.ContainerImage.from_asset(
        str(REPO_ROOT), file=DOCKERFILE, platform=ecr_assets.Platform.LINUX_AMD64
    )


def runtime_platform() -> ecs.RuntimePlatform:
    return ecs.RuntimePlatform(
        cpu_architecture=ecs.CpuArchitecture.X86_64,
        operating_system_family=ecs.OperatingSystemFamily.LINUX,
    )


def acknowledge(construct: IConstruct, reasons: Mapping[str, str]) -> None:
    """Acknowledge cdk-nag rules on ``construct`` (and its children): rule id (or one finding,
    ``AwsSolutions-IAM5[Resource::*]``) -> why the finding does not apply or is accepted."""
    Validations.of(construct).acknowledge(
        *(Acknowledgment(id=rule, reason=reason) for rule, reason in reasons.items())
    )


def _nag_resource(stack: Stack, value: str) -> str | None:
    """How cdk-nag names a resource in a finding id (``<LogicalId.Arn>/studies/*``), or None if the
    value is not one a single intrinsic expresses."""
    resolved = stack.resolve(value)
    if isinstance(resolved, str):
        return resolved
    parts = resolved.get("Fn::Join", [None, None])[1] if isinstance(resolved, dict) else None
    if not isinstance(parts, list):
        return None
    rendered = []
    for part in parts:
        if isinstance(part, str):
            rendered.append(part)
        elif isinstance(part, dict) and "Fn::GetAtt" in part:
            rendered.append("<{}.{}>".format(*part["Fn::GetAtt"]))
        elif isinstance(part, dict) and "Ref" in part:
            rendered.append(f"<{part['Ref']}>")
        else:
            return None
    return "".join(rendered)


def acknowledge_prefix_wildcards(construct: IConstruct, resources: Sequence[str]) -> None:
    """Acknowledge AwsSolutions-IAM5 for exactly these resources (object prefixes, table indexes): a
    wildcard below a named bucket prefix or table is the narrowest grant IAM can express for objects
    whose keys are UIDs. Other wildcards stay reported."""
    stack = Stack.of(construct)
    reason = (
        "Scoped to one prefix of the DICOM bucket (object keys are UIDs, unknown in advance) or to the "
        "indexes of the catalog table; actions are listed one by one."
    )
    names = [_nag_resource(stack, resource) for resource in resources]
    if any(name is None for name in names):
        acknowledge(construct, {"AwsSolutions-IAM5": reason})
        return
    acknowledge(construct, {f"AwsSolutions-IAM5[Resource::{name}]": reason for name in names})


def logs_key(scope: Construct, construct_id: str, description: str) -> kms.Key:
    """A customer managed key for CloudWatch Logs (and secrets) of one service: reading its logs (which
    name AE titles, hosts and UIDs) falls under the same key policy and CloudTrail record as the data."""
    key = log_encryption_key(scope, construct_id, removal_policy=RemovalPolicy.RETAIN)
    key.node.default_child.add_property_override("Description", description)  # type: ignore[union-attr]
    return key


def log_group(scope: Construct, construct_id: str, key: kms.IKey) -> logs.LogGroup:
    return logs.LogGroup(
        scope,
        construct_id,
        retention=LOG_RETENTION,
        encryption_key=key,
        removal_policy=RemovalPolicy.RETAIN,
    )


def new_access_logs_bucket(scope: Construct, construct_id: str, *, acls: bool = False) -> s3.Bucket:
    """A bucket for load balancer (and CloudFront) access logs.

    SSE-S3, because Elastic Load Balancing delivers access logs only to SSE-S3 buckets. ``acls``: the
    legacy CloudFront standard logs are delivered with an ACL grant, which BucketOwnerEnforced forbids;
    BucketOwnerPreferred keeps every object owned by the bucket owner while allowing that grant.
    """
    bucket = s3.Bucket(
        scope,
        construct_id,
        encryption=s3.BucketEncryption.S3_MANAGED,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        enforce_ssl=True,
        versioned=True,
        object_ownership=(
            s3.ObjectOwnership.BUCKET_OWNER_PREFERRED if acls else s3.ObjectOwnership.BUCKET_OWNER_ENFORCED
        ),
        removal_policy=RemovalPolicy.RETAIN,
        lifecycle_rules=[
            s3.LifecycleRule(
                id="ExpireAccessLogs",
                expiration=Duration.days(LOG_RETENTION_DAYS),
                noncurrent_version_expiration=Duration.days(30),
            )
        ],
    )
    acknowledge(
        bucket,
        {
            "AwsSolutions-S1": "This bucket receives access logs; logging its own accesses into itself "
            "would log its own deliveries without end.",
            "HIPAA.Security-S3BucketLoggingEnabled": "Access log destination; see AwsSolutions-S1.",
            "HIPAA.Security-S3BucketReplicationEnabled": "Access logs are an operational record kept one "
            "year in one region; they hold no patient data and are not replicated.",
            "HIPAA.Security-S3DefaultEncryptionKMS": "Elastic Load Balancing delivers access logs only "
            "to buckets encrypted with SSE-S3; the bucket is encrypted with S3-managed keys.",
        },
    )
    return bucket


#: Bucket policy principals of access log delivery: Network Load Balancers (and, in newer regions,
#: Application Load Balancers) deliver through CloudWatch Logs' delivery service; Application Load
#: Balancers in regions opened before August 2022 write as a regional Elastic Load Balancing account.
LOG_DELIVERY_PRINCIPAL = "delivery.logs.amazonaws.com"
ELB_LOG_DELIVERY_PRINCIPAL = "logdelivery.elasticloadbalancing.amazonaws.com"
_ELB_ACCOUNTS_MAPPING = "SkyPacsElbLogAccounts"
_HAS_ELB_ACCOUNT_CONDITION = "SkyPacsRegionHasElbLogAccount"


def _elb_log_account(stack: Stack) -> str:
    """The regional Elastic Load Balancing account that writes ALB access logs, as a CloudFormation
    expression: the stack is environment-agnostic, so CDK's own ``log_access_logs`` (which needs the
    region at synthesis) cannot be used. Regions without such an account get the stack's own account,
    a harmless principal next to the service principal that those regions use."""
    mapping = stack.node.try_find_child(_ELB_ACCOUNTS_MAPPING)
    if not isinstance(mapping, CfnMapping):
        mapping = CfnMapping(
            stack,
            _ELB_ACCOUNTS_MAPPING,
            mapping={
                region.name: {"account": region.elbv2_account or "none"} for region in RegionInfo.regions
            },
        )
        CfnCondition(
            stack,
            _HAS_ELB_ACCOUNT_CONDITION,
            expression=Fn.condition_not(
                Fn.condition_equals(mapping.find_in_map(Aws.REGION, "account"), "none")
            ),
        )
    condition = stack.node.find_child(_HAS_ELB_ACCOUNT_CONDITION)
    assert isinstance(condition, CfnCondition)
    return Token.as_string(
        Fn.condition_if(condition.logical_id, mapping.find_in_map(Aws.REGION, "account"), Aws.ACCOUNT_ID)
    )


def enable_access_logs(
    load_balancer: elbv2.BaseLoadBalancer, bucket: s3.IBucket, prefix: str, *, application: bool
) -> None:
    """Access logs of ``load_balancer`` into ``bucket`` under ``prefix``, with the bucket policy that
    lets the log delivery write there (what ``log_access_logs`` does, without needing the region)."""
    stack = Stack.of(load_balancer)
    load_balancer.set_attribute("access_logs.s3.enabled", "true")
    load_balancer.set_attribute("access_logs.s3.bucket", bucket.bucket_name)
    load_balancer.set_attribute("access_logs.s3.prefix", prefix)
    objects = bucket.arn_for_objects(f"{prefix}/AWSLogs/{stack.account}/*")
    delivery = iam.ServicePrincipal(LOG_DELIVERY_PRINCIPAL)
    if application:
        bucket.add_to_resource_policy(
            iam.PolicyStatement(
                actions=["s3:PutObject"],
                principals=[
                    iam.ArnPrincipal(_elb_log_account(stack)),
                    iam.ServicePrincipal(ELB_LOG_DELIVERY_PRINCIPAL),
                ],
                resources=[objects],
            )
        )
    bucket.add_to_resource_policy(
        iam.PolicyStatement(
            actions=["s3:PutObject"],
            principals=[delivery],
            resources=[objects],
            conditions={"StringEquals": {"s3:x-amz-acl": "bucket-owner-full-control"}},
        )
    )
    bucket.add_to_resource_policy(
        iam.PolicyStatement(actions=["s3:GetBucketAcl"], principals=[delivery], resources=[bucket.bucket_arn])
    )
    # ELB checks that it can write when the attribute is set: the policy must exist first.
    if bucket.policy is not None:
        load_balancer.node.add_dependency(bucket.policy)


def private_fargate_service(
    scope: Construct,
    construct_id: str,
    *,
    cluster: ecs.ICluster,
    task_definition: ecs.FargateTaskDefinition,
    desired_count: int,
    task_policy: iam.ManagedPolicy,
    security_groups: list[ec2.ISecurityGroup] | None = None,
) -> ecs.FargateService:
    """A service of the gateway's or the streaming service's tasks: private subnets, no public IP,
    rolling deployments that roll back on the circuit breaker, never below the desired count. Tasks
    start only once their role has its permissions (a managed policy is a separate resource)."""
    service = ecs.FargateService(
        scope,
        construct_id,
        cluster=cluster,
        task_definition=task_definition,
        desired_count=desired_count,
        vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
        assign_public_ip=False,
        circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
        min_healthy_percent=100,
        max_healthy_percent=200,
        health_check_grace_period=Duration.seconds(60),
        security_groups=security_groups,
    )
    service.node.add_dependency(task_policy)
    return service


def scale_on_cpu(service: ecs.FargateService, min_count: int, max_count: int) -> None:
    """Autoscale ``service`` on CPU between ``min_count`` and ``max_count`` tasks: out within a minute,
    in after five (a task scaled in drains its associations or retrievals: no haste)."""
    scaling = service.auto_scale_task_count(min_capacity=min_count, max_capacity=max_count)
    scaling.scale_on_cpu_utilization(
        "Cpu",
        target_utilization_percent=CPU_TARGET_PERCENT,
        scale_out_cooldown=Duration.minutes(1),
        scale_in_cooldown=Duration.minutes(5),
    )


def acknowledge_execution_role(task_definition: ecs.TaskDefinition) -> None:
    """The execution role CDK makes for pulling the image, writing logs and reading ECS secrets."""
    if task_definition.execution_role is None:
        return
    acknowledge(
        task_definition.execution_role,
        {
            "AwsSolutions-IAM5[Resource::*]": "ecr:GetAuthorizationToken, which ECS needs to pull the "
            "image, has no resource-level permissions: AWS requires Resource *.",
            "HIPAA.Security-IAMNoInlinePolicy": "The execution role's policy is generated by CDK from "
            "what the task definition uses (the image repository, the log group, ECS secrets) and is "
            "scoped to exactly those resources.",
        },
    )


def _check_ae_title(title: str, what: str) -> None:
    # AE VR (PS3.5 6.2): at most 16 characters, no backslash, no control characters.
    if Token.is_unresolved(title):
        return
    if not (0 < len(title) <= 16) or not title.isprintable() or "\\" in title or title.strip() != title:
        raise ValueError(f"{what} {title!r} must be 1-16 printable characters without backslash")


class Gateway(Construct):
    """The DIMSE gateway service: Fargate tasks behind a Network Load Balancer.

    Attributes:
        service: the Fargate service (autoscaled on CPU between ``desired_count`` and ``max_count``).
        load_balancer: the NLB modalities associate with (11112, and 2762 with TLS).
        task_role: the role of the gateway tasks (least privilege on the bucket, key and table).
        log_group: the containers' log group (encrypted, with retention).
        security_group: the NLB's security group, the one that admits modalities.
        access_logs_bucket: where the NLB writes its access logs (TLS listeners only, per ELB).
    """

    service: ecs.FargateService
    load_balancer: elbv2.NetworkLoadBalancer
    task_role: iam.Role
    log_group: logs.LogGroup
    security_group: ec2.SecurityGroup
    access_logs_bucket: s3.IBucket

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        cluster: ecs.ICluster,
        bucket: s3.IBucket,
        bucket_key: kms.IKey,
        table: dynamodb.ITable,
        ae_title: str = DEFAULT_AE_TITLE,
        allowed_aes: Sequence[str] = (),
        destinations: Mapping[str, str] | None = None,
        allowed_cidrs: Sequence[str] = (),
        internet_facing: bool = False,
        tls_certificate_arn: str | None = None,
        desired_count: int = 2,
        max_count: int = 10,
        cpu: int = 1024,
        memory_mib: int = 2048,
        access_logs_bucket: s3.IBucket | None = None,
        search: Search | None = None,
    ) -> None:
        """Create the gateway.

        Args:
            ae_title: the called AE title the gateway answers as.
            allowed_aes: calling AE titles allowed to associate; empty = any (the gateway logs a warning).
            destinations: C-MOVE destinations, AE title -> ``"host:port"``; the tasks reach them through
                the VPC's routes (NAT, VPN, Direct Connect).
            allowed_cidrs: networks admitted to the DIMSE ports; default the VPC's CIDR. Required when
                ``internet_facing``: an internet-facing archive is never open to the whole internet by
                default.
            internet_facing: put the NLB in the public subnets (default: private, internal).
            tls_certificate_arn: an ACM certificate; adds a TLS listener on 2762 that terminates TLS
                (TLS 1.2 and later) and forwards to the gateway's 11112.
            desired_count, max_count: the service's task count range (the autoscaling bounds).
            cpu, memory_mib: Fargate task size.
            access_logs_bucket: where the NLB writes its access logs; default a new bucket.
            search: the OpenSearch index: with it the gateway also answers C-FIND (and PATIENT-level
                C-MOVE/C-GET), reading the index as an OpenSearch reader.
        """
        super().__init__(scope, construct_id)
        destinations = dict(destinations or {})
        if internet_facing and not allowed_cidrs:
            raise ValueError(
                "an internet-facing gateway needs allowed_cidrs (the networks of the modalities)"
            )
        if not 1 <= desired_count <= max_count:
            raise ValueError(f"need 1 <= desired_count <= max_count, got {desired_count} and {max_count}")
        _check_ae_title(ae_title, "AE title")
        for title in allowed_aes:
            _check_ae_title(title, "allowed calling AE title")
        for title, address in destinations.items():
            _check_ae_title(title, "C-MOVE destination AE title")
            if not Token.is_unresolved(address):
                parse_address(address)  # ValueError: not host:port
            if "," in address or "=" in address:
                raise ValueError(f"C-MOVE destination {title}: {address!r} is not host:port")

        self.task_role, task_policy = self._task_role(bucket, bucket_key, table)
        key = logs_key(self, "LogsKey", "Encrypts the logs of the SkyPACS DIMSE gateway")
        self.log_group = log_group(self, "Logs", key)

        task_definition = ecs.FargateTaskDefinition(
            self,
            "TaskDefinition",
            cpu=cpu,
            memory_limit_mib=memory_mib,
            runtime_platform=runtime_platform(),
            task_role=self.task_role,
        )
        environment = {
            ENV_BUCKET: bucket.bucket_name,
            ENV_CATALOG_TABLE: table.table_name,
            ENV_AE_TITLE: ae_title,
        }
        if allowed_aes:
            environment[ENV_ALLOWED_AES] = ",".join(allowed_aes)
        if destinations:
            environment[ENV_DESTINATIONS] = ",".join(
                f"{title}={address}" for title, address in destinations.items()
            )
        if search is not None:
            environment[ENV_OPENSEARCH_ENDPOINT] = search.endpoint
            environment[ENV_OPENSEARCH_PREFIX] = search.index_prefix
            search.add_reader(self.task_role)
            acknowledge(self.task_role, {
                "HIPAA.Security-IAMNoInlinePolicy": "The OpenSearch read grant (Search.add_reader) is CDK's "
                "grant policy of this role alone; the gateway's own permissions are its managed policy.",
            })
        container = task_definition.add_container(
            "Gateway",
            image=container_image(),
            command=list(GATEWAY_COMMAND),
            user=CONTAINER_USER,
            environment=environment,
            port_mappings=[ecs.PortMapping(container_port=DIMSE_PORT, protocol=ecs.Protocol.TCP)],
            health_check=ecs.HealthCheck(
                command=["CMD", *HEALTHCHECK_COMMAND],
                interval=HEALTHCHECK_INTERVAL,
                timeout=HEALTHCHECK_TIMEOUT,
                start_period=HEALTHCHECK_START_PERIOD,
                retries=HEALTHCHECK_RETRIES,
            ),
            logging=ecs.LogDrivers.aws_logs(stream_prefix="gateway", log_group=self.log_group),
            stop_timeout=GATEWAY_STOP_TIMEOUT,
            essential=True,
        )
        acknowledge(
            task_definition,
            {
                "AwsSolutions-ECS2": "The environment holds configuration only (bucket and table names, AE "
                "titles, C-MOVE destinations); the gateway has no secret.",
            },
        )

        self.security_group = ec2.SecurityGroup(
            self,
            "LoadBalancerSecurityGroup",
            vpc=vpc,
            description="SkyPACS DIMSE gateway NLB: DICOM from the allowed networks only",
            allow_all_outbound=False,
        )
        ports = [DIMSE_PORT] + ([DICOM_TLS_PORT] if tls_certificate_arn else [])
        if not allowed_cidrs:
            acknowledge(
                self.security_group,
                {
                    rule: "Ingress comes only from the VPC's own CIDR block (Fn::GetAtt, which cdk-nag "
                    "cannot resolve and so reads as unrestricted), on the DICOM ports only."
                    for rule in (
                        "AwsSolutions-EC23",
                        "HIPAA.Security-EC2RestrictedCommonPorts",
                        "HIPAA.Security-EC2RestrictedSSH",
                    )
                },
            )
        for cidr in allowed_cidrs or [vpc.vpc_cidr_block]:
            for port in ports:
                source = "the VPC" if Token.is_unresolved(cidr) else cidr
                self.security_group.add_ingress_rule(
                    ec2.Peer.ipv4(cidr), ec2.Port.tcp(port), f"DICOM {port} from {source}"
                )

        self.load_balancer = elbv2.NetworkLoadBalancer(
            self,
            "LoadBalancer",
            vpc=vpc,
            internet_facing=internet_facing,
            vpc_subnets=ec2.SubnetSelection(
                subnet_type=ec2.SubnetType.PUBLIC if internet_facing else ec2.SubnetType.PRIVATE_WITH_EGRESS
            ),
            security_groups=[self.security_group],
            cross_zone_enabled=True,
        )
        self.access_logs_bucket = access_logs_bucket or new_access_logs_bucket(self, "AccessLogsBucket")
        enable_access_logs(self.load_balancer, self.access_logs_bucket, "dimse-gateway", application=False)
        acknowledge(
            self.load_balancer,
            {
                "HIPAA.Security-ELBDeletionProtectionEnabled": "The load balancer holds no data and is "
                "recreated by a deployment; deletion protection would make `cdk destroy` of a test "
                "archive fail half-way.",
            },
        )

        self.service = private_fargate_service(
            self,
            "Service",
            cluster=cluster,
            task_definition=task_definition,
            desired_count=desired_count,
            task_policy=task_policy,
            # Outbound: S3, DynamoDB, KMS and the C-MOVE destinations, wherever they are.
            security_groups=[
                ec2.SecurityGroup(
                    self,
                    "ServiceSecurityGroup",
                    vpc=vpc,
                    description="SkyPACS DIMSE gateway tasks: DICOM from the NLB; out to AWS and C-MOVE "
                    "destinations",
                    allow_all_outbound=True,
                )
            ],
        )
        # Targets are IP addresses without client IP preservation: connections come from the NLB.
        self.service.connections.allow_from(
            self.security_group, ec2.Port.tcp(DIMSE_PORT), "DICOM from the NLB"
        )
        if search is not None:
            search.allow_from(self.service.connections.security_groups[0])

        self.target_group = target_group = elbv2.NetworkTargetGroup(
            self,
            "Targets",
            vpc=vpc,
            port=DIMSE_PORT,
            protocol=elbv2.Protocol.TCP,
            target_type=elbv2.TargetType.IP,
            targets=[
                self.service.load_balancer_target(
                    container_name=container.container_name, container_port=DIMSE_PORT
                )
            ],
            # The DICOM port accepting a TCP connection; the container health check does the C-ECHO.
            health_check=elbv2.HealthCheck(
                protocol=elbv2.Protocol.TCP,
                interval=Duration.seconds(30),
                healthy_threshold_count=3,
                unhealthy_threshold_count=3,
            ),
            deregistration_delay=GATEWAY_STOP_TIMEOUT,
        )
        plain = self.load_balancer.add_listener(
            "Dimse",
            port=DIMSE_PORT,
            protocol=elbv2.Protocol.TCP,
            default_target_groups=[target_group],
        )
        acknowledge(
            plain,
            {
                "HIPAA.Security-ELBv2ACMCertificateRequired": "Port 11112 is the plain DICOM upper layer "
                "that most modalities speak; it admits only allowed_cidrs (the VPC by default: modalities "
                "come over VPN or Direct Connect). DICOM TLS is the listener on 2762 when a certificate "
                "is given.",
            },
        )
        if tls_certificate_arn:
            self.load_balancer.add_listener(
                "DimseTls",
                port=DICOM_TLS_PORT,
                protocol=elbv2.Protocol.TLS,
                certificates=[elbv2.ListenerCertificate.from_arn(tls_certificate_arn)],
                ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS,  # TLS 1.2 and 1.3 only
                default_target_groups=[target_group],
            )

        scale_on_cpu(self.service, desired_count, max_count)

        acknowledge_execution_role(task_definition)

    def _task_role(
        self, bucket: s3.IBucket, bucket_key: kms.IKey, table: dynamodb.ITable
    ) -> tuple[iam.Role, iam.ManagedPolicy]:
        """What ``skypacs gateway`` calls, and nothing else (skypacs/aws.py, skypacs/adapters/)."""
        role = iam.Role(
            self,
            "TaskRole",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description="SkyPACS DIMSE gateway tasks",
        )
        statements = [
            # C-STORE: canonical objects; refused transfers kept with their reason (StoreService).
            iam.PolicyStatement(
                sid="StoreObjects",
                actions=["s3:PutObject"],
                resources=[
                    bucket.arn_for_objects(f"{STUDIES_PREFIX}*"),
                    bucket.arn_for_objects(f"{INCOMING_PREFIX}*"),
                    bucket.arn_for_objects(f"{QUARANTINE_PREFIX}*"),
                ],
            ),
            # C-MOVE and C-GET send stored objects (and read oversized catalog metadata).
            iam.PolicyStatement(
                sid="RetrieveObjects",
                actions=["s3:GetObject"],
                resources=[
                    bucket.arn_for_objects(f"{STUDIES_PREFIX}*"),
                    bucket.arn_for_objects(f"{CATALOG_METADATA_PREFIX}*"),
                ],
            ),
            # SSE-KMS: a data key to write (Bucket Keys make this rare), Decrypt to read back.
            iam.PolicyStatement(
                sid="BucketKey",
                actions=["kms:GenerateDataKey", "kms:Decrypt"],
                resources=[bucket_key.key_arn],
            ),
            # DynamoDbCatalog: quarantine records (PutItem); retrieve lists a study's instances (Query),
            # finds an instance by SOP Instance UID (Query on the by-sop-instance index, then GetItem).
            iam.PolicyStatement(
                sid="Catalog",
                actions=["dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem"],
                resources=[table.table_arn, f"{table.table_arn}/index/*"],
            ),
        ]
        # A customer managed policy rather than an inline one: reviewable and reusable on its own.
        policy = iam.ManagedPolicy(self, "TaskPolicy", statements=statements, roles=[role])
        acknowledge_prefix_wildcards(
            policy,
            [
                bucket.arn_for_objects(f"{STUDIES_PREFIX}*"),
                bucket.arn_for_objects(f"{INCOMING_PREFIX}*"),
                bucket.arn_for_objects(f"{QUARANTINE_PREFIX}*"),
                bucket.arn_for_objects(f"{CATALOG_METADATA_PREFIX}*"),
                f"{table.table_arn}/index/*",
            ],
        )
        return role, policy
