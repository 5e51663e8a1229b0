"""The data plane constructs (Network, Catalog, Search, Indexer) with Storage, in one small stack:
CloudFormation assertions, cdk-nag AwsSolutions and HIPAA Security, and the search setup handler's pure
functions.

One app is synthesized per module: synthesis goes through the jsii Node.js process and dominates the run
time. Lambda bundling is skipped (``aws:cdk:bundling-stacks``).
"""

from __future__ import annotations

import json
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk.assertions import Template
from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks

from functions.search_setup import handler as setup
from infra.constructs.catalog import Catalog
from infra.constructs.indexer import Indexer
from infra.constructs.network import Network
from infra.constructs.search import Search
from infra.constructs.storage import Storage
from skypacs.adapters import dynamodb_catalog
from skypacs.config import ENV_BUCKET, ENV_CATALOG_TABLE, ENV_EVENT_BUS, ENV_OPENSEARCH_ENDPOINT

STACK_ID = "DataPlane"
#: Construct paths this module's constructs own, and what they add outside themselves (the bucket's
#: notifications and the stack's bucket-notifications handler singleton). Storage's own findings belong
#: to tests/infra/test_storage.py.
OWN_PATHS = tuple(
    f"{STACK_ID}/{p}"
    for p in ("Network", "Catalog", "Search", "Indexer", "Reader", "Storage/Bucket/Notifications",
              "BucketNotificationsHandler")
)


