"""The DICOMweb streaming service: the large-retrieval path of the AWS deployment.

A Lambda answer is at most 6 MB and an API Gateway payload 10 MB, so the DICOMweb API answers whole
studies and series (and anything else too large) with ``303 See Other`` to a signed URL on this
service (skypacs/dicomweb/signed_urls.py). It is the SkyPACS image running ``skypacs dicomweb``: the
same route table served by waitress on port 8080, streaming from S3 in bounded memory, answering only
URLs signed with the shared key (a Secrets Manager secret handed to the task as an ECS secret).

Exposure, HTTPS without asking for a certificate: an internal Application Load Balancer in the private
subnets, reached only through a CloudFront distribution with a VPC origin. Viewers get HTTPS on the
distribution's ``*.cloudfront.net`` name (or on ``domain_name`` with an ACM certificate in us-east-1);
CloudFront reaches the ALB over the AWS network through elastic network interfaces it places in the
VPC, so the ALB has no public address at all. CloudFront VPC origins need the VPC to have an internet
gateway (a default ``ec2.Vpc`` has one), even though the ALB is internal.

CloudFront caches nothing (every URL is signed and short-lived, and answers are per request), forwards
the whole query string (it carries the signature) and the Accept headers (content negotiation), and
adds ``origin_path`` ``/dicom-web``: the DICOMweb root is the distribution's root, ``url``.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.constructs.gateway import (
    CONTAINER_USER,
    acknowledge,
    acknowledge_execution_role,
    acknowledge_prefix_wildcards,
    container_image,
    enable_access_logs,
    log_group,
    logs_key,
    new_access_logs_bucket,
    private_fargate_service,
    runtime_platform,
    scale_on_cpu,
)
from skypacs.config import DEFAULT_HTTP_PORT, ENV_BUCKET, ENV_CATALOG_TABLE, ENV_URL_SIGNING_KEY
from skypacs.dicomweb.server import DEFAULT_PREFIX
from skypacs.keys import CATALOG_METADATA_PREFIX, STUDIES_PREFIX

#: The service's port (``skypacs dicomweb --port``, default 8080).
HTTP_PORT = DEFAULT_HTTP_PORT
#: The ALB listener CloudFront's VPC origin connects to.
ALB_PORT = 80
STREAMING_COMMAND = ("skypacs", "dicomweb")
#: Answered 200 at the server root without a signature (skypacs/dicomweb/server.py, HEALTH_PATHS).
HEALTH_PATH = "/health"
HEALTHCHECK_COMMAND = (
    "python",
    "-c",
    (
        "import sys, urllib.request; "
        f"sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:{HTTP_PORT}{HEALTH_PATH}', timeout=5)"
        ".status == 200 else 1)"
    ),
)
#: Fargate's maximum: a study streaming when ECS stops the task gets two minutes to finish.
STREAMING_STOP_TIMEOUT = Duration.seconds(120)
#: Length of the generated signing key; ``signed_urls.MINIMUM_KEY_BYTES`` is 32.
SIGNING_KEY_LENGTH = 64
#: Request headers CloudFront passes to the service: content negotiation (PS3.18 8.7) only.
FORWARDED_HEADERS = ("Accept", "Accept-Charset")


class StreamingService(Construct):
    """``skypacs dicomweb`` on Fargate, behind an internal ALB and a CloudFront distribution.

    Attributes:
        service: the Fargate service.
        signing_secret: the URL signing key, shared with the DICOMweb API (``SKYPACS_URL_SIGNING_KEY``).
        url: the DICOMweb root the API redirects to (``SKYPACS_STREAMING_URL``): ``https://<domain>``.
        task_role: the role of the tasks (read-only on the bucket's ``studies/``, the key and the table).
        load_balancer: the internal ALB (CloudFront's VPC origin).
        distribution: the CloudFront distribution viewers connect to.
        log_group: the containers' log group.
        log_bucket: access logs of the ALB (``alb/``) and of CloudFront (``cloudfront/``).
    """

    service: ecs.FargateService
    signing_secret: secretsmanager.Secret
    url: str
    task_role: iam.Role
    load_balancer: elbv2.ApplicationLoadBalancer
    distribution: cloudfront.Distribution
    log_group: logs.LogGroup
    log_bucket: s3.Bucket

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
        desired_count: int = 1,
        max_count: int | None = None,
        cpu: int = 1024,
        memory_mib: int = 2048,
        domain_name: str | None = None,
        certificate_arn: str | None = None,
    ) -> None:
        """Create the service.

        Args:
            desired_count, cpu, memory_mib: Fargate tasks and their size.
            max_count: most tasks when many whole-study retrievals run at once (autoscaled on CPU, which
                tracks the bytes a task streams); default ``desired_count``, no autoscaling.
            domain_name, certificate_arn: an alias for the distribution and its ACM certificate (which
                CloudFront requires in us-east-1); both or neither. Without them the service answers on
                the distribution's ``*.cloudfront.net`` name, with CloudFront's certificate.
        """
        super().__init__(scope, construct_id)
        if (domain_name is None) != (certificate_arn is None):
            raise ValueError("domain_name and certificate_arn go together: give both or neither")
        if desired_count < 1:
            raise ValueError(f"desired_count must be at least 1, got {desired_count}")
        max_count = desired_count if max_count is None else max_count
        if max_count < desired_count:
            raise ValueError(f"max_count ({max_count}) must be at least desired_count ({desired_count})")

        key = logs_key(
            self, "Key", "Encrypts the logs and the URL signing key of the SkyPACS streaming service"
        )
        self.log_group = log_group(self, "Logs", key)
        self.signing_secret = secretsmanager.Secret(
            self,
            "SigningKey",
            description="SkyPACS: HMAC key signing redirects from the DICOMweb API to the streaming service",
            encryption_key=key,
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=SIGNING_KEY_LENGTH,
                # Letters and digits: the value travels in environment variables, never in a shell.
                exclude_punctuation=True,
                include_space=False,
            ),
        )
        rotation = (
            "The key is shared by the DICOMweb Lambda and the streaming tasks, which read it at start; "
            "a rotation would break redirects issued in the 5 minutes before it. Rotate by redeploying "
            "both (the signed URLs it protects live 5 minutes)."
        )
        acknowledge(
            self.signing_secret,
            {"AwsSolutions-SMG4": rotation, "HIPAA.Security-SecretsManagerRotationEnabled": rotation},
        )

        self.task_role, task_policy = self._task_role(bucket, bucket_key, table)
        task_definition = ecs.FargateTaskDefinition(
            self,
            "TaskDefinition",
            cpu=cpu,
            memory_limit_mib=memory_mib,
            runtime_platform=runtime_platform(),
            task_role=self.task_role,
        )
        container = task_definition.add_container(
            "Streaming",
            image=container_image(),
            command=list(STREAMING_COMMAND),
            user=CONTAINER_USER,
            environment={ENV_BUCKET: bucket.bucket_name, ENV_CATALOG_TABLE: table.table_name},
            # Resolved by ECS at task start (execution role); never in the template or the task definition.
            secrets={ENV_URL_SIGNING_KEY: ecs.Secret.from_secrets_manager(self.signing_secret)},
            port_mappings=[ecs.PortMapping(container_port=HTTP_PORT, protocol=ecs.Protocol.TCP)],
            health_check=ecs.HealthCheck(
                command=["CMD", *HEALTHCHECK_COMMAND],
                interval=Duration.seconds(30),
                timeout=Duration.seconds(10),
                start_period=Duration.seconds(20),
                retries=3,
            ),
            logging=ecs.LogDrivers.aws_logs(stream_prefix="streaming", log_group=self.log_group),
            stop_timeout=STREAMING_STOP_TIMEOUT,
            essential=True,
        )
        acknowledge(
            task_definition,
            {
                "AwsSolutions-ECS2": "The environment holds the bucket and table names only; the signing "
                "key is an ECS secret from Secrets Manager.",
            },
        )
        acknowledge_execution_role(task_definition)

        self.service = private_fargate_service(
            self,
            "Service",
            cluster=cluster,
            task_definition=task_definition,
            desired_count=desired_count,
            task_policy=task_policy,
        )
        if max_count > desired_count:
            scale_on_cpu(self.service, desired_count, max_count)

        self.log_bucket = new_access_logs_bucket(self, "AccessLogsBucket", acls=True)
        alb_security_group = ec2.SecurityGroup(
            self,
            "LoadBalancerSecurityGroup",
            vpc=vpc,
            description="SkyPACS streaming ALB: HTTP from the CloudFront VPC origin in this VPC only",
            allow_all_outbound=False,
        )
        # CloudFront's VPC origin connects from network interfaces it places in this VPC's subnets.
        alb_security_group.add_ingress_rule(
            ec2.Peer.ipv4(vpc.vpc_cidr_block), ec2.Port.tcp(ALB_PORT), "CloudFront VPC origin (in the VPC)"
        )
        acknowledge(
            alb_security_group,
            {
                rule: "Ingress comes only from the VPC's own CIDR block (Fn::GetAtt, which cdk-nag cannot "
                "resolve and so reads as unrestricted), on port 80 only."
                for rule in (
                    "AwsSolutions-EC23",
                    "HIPAA.Security-EC2RestrictedCommonPorts",
                    "HIPAA.Security-EC2RestrictedSSH",
                )
            },
        )
        self.load_balancer = elbv2.ApplicationLoadBalancer(
            self,
            "LoadBalancer",
            vpc=vpc,
            internet_facing=False,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            security_group=alb_security_group,
            drop_invalid_header_fields=True,
            # Idle time between two chunks of a study, not the length of the whole transfer.
            idle_timeout=Duration.seconds(120),
        )
        enable_access_logs(self.load_balancer, self.log_bucket, "alb", application=True)
        acknowledge(
            self.load_balancer,
            {
                "HIPAA.Security-ELBDeletionProtectionEnabled": "The load balancer holds no data and is "
                "recreated by a deployment; deletion protection would make `cdk destroy` fail half-way.",
            },
        )
        listener = self.load_balancer.add_listener(
            "Http", port=ALB_PORT, protocol=elbv2.ApplicationProtocol.HTTP, open=False
        )
        listener.add_targets(
            "Streaming",
            port=HTTP_PORT,
            protocol=elbv2.ApplicationProtocol.HTTP,
            targets=[
                self.service.load_balancer_target(
                    container_name=container.container_name, container_port=HTTP_PORT
                )
            ],
            health_check=elbv2.HealthCheck(
                path=HEALTH_PATH, healthy_http_codes="200", interval=Duration.seconds(30)
            ),
            deregistration_delay=STREAMING_STOP_TIMEOUT,
        )
        plain_http = (
            "The ALB is internal (no public address) and reached only by CloudFront's VPC origin over the "
            "AWS network inside the VPC; viewers connect to CloudFront over HTTPS only. Without a "
            "certificate for the ALB (none is required by default) there is no HTTPS to redirect to."
        )
        acknowledge(
            listener,
            {
                "HIPAA.Security-ALBHttpToHttpsRedirection": plain_http,
                "HIPAA.Security-ELBv2ACMCertificateRequired": plain_http,
            },
        )

        self.distribution = self._distribution(domain_name, certificate_arn)
        host = domain_name or self.distribution.distribution_domain_name
        self.url = f"https://{host}"

    def _distribution(self, domain_name: str | None, certificate_arn: str | None) -> cloudfront.Distribution:
        origin_requests = cloudfront.OriginRequestPolicy(
            self,
            "OriginRequests",
            comment="SkyPACS streaming: signed query strings and content negotiation",
            query_string_behavior=cloudfront.OriginRequestQueryStringBehavior.all(),
            header_behavior=cloudfront.OriginRequestHeaderBehavior.allow_list(*FORWARDED_HEADERS),
            cookie_behavior=cloudfront.OriginRequestCookieBehavior.none(),
        )
        origin = origins.VpcOrigin.with_application_load_balancer(
            self.load_balancer,
            http_port=ALB_PORT,
            protocol_policy=cloudfront.OriginProtocolPolicy.HTTP_ONLY,
            origin_path=DEFAULT_PREFIX,
            read_timeout=Duration.seconds(60),
        )
        certificate = (
            acm.Certificate.from_certificate_arn(self, "Certificate", certificate_arn)
            if certificate_arn
            else None
        )
        distribution = cloudfront.Distribution(
            self,
            "Distribution",
            comment="SkyPACS DICOMweb streaming service (large retrievals)",
            default_behavior=cloudfront.BehaviorOptions(
                origin=origin,
                viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.HTTPS_ONLY,
                allowed_methods=cloudfront.AllowedMethods.ALLOW_GET_HEAD_OPTIONS,
                cached_methods=cloudfront.CachedMethods.CACHE_GET_HEAD_OPTIONS,
                cache_policy=cloudfront.CachePolicy.CACHING_DISABLED,
                origin_request_policy=origin_requests,
                compress=False,  # DICOM bodies are binary (often compressed already); stream them as is
            ),
            domain_names=[domain_name] if domain_name else None,
            certificate=certificate,
            # Settable only with a custom certificate (CloudFront's own is fixed at TLSv1).
            minimum_protocol_version=(
                cloudfront.SecurityPolicyProtocol.TLS_V1_2_2021 if certificate is not None else None
            ),
            enable_logging=True,
            log_bucket=self.log_bucket,
            log_file_prefix="cloudfront/",
        )
        reasons = {
            "AwsSolutions-CFR1": "No geo restriction: viewers and AI pipelines may be anywhere; every "
            "request needs a URL signed by the DICOMweb API, valid 5 minutes.",
            "AwsSolutions-CFR2": "No WAF by default: the service answers signed URLs only (HMAC, checked "
            "before any work) and caches nothing; add a web ACL for rate limiting if needed.",
        }
        if certificate is None:
            reasons["AwsSolutions-CFR4"] = (
                "With the default *.cloudfront.net certificate CloudFront fixes the viewer policy at "
                "TLSv1; give domain_name and certificate_arn to enforce TLS 1.2 (TLS_V1_2_2021)."
            )
        acknowledge(distribution, reasons)
        return distribution

    def _task_role(
        self, bucket: s3.IBucket, bucket_key: kms.IKey, table: dynamodb.ITable
    ) -> tuple[iam.Role, iam.ManagedPolicy]:
        """Read-only: retrieval lists a study's instances in the catalog and streams their objects."""
        role = iam.Role(
            self,
            "TaskRole",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description="SkyPACS DICOMweb streaming tasks",
        )
        objects = bucket.arn_for_objects(f"{STUDIES_PREFIX}*")
        metadata = bucket.arn_for_objects(f"{CATALOG_METADATA_PREFIX}*")  # oversized catalog metadata
        indexes = f"{table.table_arn}/index/*"
        policy = iam.ManagedPolicy(
            self,
            "TaskPolicy",
            roles=[role],
            statements=[
                iam.PolicyStatement(sid="ReadObjects", actions=["s3:GetObject"], resources=[objects, metadata]),
                iam.PolicyStatement(sid="BucketKey", actions=["kms:Decrypt"], resources=[bucket_key.key_arn]),
                iam.PolicyStatement(
                    sid="ReadCatalog",
                    actions=["dynamodb:GetItem", "dynamodb:Query"],
                    resources=[table.table_arn, indexes],
                ),
            ],
        )
        acknowledge_prefix_wildcards(policy, [objects, metadata, indexes])
        return role, policy
