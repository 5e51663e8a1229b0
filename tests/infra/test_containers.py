"""The container services: the DIMSE gateway (Fargate + NLB) and the DICOMweb streaming service (Fargate +
internal ALB + CloudFront VPC origin). CloudFormation assertions and cdk-nag (AwsSolutions, HIPAA Security).

One app per module, two small stacks: ``Containers`` with the defaults (internal, no certificates) on real
Storage, VPC and table; ``ContainersTls`` with an internet-facing TLS gateway and a streaming alias, on
imported bucket, key and table (which also exercises literal ARNs in the IAM policies).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Match, Template
from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks

from infra.constructs import gateway as gateway_module
from infra.constructs.gateway import Gateway, make_cluster
from infra.constructs.storage import Storage
from infra.constructs.streaming import StreamingService

CERTIFICATE_ARN = "arn:aws:acm:eu-west-1:111122223333:certificate/0f2c6a4e-0000-4000-8000-000000000001"
EDGE_CERTIFICATE_ARN = "arn:aws:acm:us-east-1:111122223333:certificate/0f2c6a4e-0000-4000-8000-000000000002"
IMPORTED_BUCKET = "arn:aws:s3:::imported-dicom"
IMPORTED_KEY = "arn:aws:kms:eu-west-1:111122223333:key/0f2c6a4e-0000-4000-8000-000000000003"
IMPORTED_TABLE = "arn:aws:dynamodb:eu-west-1:111122223333:table/imported-catalog"
MODALITY_CIDR = "203.0.113.0/24"
ALIAS = "retrieve.example.org"
OWN_SCOPES = ("Gateway", "Streaming", "Cluster")

LISTENER = "AWS::ElasticLoadBalancingV2::Listener"
LOAD_BALANCER = "AWS::ElasticLoadBalancingV2::LoadBalancer"
TARGET_GROUP = "AWS::ElasticLoadBalancingV2::TargetGroup"
TASK_DEFINITION = "AWS::ECS::TaskDefinition"


class Deployment:
    """One stack's constructs, for the tests to reach."""

    def __init__(self, stack: cdk.Stack, gateway: Gateway, streaming: StreamingService, vpc: ec2.Vpc) -> None:
        self.stack, self.gateway, self.streaming, self.vpc = stack, gateway, streaming, vpc


@pytest.fixture(scope="module")
def app(cdk_context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> cdk.App:
    return cdk.App(context=cdk_context, outdir=str(tmp_path_factory.mktemp("cdk.out")))


@pytest.fixture(scope="module")
def default(app: cdk.App) -> Deployment:
    stack = cdk.Stack(app, "Containers")
    storage = Storage(stack, "Storage")
    vpc = ec2.Vpc(stack, "Vpc", max_azs=2)
    table = dynamodb.Table(
        stack, "Table", partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING)
    )
    cluster = make_cluster(stack, "Cluster", vpc)
    resources = {
        "vpc": vpc,
        "cluster": cluster,
        "bucket": storage.bucket,
        "bucket_key": storage.key,
        "table": table,
    }
    gateway = Gateway(
        stack,
        "Gateway",
        **resources,
        ae_title="ARCHIVE",
        allowed_aes=["CT01", "MR02"],
        destinations={"WS1": "10.0.0.5:104", "VIEWER": "[fd00::5]:11112"},
    )
    streaming = StreamingService(stack, "Streaming", **resources)
    return Deployment(stack, gateway, streaming, vpc)


@pytest.fixture(scope="module")
def tls(app: cdk.App) -> Deployment:
    stack = cdk.Stack(app, "ContainersTls")
    vpc = ec2.Vpc(stack, "Vpc", max_azs=2)
    cluster = make_cluster(stack, "Cluster", vpc)
    resources = {
        "vpc": vpc,
        "cluster": cluster,
        "bucket": s3.Bucket.from_bucket_arn(stack, "Bucket", IMPORTED_BUCKET),
        "bucket_key": kms.Key.from_key_arn(stack, "Key", IMPORTED_KEY),
        "table": dynamodb.Table.from_table_arn(stack, "Table", IMPORTED_TABLE),
    }
    gateway = Gateway(
        stack,
        "Gateway",
        **resources,
        internet_facing=True,
        allowed_cidrs=[MODALITY_CIDR],
        tls_certificate_arn=CERTIFICATE_ARN,
        desired_count=1,
        max_count=3,
    )
    streaming = StreamingService(
        stack, "Streaming", **resources, domain_name=ALIAS, certificate_arn=EDGE_CERTIFICATE_ARN
    )
    return Deployment(stack, gateway, streaming, vpc)


