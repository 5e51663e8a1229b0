"""The whole SkyPACS stack as `cdk synth` builds it (cdk.json context, AwsSolutions and HIPAA Security
plugins): what holds across every construct, the outputs a user reads, and the context options.

One app is synthesized for the module; Lambda bundling is skipped (tests/infra/test_bundling.py builds
the bundle).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Annotations, Match, Template
from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks

from infra.app import build_app
from infra.context import SETTINGS
from infra.stack import SkyPacsStack
from tests.bench_scripts import load_bench_script

CONTEXT = {
    "corsOrigins": "https://viewer.example.org",
    "authCallbackUrls": "https://viewer.example.org/callback",
    "gatewayAllowedAes": "CT01,MR01",
    "gatewayDestinations": "WS01=10.0.0.5:104",
    "gatewayTlsCertificateArn": "arn:aws:acm:eu-west-1:123456789012:certificate/abc",
    "alarmEmail": "pacs-ops@example.org",
    "plugins": [{"name": "event-log", "handler": "functions.plugins.event_log.handler",
                 "detailTypes": ["InstanceStored", "InstanceDeleted"]}],
}


@pytest.fixture(scope="module")
def app_and_stack(cdk_context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> tuple[cdk.App, SkyPacsStack]:
    app = cdk.App(context={**cdk_context, **CONTEXT}, outdir=str(tmp_path_factory.mktemp("cdk.out")))
    return build_app(app)


@pytest.fixture(scope="module")
def stack(app_and_stack: tuple[cdk.App, SkyPacsStack]) -> SkyPacsStack:
    return app_and_stack[1]


@pytest.fixture(scope="module")
def template(stack: SkyPacsStack) -> Template:
    # Synthesis runs the validation plugins: an unacknowledged cdk-nag finding fails it.
    return Template.from_stack(stack)


def _statements(template: Template) -> list[dict[str, Any]]:
    return [s for kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")
            for p in template.find_resources(kind).values() for s in p["Properties"]["PolicyDocument"]["Statement"]]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("pack", [AwsSolutionsChecks, HIPAASecurityChecks], ids=["AwsSolutions", "HIPAA"])
def test_zero_unacknowledged_nag_findings(stack: SkyPacsStack, pack: Any) -> None:
    report = pack().validate_scope(stack)
    assert [f"{v.rule_name} at {[r.construct_path for r in v.violating_resources]}" for v in report.violations] == []


def test_synthesis_has_no_error_or_warning(template: Template, stack: SkyPacsStack) -> None:
    annotations = Annotations.from_stack(stack)
    assert annotations.find_error("*", Match.any_value()) == []


def test_no_wildcard_action_on_wildcard_resource(template: Template) -> None:
    offending = [s for s in _statements(template) if s["Effect"] == "Allow" and "*" in _list(s.get("Resource"))
                 and any(a == "*" or str(a).endswith(":*") for a in _list(s["Action"]))]
    assert offending == []


def test_every_log_group_has_retention_and_encryption(template: Template) -> None:
    groups = template.find_resources("AWS::Logs::LogGroup")
    assert groups
    assert [lid for lid, g in groups.items() if "RetentionInDays" not in g.get("Properties", {})] == []
    assert [lid for lid, g in groups.items() if "KmsKeyId" not in g.get("Properties", {})] == []


def test_every_function_in_the_vpc_on_python312_with_tracing(template: Template) -> None:
    functions = template.find_resources("AWS::Lambda::Function")
    ours = {lid: f["Properties"] for lid, f in functions.items()
            if str(f["Properties"].get("Handler", "")).startswith("functions.")}
    handlers = {p["Handler"] for p in ours.values()}
    assert {"functions.indexer.handler.handler", "functions.dicomweb.app.app",
            "functions.authorizer.handler.handler", "functions.search_setup.handler.handler",
            "functions.plugins.event_log.handler"} <= handlers
    for properties in ours.values():
        assert properties["Runtime"] == "python3.12"
        assert properties["VpcConfig"]["SubnetIds"]
        assert properties["TracingConfig"] == {"Mode": "Active"}


def test_data_stores_encrypted_and_retained(template: Template) -> None:
    for logical_id, bucket in template.find_resources("AWS::S3::Bucket").items():
        properties = bucket["Properties"]
        assert properties["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True}, logical_id
        assert properties["BucketEncryption"], logical_id
    (table,) = template.find_resources("AWS::DynamoDB::Table").values()
    assert table["DeletionPolicy"] == "Retain" and table["Properties"]["SSESpecification"]["SSEEnabled"]
    (domain,) = template.find_resources("AWS::OpenSearchService::Domain").values()
    assert domain["DeletionPolicy"] == "Retain"
    assert domain["Properties"]["EncryptionAtRestOptions"]["Enabled"] is True
    assert domain["Properties"]["NodeToNodeEncryptionOptions"]["Enabled"] is True


def test_outputs_tell_users_where_to_point_modalities_and_viewers(template: Template) -> None:
    outputs = template.find_outputs("*")
    assert {"BucketName", "CatalogTableName", "GatewayHost", "GatewayPort", "GatewayTlsPort", "DicomWebUrl",
            "StreamingUrl", "OidcIssuer", "UserPoolId", "ViewerClientId", "ScriptClientId", "AuthDomain",
            "IngestDeadLetterQueue", "EventBusName", "AlarmTopicArn", "DashboardName"} <= set(outputs)
    assert outputs["GatewayPort"]["Value"] == "11112" and outputs["GatewayTlsPort"]["Value"] == "2762"


def test_context_reaches_the_constructs(template: Template) -> None:
    functions = [f["Properties"] for f in template.find_resources("AWS::Lambda::Function").values()]
    api = next(p for p in functions if p.get("Handler") == "functions.dicomweb.app.app")
    variables = api["Environment"]["Variables"]
    assert variables["SKYPACS_CORS_ORIGINS"] == "https://viewer.example.org"
    assert "SKYPACS_OPENSEARCH_ENDPOINT" in variables and "SKYPACS_STREAMING_URL" in variables
    (task,) = [t for t in template.find_resources("AWS::ECS::TaskDefinition").values()
               if "skypacs gateway" in json.dumps(t) or "SKYPACS_ALLOWED_AES" in json.dumps(t)]
    environment = {e["Name"]: e["Value"] for c in task["Properties"]["ContainerDefinitions"]
                   for e in c.get("Environment", [])}
    assert environment["SKYPACS_ALLOWED_AES"] == "CT01,MR01"
    assert environment["SKYPACS_DESTINATIONS"] == "WS01=10.0.0.5:104"
    assert "SKYPACS_OPENSEARCH_ENDPOINT" in environment  # C-FIND from the index


def test_sizes_from_context(cdk_context: dict[str, Any], tmp_path: Path) -> None:
    context = {**cdk_context, "searchShards": "36", "streamingDesiredCount": "3", "streamingMaxCount": "10"}
    stack = SkyPacsStack(cdk.App(context=context, outdir=str(tmp_path)), "Sized")
    template = Template.from_stack(stack)
    template.has_resource_properties("Custom::SkyPacsSearchSetup", {"InstanceShards": "36"})
    (service,) = [lid for lid in template.find_resources("AWS::ECS::Service") if lid.startswith("StreamingService")]
    assert template.to_json()["Resources"][service]["Properties"]["DesiredCount"] == 3
    targets = [t["Properties"] for t in template.find_resources("AWS::ApplicationAutoScaling::ScalableTarget").values()]
    assert sorted((t["MinCapacity"], t["MaxCapacity"]) for t in targets) == [(2, 10), (3, 10)]  # gateway, streaming


def test_browser_uploads_allowed_from_the_viewer_origin_only(template: Template) -> None:
    (bucket,) = [b["Properties"] for lid, b in template.find_resources("AWS::S3::Bucket").items()
                 if lid.startswith("StorageBucket")]
    (rule,) = bucket["CorsConfiguration"]["CorsRules"]
    assert rule["AllowedMethods"] == ["PUT"] and rule["AllowedOrigins"] == ["https://viewer.example.org"]


def test_template_within_cloudformation_limits(template: Template) -> None:
    document = template.to_json()
    assert len(document["Resources"]) < 500
    assert len(json.dumps(document)) < 1_000_000


@pytest.mark.parametrize(("key", "value", "message"), [
    ("searchDataNodes", "two", "whole number"),
    ("gatewayDestinations", "WS01=nohostport", "AE=host:port"),
    ("gatewayInternetFacing", "maybe", "true or false"),
    ("plugins", "[{\"name\": \"x\"}]", "'plugins'.*missing"),
    ("searchDataNode", "6", "unknown context key.*'searchDataNode' \\(did you mean 'searchDataNodes'\\?\\)"),
    ("gatewayAllowedAEs", "CT01", "did you mean 'gatewayAllowedAes'"),
    ("authReadScope", "pacs.read", "authReadScope.*need.*authIssuer"),
])
def test_bad_context_stops_synthesis_naming_the_key(cdk_context: dict[str, Any], key: str, value: str,
                                                     message: str) -> None:
    app = cdk.App(context={**cdk_context, key: value})
    with pytest.raises(ValueError, match=message):
        SkyPacsStack(app, "Bad")


def test_cost_estimate_prices_what_the_stack_provisions(template: Template) -> None:
    """``bench/cost.py`` models the default deployment; this stack adds one plugin and a TLS listener."""
    cost = load_bench_script("cost")
    dep = replace(cost.Deployment(), plugins=1, gateway_tls=True)
    document = template.to_json()["Resources"]

    def of_type(kind: str) -> list[dict[str, Any]]:
        return [r.get("Properties", {}) for r in document.values() if r["Type"] == kind]

    functions = {f.get("Handler"): f.get("MemorySize") for f in of_type("AWS::Lambda::Function")}
    assert functions["functions.indexer.handler.handler"] == dep.indexer_memory_gb * 1024
    assert functions["functions.dicomweb.app.app"] == round(dep.api_memory_gb * 1024)
    assert functions["functions.authorizer.handler.handler"] == dep.authorizer_memory_gb * 1024
    assert functions["functions.plugins.event_log.handler"] == dep.plugin_memory_gb * 1024
    assert len(of_type("AWS::KMS::Key")) == dep.kms_keys
    assert len(of_type("AWS::CloudWatch::Alarm")) == cost.alarm_count(dep)
    assert len(of_type("AWS::CloudWatch::Dashboard")) == dep.dashboards
    assert len(of_type("AWS::SecretsManager::Secret")) == dep.secrets
    assert len(of_type("AWS::EC2::NatGateway")) == dep.nat_gateways
    (domain,) = of_type("AWS::OpenSearchService::Domain")
    assert domain["ClusterConfig"]["InstanceCount"] == dep.search_data_nodes
    assert domain["ClusterConfig"]["InstanceType"] == "r6g.large.search"  # Prices.opensearch_r6g_large_hour
    assert domain["ClusterConfig"]["DedicatedMasterEnabled"] == (dep.search_master_nodes > 0)
    assert domain["EBSOptions"]["VolumeSize"] == dep.search_volume_gib
    services = {json.dumps(s.get("TaskDefinition")): s.get("DesiredCount") for s in of_type("AWS::ECS::Service")}
    tasks = {lid: r["Properties"] for lid, r in document.items() if r["Type"] == "AWS::ECS::TaskDefinition"}
    for prefix, count, vcpu, gb in (("Gateway", dep.gateway_tasks, dep.gateway_vcpu, dep.gateway_gb),
                                    ("Streaming", dep.streaming_tasks, dep.streaming_vcpu, dep.streaming_gb)):
        (lid,) = [lid for lid in tasks if lid.startswith(prefix)]
        assert (int(tasks[lid]["Cpu"]), int(tasks[lid]["Memory"])) == (vcpu * 1024, gb * 1024)
        assert services[json.dumps({"Ref": lid})] == count


def test_every_context_key_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert [key for key in SETTINGS if f"`{key}`" not in readme] == []