class Deployment:
    def __init__(self, context: dict[str, Any], outdir: str) -> None:
        self.app = cdk.App(context={**context, "aws:cdk:bundling-stacks": []}, outdir=outdir)
        self.stack = cdk.Stack(self.app, STACK_ID)
        self.storage = Storage(self.stack, "Storage")
        self.network = Network(self.stack, "Network")
        self.catalog = Catalog(self.stack, "Catalog")
        self.search = Search(self.stack, "Search", vpc=self.network.vpc, log_key=self.network.log_key)
        self.bus = events.EventBus(self.stack, "Bus")
        self.indexer = Indexer(
            self.stack,
            "Indexer",
            bucket=self.storage.bucket,
            bucket_key=self.storage.key,
            table=self.catalog.table,
            vpc=self.network.vpc,
            search=self.search,
            event_bus=self.bus,
            log_key=self.network.log_key,
        )
        # A reader added after construction, as the stack does for the API.
        self.reader = iam.Role(self.stack, "Reader", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
        self.search.add_reader(self.reader)
        # The reader's owner acknowledges its own policy form, as each construct of the stack does.
        cdk.Validations.of(self.reader).acknowledge(
            cdk.Acknowledgment(id="HIPAA.Security-IAMNoInlinePolicy", reason="test role")
        )
        self.template = Template.from_stack(self.stack)


@pytest.fixture(scope="module")
def deployment(cdk_context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    return Deployment(cdk_context, str(tmp_path_factory.mktemp("cdk.out")))


@pytest.fixture(scope="module")
def template(deployment: Deployment) -> Template:
    return deployment.template


def _one(template: Template, resource_type: str, prefix: str = "") -> tuple[str, dict[str, Any]]:
    found = {k: v for k, v in template.find_resources(resource_type).items() if k.startswith(prefix)}
    assert len(found) == 1, f"expected one {resource_type} {prefix}*, found {list(found)}"
    ((logical_id, resource),) = found.items()
    return logical_id, resource


def _props(template: Template, resource_type: str, prefix: str = "") -> dict[str, Any]:
    return dict(_one(template, resource_type, prefix)[1]["Properties"])


def _statements(template: Template, role_prefix: str) -> list[dict[str, Any]]:
    policies = template.find_resources("AWS::IAM::Policy")
    role_id = _one(template, "AWS::IAM::Role", role_prefix)[0]
    return [
        statement
        for policy in policies.values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def _listify(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# --- network ---------------------------------------------------------------------------------------


def test_vpc_has_public_and_private_egress_subnets(template: Template) -> None:
    subnets = template.find_resources("AWS::EC2::Subnet")
    types = sorted(
        tag["Value"]
        for subnet in subnets.values()
        for tag in subnet["Properties"]["Tags"]
        if tag["Key"] == "aws-cdk:subnet-type"
    )
    assert types == ["Private", "Private", "Public", "Public"]
    assert all(not s["Properties"].get("MapPublicIpOnLaunch", False) for s in subnets.values())
    template.resource_count_is("AWS::EC2::NatGateway", 1)


def test_gateway_endpoints_for_s3_and_dynamodb(template: Template) -> None:
    endpoints = template.find_resources("AWS::EC2::VPCEndpoint")
    services = sorted(json.dumps(e["Properties"]["ServiceName"]).rsplit(".", 1)[-1].strip('"]}') for e in endpoints.values())
    assert services == ["dynamodb", "s3"]
    assert {e["Properties"]["VpcEndpointType"] for e in endpoints.values()} == {"Gateway"}


def test_flow_logs_to_encrypted_log_group(template: Template) -> None:
    flow_log = _props(template, "AWS::EC2::FlowLog")
    assert flow_log["TrafficType"] == "ALL"
    assert flow_log["LogDestinationType"] == "cloud-watch-logs"
    group = _props(template, "AWS::Logs::LogGroup", "NetworkFlowLogs")
    assert flow_log["LogGroupName"] == {"Ref": _one(template, "AWS::Logs::LogGroup", "NetworkFlowLogs")[0]}
    assert "KmsKeyId" in group and group["RetentionInDays"] > 0


def test_default_security_group_restricted(template: Template) -> None:
    template.resource_count_is("Custom::VpcRestrictDefaultSG", 1)


# --- catalog ---------------------------------------------------------------------------------------


class _SchemaRecorder:
    """A DynamoDB client that records ``create_table`` (the adapter's schema) and waits for nothing."""

    def __init__(self) -> None:
        self.table: dict[str, Any] = {}

    def create_table(self, **kwargs: Any) -> None:
        self.table = kwargs

    def get_waiter(self, name: str) -> Any:
        return type("Waiter", (), {"wait": lambda self, **kwargs: None})()


def test_table_schema_equals_the_adapters(template: Template) -> None:
    recorder = _SchemaRecorder()
    dynamodb_catalog.create_catalog_table(recorder, "catalog")
    expected = recorder.table
    table = _props(template, "AWS::DynamoDB::Table")
    assert table["KeySchema"] == expected["KeySchema"]
    assert sorted(table["AttributeDefinitions"], key=str) == sorted(expected["AttributeDefinitions"], key=str)
    assert table["GlobalSecondaryIndexes"] == expected["GlobalSecondaryIndexes"]
    assert table["GlobalSecondaryIndexes"][0]["IndexName"] == dynamodb_catalog.SOP_INDEX
    assert table["BillingMode"] == expected["BillingMode"] == "PAY_PER_REQUEST"


def test_table_encrypted_with_rotating_cmk_pitr_and_deletion_protection(
    deployment: Deployment, template: Template
) -> None:
    table = _props(template, "AWS::DynamoDB::Table")
    key_id = _one(template, "AWS::KMS::Key", "CatalogKey")[0]
    assert table["SSESpecification"] == {
        "SSEEnabled": True,
        "SSEType": "KMS",
        "KMSMasterKeyId": {"Fn::GetAtt": [key_id, "Arn"]},
    }
    assert _props(template, "AWS::KMS::Key", "CatalogKey")["EnableKeyRotation"] is True
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["DeletionProtectionEnabled"] is True
    _, resource = _one(template, "AWS::DynamoDB::Table")
    assert resource["DeletionPolicy"] == "Retain"
    assert deployment.catalog.key is not None


def test_table_in_backup_plan(template: Template) -> None:
    table_id = _one(template, "AWS::DynamoDB::Table")[0]
    selection = _props(template, "AWS::Backup::BackupSelection")
    assert {"Fn::GetAtt": [table_id, "Arn"]} in selection["BackupSelection"]["Resources"]


# --- search ----------------------------------------------------------------------------------------


def test_domain_in_vpc_encrypted_https_only(template: Template) -> None:
    domain = _props(template, "AWS::OpenSearchService::Domain")
    assert domain["EngineVersion"].startswith("OpenSearch_")
    assert len(domain["VPCOptions"]["SubnetIds"]) == 2
    assert all("Private" in ref["Ref"] for ref in domain["VPCOptions"]["SubnetIds"])
    assert domain["NodeToNodeEncryptionOptions"] == {"Enabled": True}
    assert domain["EncryptionAtRestOptions"]["Enabled"] is True
    assert "KmsKeyId" in domain["EncryptionAtRestOptions"]
    assert domain["DomainEndpointOptions"]["EnforceHTTPS"] is True
    assert domain["DomainEndpointOptions"]["TLSSecurityPolicy"].startswith("Policy-Min-TLS-1-2")
    assert domain["ClusterConfig"]["ZoneAwarenessEnabled"] is True
    assert domain["ClusterConfig"]["MultiAZWithStandbyEnabled"] is False


def test_domain_fgac_master_is_setup_function_role(template: Template) -> None:
    domain = _props(template, "AWS::OpenSearchService::Domain")
    role_id = _one(template, "AWS::IAM::Role", "SearchSetupFunctionServiceRole")[0]
    assert domain["AdvancedSecurityOptions"]["Enabled"] is True
    assert domain["AdvancedSecurityOptions"]["MasterUserOptions"] == {"MasterUserARN": {"Fn::GetAtt": [role_id, "Arn"]}}


def test_domain_access_policy_delegates_to_account_iam(template: Template) -> None:
    (statement,) = _props(template, "AWS::OpenSearchService::Domain")["AccessPolicies"]["Statement"]
    assert statement["Effect"] == "Allow"
    assert "*" not in json.dumps(statement["Principal"])
    assert ":root" in json.dumps(statement["Principal"])


def test_domain_logs_published_to_groups_with_retention(template: Template) -> None:
    options = _props(template, "AWS::OpenSearchService::Domain")["LogPublishingOptions"]
    assert set(options) == {"SEARCH_SLOW_LOGS", "INDEX_SLOW_LOGS", "ES_APPLICATION_LOGS", "AUDIT_LOGS"}
    assert all(option["Enabled"] for option in options.values())
    policy = _props(template, "AWS::Logs::ResourcePolicy")
    assert "es.amazonaws.com" in json.dumps(policy)


def test_setup_custom_resource_maps_reader_and_writer_roles(template: Template) -> None:
    props = _props(template, "Custom::SkyPacsSearchSetup")
    indexer_role = _one(template, "AWS::IAM::Role", "IndexerFunctionServiceRole")[0]
    reader_role = _one(template, "AWS::IAM::Role", "Reader")[0]
    assert props["WriterRoles"] == [{"Fn::GetAtt": [indexer_role, "Arn"]}]
    assert props["ReaderRoles"] == [{"Fn::GetAtt": [reader_role, "Arn"]}]
    assert props["Prefix"] == "skypacs"
    assert props["InstanceShards"] == "2"  # one primary per data node by default


def test_reader_gets_read_actions_only(template: Template) -> None:
    actions = {a for s in _statements(template, "Reader") for a in _listify(s["Action"])}
    assert actions == {"es:ESHttpGet", "es:ESHttpHead", "es:ESHttpPost"}


def test_domain_admits_indexer_on_443(template: Template) -> None:
    domain_sg = _one(template, "AWS::EC2::SecurityGroup", "SearchSecurityGroup")[0]
    indexer_sg = _one(template, "AWS::EC2::SecurityGroup", "IndexerFunctionSecurityGroup")[0]
    template.has_resource_properties(
        "AWS::EC2::SecurityGroupIngress",
        {
            "GroupId": {"Fn::GetAtt": [domain_sg, "GroupId"]},
            "SourceSecurityGroupId": {"Fn::GetAtt": [indexer_sg, "GroupId"]},
            "FromPort": 443,
            "ToPort": 443,
        },
    )


# --- indexer ---------------------------------------------------------------------------------------


def test_queues_encrypted_tls_only_with_redrive(template: Template) -> None:
    dlq_id, dlq = _one(template, "AWS::SQS::Queue", "IndexerDeadLetterQueue")
    queue = _props(template, "AWS::SQS::Queue", "IndexerQueue")
    assert queue["SqsManagedSseEnabled"] is True and dlq["Properties"]["SqsManagedSseEnabled"] is True
    assert queue["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]}, "maxReceiveCount": 5}
    assert dlq["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert queue["VisibilityTimeout"] >= 6 * 60
    for prefix in ("IndexerQueuePolicy", "IndexerDeadLetterQueuePolicy"):
        statements = _props(template, "AWS::SQS::QueuePolicy", prefix)["PolicyDocument"]["Statement"]
        assert any(
            s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in statements
        )


def test_event_source_reports_batch_item_failures(template: Template) -> None:
    mapping = _props(template, "AWS::Lambda::EventSourceMapping")
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["MaximumBatchingWindowInSeconds"] >= 1  # SQS requires a window for batches over 10
    assert mapping["BatchSize"] == 100  # one index write per batch: the series documents rebuilt once
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": 50}


def test_bucket_notifies_queue_for_studies_and_incoming(template: Template) -> None:
    queue_id = _one(template, "AWS::SQS::Queue", "IndexerQueue")[0]
    config = _props(template, "Custom::S3BucketNotifications")["NotificationConfiguration"]
    prefixes = sorted(
        rule["Value"]
        for c in config["QueueConfigurations"]
        if c["QueueArn"] == {"Fn::GetAtt": [queue_id, "Arn"]} and c["Events"] == ["s3:ObjectCreated:*"]
        for rule in c["Filter"]["Key"]["FilterRules"]
        if rule["Name"] == "prefix"
    )
    assert prefixes == ["incoming/", "studies/"]


def test_indexer_function_configuration(template: Template) -> None:
    function = _props(template, "AWS::Lambda::Function", "IndexerFunction")
    assert function["Handler"] == "functions.indexer.handler.handler"
    assert function["Runtime"] == "python3.12"
    assert function["MemorySize"] == 1024
    assert function["Timeout"] == 60
    assert function["TracingConfig"] == {"Mode": "Active"}
    assert function["ReservedConcurrentExecutions"] == 50
    assert all("Private" in s["Ref"] for s in function["VpcConfig"]["SubnetIds"])
    variables = function["Environment"]["Variables"]
    for name in (ENV_BUCKET, ENV_CATALOG_TABLE, ENV_EVENT_BUS, ENV_OPENSEARCH_ENDPOINT, "POWERTOOLS_SERVICE_NAME"):
        assert name in variables


def _actions_on(statements: list[dict[str, Any]], action: str) -> list[str]:
    return sorted(
        json.dumps(resource)
        for s in statements
        if action in _listify(s["Action"])
        for resource in _listify(s["Resource"])
    )


def test_indexer_s3_permissions_by_prefix(template: Template) -> None:
    statements = _statements(template, "IndexerFunctionServiceRole")
    puts = _actions_on(statements, "s3:PutObject")
    deletes = _actions_on(statements, "s3:DeleteObject")
    # catalog/metadata/: instance metadata too large for a DynamoDB item (written, replaced, deleted).
    assert [p.split('"/')[-1] for p in puts] == ['catalog/metadata/*"]]}', 'quarantine/*"]]}', 'studies/*"]]}']
    assert [d.split('"/')[-1] for d in deletes] == ['catalog/metadata/*"]]}', 'incoming/*"]]}', 'studies/*"]]}']
    assert _actions_on(statements, "s3:GetObject")
    assert _actions_on(statements, "events:PutEvents")
    assert _actions_on(statements, "es:ESHttpPut")
    assert _actions_on(statements, "dynamodb:PutItem")
    assert _actions_on(statements, "kms:GenerateDataKey")


# --- whole stack -----------------------------------------------------------------------------------


def test_every_log_group_has_retention(template: Template) -> None:
    groups = template.find_resources("AWS::Logs::LogGroup")
    assert len(groups) >= 7
    missing = [k for k, g in groups.items() if not g["Properties"].get("RetentionInDays")]
    assert missing == []
    unencrypted = [k for k, g in groups.items() if "KmsKeyId" not in g["Properties"]]
    assert unencrypted == []


def test_no_wildcard_actions_on_wildcard_resources(template: Template) -> None:
    offending = []
    for kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        for logical_id, policy in template.find_resources(kind).items():
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                if statement["Effect"] != "Allow" or "*" not in _listify(statement.get("Resource")):
                    continue
                wild = [a for a in _listify(statement["Action"]) if a == "*" or a.endswith(":*")]
                if wild:
                    offending.append((logical_id, wild))
    assert offending == []


def _findings(report: Any) -> list[str]:
    return [
        f"{v.rule_name} at {path}"
        for v in report.violations
        for path in (r.construct_path for r in v.violating_resources)
        if path.startswith(OWN_PATHS)
    ]


@pytest.mark.parametrize("pack", [AwsSolutionsChecks, HIPAASecurityChecks], ids=["AwsSolutions", "HIPAA"])
def test_no_unacknowledged_nag_findings(deployment: Deployment, pack: Any) -> None:
    assert _findings(pack().validate_scope(deployment.stack)) == []


# --- search setup handler (no cluster) -------------------------------------------------------------


class _FakeTransport:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    def perform_request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        self.calls.append((method, path, body))
        return {}


class _FakeClient:
    def __init__(self) -> None:
        self.transport = _FakeTransport()


PROPERTIES = {
    "ServiceToken": "arn:aws:lambda:eu-west-1:1:function:x",
    "Endpoint": "vpc-skypacs-abc.eu-west-1.es.amazonaws.com",
    "Prefix": "skypacs",
    "ReaderRoles": ["arn:aws:iam::1:role/api", "arn:aws:iam::1:role/gateway", "arn:aws:iam::1:role/api"],
    "WriterRoles": ["arn:aws:iam::1:role/indexer"],
}


def test_setup_request_from_properties() -> None:
    request = setup.SetupRequest.from_properties(PROPERTIES)
    assert request.reader_roles == ("arn:aws:iam::1:role/api", "arn:aws:iam::1:role/gateway")
    assert request.writer_roles == ("arn:aws:iam::1:role/indexer",)
    assert setup.SetupRequest.from_properties({**PROPERTIES, "ReaderRoles": ""}).reader_roles == ()
    with pytest.raises(ValueError, match="Endpoint"):
        setup.SetupRequest.from_properties({"Prefix": "skypacs"})
    assert request.instance_shards == 1
    assert setup.SetupRequest.from_properties({**PROPERTIES, "InstanceShards": "36"}).instance_shards == 36
    with pytest.raises(ValueError, match="InstanceShards"):
        setup.SetupRequest.from_properties({**PROPERTIES, "InstanceShards": "0"})


def test_roles_limited_to_the_archives_indices() -> None:
    bodies = setup.role_bodies("skypacs")
    names = ["skypacs-instances", "skypacs-series", "skypacs-studies", "skypacs-patients", "skypacs-sequence"]
    for body in bodies.values():
        (permission,) = body["index_permissions"]
        assert sorted(permission["index_patterns"]) == sorted(names)
    assert bodies[setup.READ_ROLE]["index_permissions"][0]["allowed_actions"] == ["read"]
    assert bodies[setup.WRITE_ROLE]["index_permissions"][0]["allowed_actions"] == ["crud"]


def test_security_calls_define_roles_before_mapping_them() -> None:
    calls = setup.security_calls(setup.SetupRequest.from_properties(PROPERTIES))
    assert [(c.method, c.path) for c in calls] == [
        ("PUT", "/_plugins/_security/api/roles/skypacs_read"),
        ("PUT", "/_plugins/_security/api/roles/skypacs_write"),
        ("PUT", "/_plugins/_security/api/rolesmapping/skypacs_read"),
        ("PUT", "/_plugins/_security/api/rolesmapping/skypacs_write"),
    ]
    assert calls[2].body == {"backend_roles": ["arn:aws:iam::1:role/api", "arn:aws:iam::1:role/gateway"]}
    assert calls[3].body == {"backend_roles": ["arn:aws:iam::1:role/indexer"]}


def test_apply_creates_indices_then_configures() -> None:
    client = _FakeClient()
    created: list[tuple[Any, dict[str, Any]]] = []
    setup.apply(
        client,
        setup.SetupRequest.from_properties(PROPERTIES),
        index_factory=lambda c, **kwargs: created.append((c, kwargs)),
    )
    assert created == [(client, {"prefix": "skypacs", "create_indices": True, "shards": 1})]
    paths = [path for _, path, _ in client.transport.calls]
    assert paths[0].endswith("/_settings") and "skypacs-instances" in paths[0]
    security = [c.path for c in setup.security_calls(setup.SetupRequest.from_properties(PROPERTIES))]
    assert paths[1:] == [*security, "/_plugins/_security/api/audit/config"]


def test_audit_config_never_logs_request_bodies() -> None:
    call = setup.audit_call()
    assert call.body["enabled"] is True
    assert call.body["audit"]["log_request_body"] is False
    assert call.body["compliance"]["write_log_diffs"] is False


def test_audit_config_refusal_does_not_fail_setup(caplog: pytest.LogCaptureFixture) -> None:
    class Refusing(_FakeTransport):
        def perform_request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
            if path.endswith("/audit/config"):
                raise RuntimeError("refused")
            return super().perform_request(method, path, body)

    client = _FakeClient()
    client.transport = Refusing()
    setup.apply(client, setup.SetupRequest.from_properties(PROPERTIES), index_factory=lambda c, **kwargs: None)
    assert len(client.transport.calls) == 5
    assert "audit logging could not be configured" in caplog.text


def test_handler_delete_does_nothing() -> None:
    event = {"RequestType": "Delete", "PhysicalResourceId": "skypacs-search-setup-skypacs", "ResourceProperties": {}}
    assert setup.handler(event, None) == {"PhysicalResourceId": "skypacs-search-setup-skypacs"}


def test_physical_id_is_stable() -> None:
    request = setup.SetupRequest.from_properties(PROPERTIES)
    other = setup.SetupRequest.from_properties({**PROPERTIES, "WriterRoles": []})
    assert setup.physical_id(request) == setup.physical_id(other)