@pytest.fixture(scope="module")
def template(default: Deployment, tls: Deployment) -> Template:
    # Both stacks exist before the first synthesis, so the app is synthesized once.
    return Template.from_stack(default.stack)


@pytest.fixture(scope="module")
def tls_template(template: Template, tls: Deployment) -> Template:
    return Template.from_stack(tls.stack)


# --- helpers -------------------------------------------------------------------------------------------


def _one(template: Template, resource_type: str, prefix: str) -> tuple[str, dict[str, Any]]:
    found = {k: v for k, v in template.find_resources(resource_type).items() if k.startswith(prefix)}
    assert len(found) == 1, f"expected one {resource_type} named {prefix}*, found {list(found)}"
    ((logical_id, resource),) = found.items()
    return logical_id, resource["Properties"]


def _container(template: Template, prefix: str) -> dict[str, Any]:
    _, properties = _one(template, TASK_DEFINITION, prefix)
    (container,) = properties["ContainerDefinitions"]
    return dict(container)


def _listeners(template: Template, prefix: str) -> dict[int, dict[str, Any]]:
    lb_id, _ = _one(template, LOAD_BALANCER, prefix)
    return {
        listener["Properties"]["Port"]: listener["Properties"]
        for listener in template.find_resources(LISTENER).values()
        if listener["Properties"]["LoadBalancerArn"] == {"Ref": lb_id}
    }


def _attributes(properties: dict[str, Any]) -> dict[str, Any]:
    return {a["Key"]: a["Value"] for a in properties["LoadBalancerAttributes"]}


def _statements(template: Template, prefix: str) -> list[dict[str, Any]]:
    _, properties = _one(template, "AWS::IAM::ManagedPolicy", prefix)
    return list(properties["PolicyDocument"]["Statement"])


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _render(value: Any) -> str:
    """An ARN expression as text: ``Fn::Join`` pieces joined, intrinsics as ``<...>``."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        return "".join(_render(part) for part in value["Fn::Join"][1])
    return f"<{json.dumps(value, sort_keys=True)}>"


# --- DIMSE gateway: load balancer -----------------------------------------------------------------------


def test_nlb_internal_with_one_tcp_listener_by_default(template: Template) -> None:
    _, nlb = _one(template, LOAD_BALANCER, "GatewayLoadBalancer")
    assert nlb["Type"] == "network"
    assert nlb["Scheme"] == "internal"
    listeners = _listeners(template, "GatewayLoadBalancer")
    assert set(listeners) == {11112}
    assert listeners[11112]["Protocol"] == "TCP"
    target_group_id, target_group = _one(template, TARGET_GROUP, "GatewayTargets")
    assert listeners[11112]["DefaultActions"] == [
        {"TargetGroupArn": {"Ref": target_group_id}, "Type": "forward"}
    ]
    assert target_group["Port"] == 11112
    assert target_group["Protocol"] == "TCP"
    assert target_group["TargetType"] == "ip"
    assert target_group["HealthCheckProtocol"] == "TCP"


def test_tls_listener_terminates_with_the_certificate(tls_template: Template) -> None:
    _, nlb = _one(tls_template, LOAD_BALANCER, "GatewayLoadBalancer")
    assert nlb["Scheme"] == "internet-facing"
    listeners = _listeners(tls_template, "GatewayLoadBalancer")
    assert set(listeners) == {11112, 2762}
    secure = listeners[2762]
    assert secure["Protocol"] == "TLS"
    assert secure["Certificates"] == [{"CertificateArn": CERTIFICATE_ARN}]
    # TLS 1.2 and 1.3 only.
    assert secure["SslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    # Both listeners reach the gateway's plain DICOM port.
    assert secure["DefaultActions"] == listeners[11112]["DefaultActions"]


def test_nlb_access_logs_to_encrypted_private_bucket(template: Template) -> None:
    _, nlb = _one(template, LOAD_BALANCER, "GatewayLoadBalancer")
    bucket_id, bucket = _one(template, "AWS::S3::Bucket", "GatewayAccessLogsBucket")
    attributes = _attributes(nlb)
    assert attributes["access_logs.s3.enabled"] == "true"
    assert attributes["access_logs.s3.bucket"] == {"Ref": bucket_id}
    _assert_log_bucket(template, bucket_id, bucket)


def _assert_log_bucket(template: Template, bucket_id: str, bucket: dict[str, Any]) -> None:
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
    ]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": bucket_id},
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
                        )
                    ]
                )
            },
        },
    )


def test_security_group_admits_only_the_vpc_on_dicom_ports(template: Template, default: Deployment) -> None:
    _, group = _one(template, "AWS::EC2::SecurityGroup", "GatewayLoadBalancerSecurityGroup")
    vpc_id = default.stack.get_logical_id(default.vpc.node.default_child)
    assert [
        (r["CidrIp"], r["FromPort"], r["ToPort"], r["IpProtocol"]) for r in group["SecurityGroupIngress"]
    ] == [({"Fn::GetAtt": [vpc_id, "CidrBlock"]}, 11112, 11112, "tcp")]


def test_security_group_admits_only_allowed_cidrs(tls_template: Template) -> None:
    _, group = _one(tls_template, "AWS::EC2::SecurityGroup", "GatewayLoadBalancerSecurityGroup")
    rules = {(r["CidrIp"], r["FromPort"], r["ToPort"]) for r in group["SecurityGroupIngress"]}
    assert rules == {(MODALITY_CIDR, 11112, 11112), (MODALITY_CIDR, 2762, 2762)}


def test_tasks_reachable_from_the_nlb_only_and_outbound_open(template: Template) -> None:
    nlb_group, _ = _one(template, "AWS::EC2::SecurityGroup", "GatewayLoadBalancerSecurityGroup")
    task_group, properties = _one(template, "AWS::EC2::SecurityGroup", "GatewayServiceSecurityGroup")
    assert "SecurityGroupIngress" not in properties
    ingress = [
        r["Properties"]
        for r in template.find_resources("AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["GroupId"] == {"Fn::GetAtt": [task_group, "GroupId"]}
    ]
    assert len(ingress) == 1
    assert ingress[0]["SourceSecurityGroupId"] == {"Fn::GetAtt": [nlb_group, "GroupId"]}
    assert (ingress[0]["FromPort"], ingress[0]["ToPort"]) == (11112, 11112)
    # C-MOVE destinations may be anywhere the VPC routes to.
    assert [(r["CidrIp"], r["IpProtocol"]) for r in properties["SecurityGroupEgress"]] == [
        ("0.0.0.0/0", "-1")
    ]


def test_internet_facing_gateway_needs_allowed_cidrs(default: Deployment) -> None:
    scope = cdk.Stack(cdk.App(), "Refused")
    with pytest.raises(ValueError, match="allowed_cidrs"):
        Gateway(scope, "Gateway", **_resources(default, scope), internet_facing=True)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"destinations": {"WS1": "10.0.0.5"}}, "host:port"),
        ({"destinations": {"A" * 17: "10.0.0.5:104"}}, "AE title"),
        ({"ae_title": "BAD\\AE"}, "AE title"),
        ({"desired_count": 4, "max_count": 2}, "desired_count"),
    ],
)
def test_gateway_options_checked(default: Deployment, options: dict[str, Any], message: str) -> None:
    scope = cdk.Stack(cdk.App(), "Refused")
    with pytest.raises(ValueError, match=message):
        Gateway(scope, "Gateway", **_resources(default, scope), **options)


def _resources(deployment: Deployment, scope: cdk.Stack) -> dict[str, Any]:
    """Arguments for a construct that is refused before it uses them (the VPC and cluster of the
    synthesized stack are only referenced, never modified)."""
    return {
        "vpc": deployment.vpc,
        "cluster": deployment.gateway.service.cluster,
        "bucket": s3.Bucket.from_bucket_arn(scope, "Bucket", IMPORTED_BUCKET),
        "bucket_key": kms.Key.from_key_arn(scope, "Key", IMPORTED_KEY),
        "table": dynamodb.Table.from_table_arn(scope, "Table", IMPORTED_TABLE),
    }


# --- DIMSE gateway: task definition and service ---------------------------------------------------------


def test_gateway_container_runs_the_dockerfile_command_as_non_root(template: Template) -> None:
    container = _container(template, "GatewayTaskDefinition")
    assert container["Command"] == ["skypacs", "gateway"]
    assert container["User"] == "10001:10001"
    assert not container.get("Privileged", False)
    assert "LinuxParameters" not in container  # no added capabilities or devices
    assert container["PortMappings"] == [{"ContainerPort": 11112, "Protocol": "tcp"}]
    assert container["StopTimeout"] == 60
    assert container["Image"]["Fn::Sub"].startswith("${AWS::AccountId}.dkr.ecr.")


def test_one_image_staged_from_the_repository_root(app: cdk.App, template: Template) -> None:
    # Synthesis stages the build context without Docker; `cdk deploy` builds it. The staged copy must hold
    # the Dockerfile and what `pip install .` needs, and nothing else of the checkout.
    assembly = app.synth()
    manifest = json.loads((Path(assembly.directory) / "Containers.assets.json").read_text())
    (image,) = manifest["dockerImages"].values()
    assert image["source"]["dockerFile"] == "gateway/Dockerfile"
    assert image["source"]["platform"] == "linux/amd64"
    staged = Path(assembly.directory) / image["source"]["directory"]
    for needed in (
        "gateway/Dockerfile",
        "pyproject.toml",
        "README.md",
        "skypacs/__init__.py",
        "skypacs/cli.py",
    ):
        assert (staged / needed).is_file(), needed
    for absent in ("tests", "infra", "functions", "bench", ".git", "cdk.json"):
        assert not (staged / absent).exists(), absent
    assert not list(staged.rglob("__pycache__"))


def test_gateway_health_check_is_the_dockerfile_healthcheck(template: Template) -> None:
    health = _container(template, "GatewayTaskDefinition")["HealthCheck"]
    assert health == {
        "Command": ["CMD", "python", "-m", "skypacs.dimse.healthcheck"],
        "Interval": 30,
        "Timeout": 10,
        "StartPeriod": 20,
        "Retries": 3,
    }
    dockerfile = (gateway_module.REPO_ROOT / gateway_module.DOCKERFILE).read_text()
    assert "--interval=30s --timeout=10s --start-period=20s --retries=3" in dockerfile
    assert 'CMD ["python", "-m", "skypacs.dimse.healthcheck"]' in dockerfile


def test_gateway_environment(template: Template) -> None:
    environment = {
        e["Name"]: e["Value"] for e in _container(template, "GatewayTaskDefinition")["Environment"]
    }
    assert environment == {
        "SKYPACS_BUCKET": {"Ref": _logical_id_prefixed(template, "AWS::S3::Bucket", "StorageBucket")},
        "SKYPACS_CATALOG_TABLE": {"Ref": _logical_id_prefixed(template, "AWS::DynamoDB::Table", "Table")},
        "SKYPACS_AE_TITLE": "ARCHIVE",
        "SKYPACS_ALLOWED_AES": "CT01,MR02",
        "SKYPACS_DESTINATIONS": "WS1=10.0.0.5:104,VIEWER=[fd00::5]:11112",
    }


def _logical_id_prefixed(template: Template, resource_type: str, prefix: str) -> str:
    logical_id, _ = _one(template, resource_type, prefix)
    return logical_id


def test_gateway_environment_parses_as_skypacs_config(template: Template) -> None:
    from skypacs.config import load_settings

    environment = {
        e["Name"]: e["Value"]
        for e in _container(template, "GatewayTaskDefinition")["Environment"]
        if isinstance(e["Value"], str)
    }
    settings = load_settings(data_dir="/nonexistent-skypacs-data", environ=environment)
    assert settings.ae_title == "ARCHIVE"
    assert settings.allowed_aes == {"CT01", "MR02"}
    assert settings.destinations == {"WS1": "10.0.0.5:104", "VIEWER": "[fd00::5]:11112"}


def test_gateway_autoscales_on_cpu(template: Template, tls_template: Template) -> None:
    for tpl, (low, high) in ((template, (2, 10)), (tls_template, (1, 3))):
        target_id, target = _one(
            tpl, "AWS::ApplicationAutoScaling::ScalableTarget", "GatewayServiceTaskCount"
        )
        assert (target["MinCapacity"], target["MaxCapacity"]) == (low, high)
        tpl.has_resource_properties(
            "AWS::ApplicationAutoScaling::ScalingPolicy",
            {
                "ScalingTargetId": {"Ref": target_id},
                "PolicyType": "TargetTrackingScaling",
                "TargetTrackingScalingPolicyConfiguration": Match.object_like(
                    {
                        "PredefinedMetricSpecification": {
                            "PredefinedMetricType": "ECSServiceAverageCPUUtilization"
                        },
                        "TargetValue": 60,
                    }
                ),
            },
        )


@pytest.mark.parametrize("prefix", ["GatewayService", "StreamingService"])
def test_services_roll_back_failed_deployments(template: Template, prefix: str) -> None:
    services = {k: v for k, v in template.find_resources("AWS::ECS::Service").items() if k.startswith(prefix)}
    assert len(services) == 1
    (service,) = services.values()
    configuration = service["Properties"]["DeploymentConfiguration"]
    assert configuration["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}
    network = service["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["AssignPublicIp"] == "DISABLED"


def test_cluster_has_container_insights(template: Template) -> None:
    template.has_resource_properties(
        "AWS::ECS::Cluster", {"ClusterSettings": [{"Name": "containerInsights", "Value": "enabled"}]}
    )


def test_every_log_group_encrypted_with_retention(template: Template) -> None:
    groups = template.find_resources("AWS::Logs::LogGroup")
    assert len(groups) == 2
    for group in groups.values():
        assert group["Properties"]["RetentionInDays"] == 365
        assert "Fn::GetAtt" in group["Properties"]["KmsKeyId"]


# --- task roles -----------------------------------------------------------------------------------------


def _actions_and_resources(statements: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    for statement in statements:
        assert statement["Effect"] == "Allow"
        for action in _as_list(statement["Action"]):
            for resource in _as_list(statement["Resource"]):
                yield action, _render(resource)


@pytest.mark.parametrize("prefix", ["GatewayTaskPolicy", "StreamingTaskPolicy"])
def test_task_policies_have_no_wildcard_actions_or_resources(
    template: Template, tls_template: Template, prefix: str
) -> None:
    for tpl in (template, tls_template):
        for action, resource in _actions_and_resources(_statements(tpl, prefix)):
            assert "*" not in action, action
            assert resource != "*"
            if action.startswith("s3:"):
                assert re.search(r"/(studies|incoming|quarantine|catalog/metadata)/\*$", resource), resource


def test_gateway_task_policy_exact(tls_template: Template) -> None:
    grants = set(_actions_and_resources(_statements(tls_template, "GatewayTaskPolicy")))
    table = IMPORTED_TABLE
    assert grants == {
        ("s3:PutObject", f"{IMPORTED_BUCKET}/studies/*"),
        ("s3:PutObject", f"{IMPORTED_BUCKET}/incoming/*"),
        ("s3:PutObject", f"{IMPORTED_BUCKET}/quarantine/*"),
        ("s3:GetObject", f"{IMPORTED_BUCKET}/studies/*"),
        ("s3:GetObject", f"{IMPORTED_BUCKET}/catalog/metadata/*"),  # oversized catalog metadata
        ("kms:GenerateDataKey", IMPORTED_KEY),
        ("kms:Decrypt", IMPORTED_KEY),
        *{
            (action, resource)
            for action in ("dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem")
            for resource in (table, f"{table}/index/*")
        },
    }


def test_streaming_task_policy_read_only(tls_template: Template) -> None:
    grants = set(_actions_and_resources(_statements(tls_template, "StreamingTaskPolicy")))
    table = IMPORTED_TABLE
    assert grants == {
        ("s3:GetObject", f"{IMPORTED_BUCKET}/studies/*"),
        ("s3:GetObject", f"{IMPORTED_BUCKET}/catalog/metadata/*"),
        ("kms:Decrypt", IMPORTED_KEY),
        *{
            (action, resource)
            for action in ("dynamodb:GetItem", "dynamodb:Query")
            for resource in (table, f"{table}/index/*")
        },
    }


def test_task_policies_attached_to_task_roles(template: Template) -> None:
    for policy_prefix, role_prefix in (
        ("GatewayTaskPolicy", "GatewayTaskRole"),
        ("StreamingTaskPolicy", "StreamingTaskRole"),
    ):
        _, policy = _one(template, "AWS::IAM::ManagedPolicy", policy_prefix)
        role_id, _ = _one(template, "AWS::IAM::Role", role_prefix)
        assert policy["Roles"] == [{"Ref": role_id}]


@pytest.mark.parametrize("prefix", ["Gateway", "Streaming"])
def test_service_waits_for_its_task_policy(template: Template, prefix: str) -> None:
    policy_id, _ = _one(template, "AWS::IAM::ManagedPolicy", f"{prefix}TaskPolicy")
    services = template.find_resources("AWS::ECS::Service")
    (service,) = [v for k, v in services.items() if k.startswith(f"{prefix}Service")]
    assert policy_id in service["DependsOn"]


# --- streaming service ----------------------------------------------------------------------------------


def test_streaming_container(template: Template) -> None:
    container = _container(template, "StreamingTaskDefinition")
    assert container["Command"] == ["skypacs", "dicomweb"]
    assert container["User"] == "10001:10001"
    assert not container.get("Privileged", False)
    assert container["PortMappings"] == [{"ContainerPort": 8080, "Protocol": "tcp"}]
    names = {e["Name"] for e in container["Environment"]}
    assert names == {"SKYPACS_BUCKET", "SKYPACS_CATALOG_TABLE"}
    assert "/health" in container["HealthCheck"]["Command"][-1]


def test_signing_key_is_an_ecs_secret_never_plaintext(template: Template) -> None:
    secret_id, secret = _one(template, "AWS::SecretsManager::Secret", "StreamingSigningKey")
    container = _container(template, "StreamingTaskDefinition")
    assert container["Secrets"] == [{"Name": "SKYPACS_URL_SIGNING_KEY", "ValueFrom": {"Ref": secret_id}}]
    assert "SKYPACS_URL_SIGNING_KEY" not in {e["Name"] for e in container["Environment"]}
    generated = secret["GenerateSecretString"]
    assert generated["PasswordLength"] >= 32
    assert generated["ExcludePunctuation"] is True
    assert "SecretString" not in secret
    assert "Fn::GetAtt" in secret["KmsKeyId"]


def test_signing_secret_attribute(default: Deployment) -> None:
    assert default.streaming.signing_secret.node.path == "Containers/Streaming/SigningKey"


def test_streaming_behind_internal_alb(template: Template) -> None:
    _, alb = _one(template, LOAD_BALANCER, "StreamingLoadBalancer")
    assert alb["Type"] == "application"
    assert alb["Scheme"] == "internal"
    attributes = _attributes(alb)
    assert attributes["routing.http.drop_invalid_header_fields.enabled"] == "true"
    assert attributes["access_logs.s3.enabled"] == "true"
    listeners = _listeners(template, "StreamingLoadBalancer")
    assert set(listeners) == {80}
    _, group = _one(template, TARGET_GROUP, "StreamingLoadBalancerHttpStreaming")
    assert (group["Port"], group["Protocol"], group["TargetType"]) == (8080, "HTTP", "ip")
    assert group["HealthCheckPath"] == "/health"


def test_alb_admits_only_the_vpc(template: Template, default: Deployment) -> None:
    _, group = _one(template, "AWS::EC2::SecurityGroup", "StreamingLoadBalancerSecurityGroup")
    vpc_id = default.stack.get_logical_id(default.vpc.node.default_child)
    assert [(r["CidrIp"], r["FromPort"], r["ToPort"]) for r in group["SecurityGroupIngress"]] == [
        ({"Fn::GetAtt": [vpc_id, "CidrBlock"]}, 80, 80)
    ]


def test_cloudfront_https_only_uncached_vpc_origin(template: Template) -> None:
    _, distribution = _one(template, "AWS::CloudFront::Distribution", "StreamingDistribution")
    config = distribution["DistributionConfig"]
    behavior = config["DefaultCacheBehavior"]
    assert behavior["ViewerProtocolPolicy"] == "https-only"
    assert behavior["AllowedMethods"] == ["GET", "HEAD", "OPTIONS"]
    assert behavior["CachePolicyId"] == "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"  # Managed-CachingDisabled
    (origin,) = config["Origins"]
    assert "VpcOriginConfig" in origin
    assert origin["OriginPath"] == "/dicom-web"
    log_bucket_id, log_bucket = _one(template, "AWS::S3::Bucket", "StreamingAccessLogsBucket")
    assert config["Logging"]["Bucket"] == {"Fn::GetAtt": [log_bucket_id, "RegionalDomainName"]}
    _assert_log_bucket(template, log_bucket_id, log_bucket)
    alb_id, _ = _one(template, LOAD_BALANCER, "StreamingLoadBalancer")
    template.has_resource_properties(
        "AWS::CloudFront::VpcOrigin",
        {"VpcOriginEndpointConfig": Match.object_like({"Arn": {"Ref": alb_id}, "HTTPPort": 80})},
    )


def test_origin_requests_forward_signature_and_accept(template: Template) -> None:
    _, policy = _one(template, "AWS::CloudFront::OriginRequestPolicy", "StreamingOriginRequests")
    config = policy["OriginRequestPolicyConfig"]
    assert config["QueryStringsConfig"] == {"QueryStringBehavior": "all"}
    assert config["HeadersConfig"]["HeaderBehavior"] == "whitelist"
    assert "Accept" in config["HeadersConfig"]["Headers"]
    assert config["CookiesConfig"] == {"CookieBehavior": "none"}


def test_cloudfront_alias_with_certificate(tls_template: Template, tls: Deployment) -> None:
    _, distribution = _one(tls_template, "AWS::CloudFront::Distribution", "StreamingDistribution")
    config = distribution["DistributionConfig"]
    assert config["Aliases"] == [ALIAS]
    assert config["ViewerCertificate"] == {
        "AcmCertificateArn": EDGE_CERTIFICATE_ARN,
        "MinimumProtocolVersion": "TLSv1.2_2021",
        "SslSupportMethod": "sni-only",
    }
    assert tls.streaming.url == f"https://{ALIAS}"


def test_url_is_the_distribution_by_default(default: Deployment) -> None:
    url = default.streaming.url
    assert url.startswith("https://")
    resolved = default.stack.resolve(url)
    assert json.dumps(resolved).count("DomainName") == 1


def test_streaming_needs_domain_and_certificate_together(default: Deployment) -> None:
    scope = cdk.Stack(cdk.App(), "Refused")
    with pytest.raises(ValueError, match="certificate_arn"):
        StreamingService(scope, "Streaming", **_resources(default, scope), domain_name=ALIAS)


# --- cdk-nag --------------------------------------------------------------------------------------------


def _own_findings(stack: cdk.Stack, report: Any) -> list[str]:
    own = tuple(f"{stack.stack_name}/{scope}/" for scope in OWN_SCOPES)
    return [
        f"{v.rule_name} at {path}: {v.description}"
        for v in report.violations
        for path in (r.construct_path for r in v.violating_resources)
        if path.startswith(own)
    ]


@pytest.mark.parametrize("pack", [AwsSolutionsChecks, HIPAASecurityChecks])
@pytest.mark.parametrize("which", ["default", "tls"])
def test_no_unacknowledged_nag_findings(
    request: pytest.FixtureRequest, template: Template, tls_template: Template, pack: Any, which: str
) -> None:
    deployment: Deployment = request.getfixturevalue(which)
    assert _own_findings(deployment.stack, pack().validate_scope(deployment.stack)) == []


def test_nag_control_flags_an_open_gateway(default: Deployment) -> None:
    # Guards the test above against passing vacuously: a gateway open to the world is flagged.
    stack = cdk.Stack(cdk.App(), "NagControl")
    vpc = ec2.Vpc(stack, "Vpc", max_azs=1)
    Gateway(
        stack,
        "Gateway",
        vpc=vpc,
        cluster=make_cluster(stack, "Cluster", vpc),
        bucket=s3.Bucket.from_bucket_arn(stack, "Bucket", IMPORTED_BUCKET),
        bucket_key=kms.Key.from_key_arn(stack, "Key", IMPORTED_KEY),
        table=dynamodb.Table.from_table_arn(stack, "Table", IMPORTED_TABLE),
        allowed_cidrs=["0.0.0.0/0"],
    )
    findings = _own_findings(stack, AwsSolutionsChecks().validate_scope(stack))
    assert any(finding.startswith("AwsSolutions-EC23 ") for finding in findings), findings


def test_every_acknowledgement_has_a_reason(template: Template, default: Deployment, tls: Deployment) -> None:
    seen = 0
    for deployment in (default, tls):
        for scope in (deployment.gateway, deployment.streaming):
            for construct in scope.node.find_all():
                for entry in construct.node.metadata:
                    if entry.type != cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                        continue
                    for rule, reason in entry.data.items():
                        seen += 1
                        assert len(reason) > 30, (construct.node.path, rule)
    assert seen > 10
