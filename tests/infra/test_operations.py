"""The Plugins and Observability constructs, in a test stack of their own: CloudFormation assertions and
cdk-nag (AwsSolutions and HIPAA Security) on the two constructs.

One app is synthesized per module (the jsii Node.js process dominates the run time). The stack around the
constructs is a plain VPC, a dummy function, an ingest queue and its dead-letter queue, a REST API with one
mock method, an NLB with a target group, and a Fargate service: just enough to watch.
"""

from __future__ import annotations

import json
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from aws_cdk.assertions import Match, Template
from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks

from infra.constructs.observability import Observability
from infra.constructs.plugins import Plugins, PluginSpec, plugin_specs_from_context
from skypacs.adapters.eventbridge import DEFAULT_SOURCE

STACK = "OpsTest"
EVENT_LOG = PluginSpec(
    name="event-log",
    handler="functions.plugins.event_log.handler",
    detail_types=("InstanceStored", "InstanceDeleted"),
    memory_mib=256,
    timeout_seconds=30,
    environment={"SKYPACS_LOG_IDENTIFIERS": "0"},
)
ALARM = "AWS::CloudWatch::Alarm"


class OpsStack(cdk.Stack):
    def __init__(self, scope: cdk.App, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.vpc = ec2.Vpc(self, "Vpc", max_azs=2, nat_gateways=1)
        self.plugins = Plugins(self, "Plugins", vpc=self.vpc, plugins=[EVENT_LOG], archive_retention_days=30)
        self.publisher = iam.Role(self, "Publisher", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
        self.plugins.grant_put_events(self.publisher)

        self.function = lambda_.Function(
            self,
            "Dummy",
            code=lambda_.Code.from_inline("def handler(event, context):\n    return None\n"),
            handler="index.handler",
            runtime=lambda_.Runtime.PYTHON_3_12,
        )
        self.ingest_dlq = sqs.Queue(self, "IngestDeadLetters")
        self.ingest_queue = sqs.Queue(
            self,
            "Ingest",
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.ingest_dlq, max_receive_count=3),
        )
        self.api = apigw.RestApi(self, "Api", rest_api_name="skypacs-dicomweb")
        self.api.root.add_method(
            "GET",
            apigw.MockIntegration(
                integration_responses=[apigw.IntegrationResponse(status_code="200")],
                request_templates={"application/json": '{"statusCode": 200}'},
            ),
            method_responses=[apigw.MethodResponse(status_code="200")],
        )
        self.nlb = elbv2.NetworkLoadBalancer(self, "Nlb", vpc=self.vpc)
        self.target_group = elbv2.NetworkTargetGroup(
            self, "Dimse", vpc=self.vpc, port=11112, target_type=elbv2.TargetType.IP
        )
        self.nlb.add_listener("Dimse", port=11112, default_target_groups=[self.target_group])
        cluster = ecs.Cluster(self, "Cluster", vpc=self.vpc)
        task = ecs.FargateTaskDefinition(self, "Task")
        task.add_container(
            "gateway", image=ecs.ContainerImage.from_registry("public.ecr.aws/docker/library/busybox")
        )
        self.service = ecs.FargateService(
            self,
            "Gateway",
            cluster=cluster,
            task_definition=task,
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
            min_healthy_percent=100,
        )

        # Some inputs to the constructor, the rest added as the "stack" builds them.
        self.observability = Observability(
            self,
            "Observability",
            functions={"Dummy": self.function},
            queues={"Ingest": self.ingest_queue},
            dead_letter_queues={"IngestDeadLetters": self.ingest_dlq},
            rest_api=self.api,
            load_balancers={"Gateway": self.nlb},
            target_groups={"Gateway": self.target_group},
            alarm_email="ops@example.org",
        )
        self.observability.add_function("EventLog", self.plugins.functions["event-log"])
        self.observability.add_dead_letter_queue("PluginDeadLetters", self.plugins.dead_letter_queue)
        self.observability.add_service("GatewayService", self.service)


@pytest.fixture(scope="module")
def stack(cdk_context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> OpsStack:
    context = {**cdk_context, "aws:cdk:bundling-stacks": []}
    app = cdk.App(context=context, outdir=str(tmp_path_factory.mktemp("cdk.out")))
    return OpsStack(app, STACK)


@pytest.fixture(scope="module")
def template(stack: OpsStack) -> Template:
    return Template.from_stack(stack)


def _id(stack: cdk.Stack, construct: Any) -> str:
    """The logical id of an L2 construct's CloudFormation resource."""
    return stack.resolve(construct.node.default_child.logical_id)


def _single(template: Template, resource_type: str, props: dict[str, Any] | None = None) -> dict[str, Any]:
    found = template.find_resources(resource_type, {"Properties": props} if props else None)
    assert len(found) == 1, f"expected one {resource_type}, found {list(found)}"
    return next(iter(found.values()))["Properties"]


# --- Plugins: bus, archive, dead letters ----------------------------------------------------------------


def test_bus_named_after_stack_and_encrypted(stack: OpsStack, template: Template) -> None:
    props = _single(template, "AWS::Events::EventBus")
    assert props["Name"] == f"{STACK}-archive-events"
    assert props["KmsKeyIdentifier"] == {"Fn::GetAtt": [_id(stack, stack.plugins.key), "Arn"]}
    assert props["DeadLetterConfig"] == {
        "Arn": {"Fn::GetAtt": [_id(stack, stack.plugins.dead_letter_queue), "Arn"]}
    }


def test_bus_may_send_undecryptable_events_to_dead_letter_queue(stack: OpsStack, template: Template) -> None:
    dlq = _id(stack, stack.plugins.dead_letter_queue)
    template.has_resource_properties(
        "AWS::SQS::QueuePolicy",
        {
            "Queues": [{"Ref": dlq}],
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        {
                            "Sid": "AllowEventBusDeadLetters",
                            "Effect": "Allow",
                            "Principal": {"Service": "events.amazonaws.com"},
                            "Action": "sqs:SendMessage",
                            "Resource": {"Fn::GetAtt": [dlq, "Arn"]},
                            "Condition": {
                                "ArnEquals": {
                                    "aws:SourceArn": {"Fn::GetAtt": [_id(stack, stack.plugins.bus), "Arn"]}
                                }
                            },
                        }
                    ]
                )
            },
        },
    )


def test_archive_of_the_bus_for_replay(stack: OpsStack, template: Template) -> None:
    props = _single(template, "AWS::Events::Archive")
    assert props["SourceArn"] == {"Fn::GetAtt": [_id(stack, stack.plugins.bus), "Arn"]}
    assert props["EventPattern"] == {"source": [DEFAULT_SOURCE]}
    assert props["RetentionDays"] == 30
    assert props["KmsKeyIdentifier"] == {"Fn::GetAtt": [_id(stack, stack.plugins.archive_key), "Arn"]}


def test_dead_letter_queue_encrypted_ssl_only(stack: OpsStack, template: Template) -> None:
    dlq = _id(stack, stack.plugins.dead_letter_queue)
    props = template.find_resources("AWS::SQS::Queue")[dlq]["Properties"]
    assert props["KmsMasterKeyId"] == {"Fn::GetAtt": [_id(stack, stack.plugins.key), "Arn"]}
    assert props["MessageRetentionPeriod"] == 14 * 24 * 3600
    template.has_resource_properties(
        "AWS::SQS::QueuePolicy",
        {
            "Queues": [{"Ref": dlq}],
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


def test_keys_rotate(template: Template) -> None:
    keys = template.find_resources("AWS::KMS::Key")
    assert keys and all(k["Properties"]["EnableKeyRotation"] for k in keys.values())


# --- Plugins: one function and rule per plugin ----------------------------------------------------------


def test_rule_matches_source_and_detail_types(stack: OpsStack, template: Template) -> None:
    function = _id(stack, stack.plugins.functions["event-log"])
    dlq = _id(stack, stack.plugins.dead_letter_queue)
    props = _single(template, "AWS::Events::Rule")
    assert props["EventBusName"] == {"Ref": _id(stack, stack.plugins.bus)}
    assert props["EventPattern"] == {
        "source": [DEFAULT_SOURCE],
        "detail-type": ["InstanceStored", "InstanceDeleted"],
    }
    (target,) = props["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [function, "Arn"]}
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [dlq, "Arn"]}}
    assert target["RetryPolicy"] == {"MaximumEventAgeInSeconds": 86400, "MaximumRetryAttempts": 185}
    assert stack.plugins.rules["event-log"].node.default_child is not None


def test_plugin_function_in_vpc_with_dead_letters_tracing_and_concurrency(
    stack: OpsStack, template: Template
) -> None:
    function = _id(stack, stack.plugins.functions["event-log"])
    props = template.find_resources("AWS::Lambda::Function")[function]["Properties"]
    assert props["Handler"] == "functions.plugins.event_log.handler"
    assert props["Runtime"] == "python3.12"
    assert props["MemorySize"] == 256
    assert props["Timeout"] == 30
    assert props["ReservedConcurrentExecutions"] == 5
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert props["DeadLetterConfig"] == {
        "TargetArn": {"Fn::GetAtt": [_id(stack, stack.plugins.dead_letter_queue), "Arn"]}
    }
    private = [{"Ref": stack.resolve(s.node.default_child.logical_id)} for s in stack.vpc.private_subnets]
    assert props["VpcConfig"]["SubnetIds"] == private
    assert props["Environment"]["Variables"] == {
        "POWERTOOLS_SERVICE_NAME": "skypacs-plugin-event-log",
        "SKYPACS_LOG_IDENTIFIERS": "0",
    }
    log_group = props["LoggingConfig"]["LogGroup"]["Ref"]
    log_props = template.find_resources("AWS::Logs::LogGroup")[log_group]["Properties"]
    assert log_props["RetentionInDays"] == 365
    assert log_props["KmsKeyId"] == {"Fn::GetAtt": [_id(stack, stack.plugins.key), "Arn"]}


def test_plugin_may_send_to_its_encrypted_dead_letter_queue(stack: OpsStack, template: Template) -> None:
    role = stack.resolve(stack.plugins.functions["event-log"].role.node.default_child.logical_id)
    statements = [
        s
        for p in template.find_resources("AWS::IAM::Policy").values()
        if p["Properties"]["Roles"] == [{"Ref": role}]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    dlq_arn = {"Fn::GetAtt": [_id(stack, stack.plugins.dead_letter_queue), "Arn"]}
    key_arn = {"Fn::GetAtt": [_id(stack, stack.plugins.key), "Arn"]}
    assert {"Action": "sqs:SendMessage", "Effect": "Allow", "Resource": dlq_arn} in statements
    assert {
        "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
        "Effect": "Allow",
        "Resource": key_arn,
    } in statements


def test_put_events_grant_scoped_to_the_bus(stack: OpsStack, template: Template) -> None:
    role = _id(stack, stack.publisher)
    (policy,) = [
        p["Properties"]["PolicyDocument"]
        for p in template.find_resources("AWS::IAM::Policy").values()
        if p["Properties"]["Roles"] == [{"Ref": role}]
    ]
    assert policy["Statement"] == [
        {
            "Action": "events:PutEvents",
            "Effect": "Allow",
            "Resource": {"Fn::GetAtt": [_id(stack, stack.plugins.bus), "Arn"]},
        }
    ]


# --- Plugins: context ------------------------------------------------------------------------------------


def test_context_parses_cdk_json_list_and_cli_string() -> None:
    declared = [
        {
            "name": "event-log",
            "handler": "functions.plugins.event_log.handler",
            "detailTypes": ["InstanceStored", "InstanceDeleted"],
            "memoryMiB": 256,
            "timeoutSeconds": 30,
            "environment": {"SKYPACS_LOG_IDENTIFIERS": "0"},
        }
    ]
    assert plugin_specs_from_context(declared) == [EVENT_LOG]
    assert plugin_specs_from_context(json.dumps(declared)) == [EVENT_LOG]
    assert plugin_specs_from_context(None) == []
    assert plugin_specs_from_context([]) == []


_VALID = {"name": "dose", "handler": "functions.plugins.dose.handler", "detailTypes": ["InstanceStored"]}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[not json", "not valid JSON"),
        ({"name": "dose"}, "must be a list"),
        (["dose"], r"\[0\] must be an object"),
        ([{**_VALID, "detailType": ["InstanceStored"]}], r"unknown keys \['detailType'\]"),
        ([{"name": "dose", "handler": "functions.plugins.dose.handler"}], r"missing \['detailTypes'\]"),
        ([{**_VALID, "name": "Dose Report"}], "plugin name"),
        ([{**_VALID, "handler": "dose"}], "dotted path"),
        ([{**_VALID, "detailTypes": []}], "at least one detail type"),
        ([{**_VALID, "detailTypes": "InstanceStored"}], "list of event types"),
        ([{**_VALID, "detailTypes": ["InstanceStore"]}], r"unknown detail types \['InstanceStore'\]"),
        ([{**_VALID, "memoryMiB": 64}], "memory_mib"),
        ([{**_VALID, "timeoutSeconds": "30"}], "timeout_seconds"),
        ([{**_VALID, "reservedConcurrency": True}], "reserved_concurrency"),
        ([{**_VALID, "environment": {"A": 1}}], "environment"),
        ([_VALID, _VALID], r"names repeated: \['dose'\]"),
    ],
)
def test_context_errors(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plugin_specs_from_context(value)


# --- Observability ---------------------------------------------------------------------------------------


def _alarms(template: Template, metric_name: str) -> list[dict[str, Any]]:
    return [
        a["Properties"]
        for a in template.find_resources(ALARM).values()
        if a["Properties"].get("MetricName") == metric_name
    ]


def _alarm_on(template: Template, metric_name: str, dimension: dict[str, Any]) -> dict[str, Any]:
    found = [a for a in _alarms(template, metric_name) if dimension in a.get("Dimensions", [])]
    assert len(found) == 1, f"expected one {metric_name} alarm on {dimension}, found {len(found)}"
    return found[0]


def _assert_alarm(
    stack: OpsStack, alarm: dict[str, Any], *, threshold: float, comparison: str, statistic: str | None = None
) -> None:
    topic = {"Ref": _id(stack, stack.observability.topic)}
    assert alarm["Threshold"] == threshold
    assert alarm["ComparisonOperator"] == comparison
    assert alarm["AlarmActions"] == [topic]
    assert alarm["OKActions"] == [topic]
    if statistic is not None:
        assert alarm.get("Statistic", alarm.get("ExtendedStatistic")) == statistic


def test_topic_encrypted_ssl_only_with_email(stack: OpsStack, template: Template) -> None:
    topic = _id(stack, stack.observability.topic)
    props = _single(template, "AWS::SNS::Topic")
    assert props["KmsMasterKeyId"] == {"Fn::GetAtt": [_id(stack, stack.observability.key), "Arn"]}
    template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "Topics": [{"Ref": topic}],
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
    template.has_resource_properties(
        "AWS::SNS::Subscription",
        {"Protocol": "email", "Endpoint": "ops@example.org", "TopicArn": {"Ref": topic}},
    )
    template.has_resource_properties(
        "AWS::KMS::Key",
        {
            "KeyPolicy": {
                "Statement": Match.array_with(
                    [Match.object_like({"Principal": {"Service": "cloudwatch.amazonaws.com"}})]
                )
            }
        },
    )


@pytest.mark.parametrize("name", ["Dummy", "EventLog"])
def test_function_errors_and_throttles_alarms(stack: OpsStack, template: Template, name: str) -> None:
    function = stack.function if name == "Dummy" else stack.plugins.functions["event-log"]
    dimension = {"Name": "FunctionName", "Value": {"Ref": _id(stack, function)}}
    for metric in ("Errors", "Throttles"):
        alarm = _alarm_on(template, metric, dimension)
        _assert_alarm(stack, alarm, threshold=0, comparison="GreaterThanThreshold", statistic="Sum")
        assert alarm["Period"] == 300


@pytest.mark.parametrize("queue", ["ingest_dlq", "plugins_dlq"])
def test_dead_letter_queue_depth_alarm(stack: OpsStack, template: Template, queue: str) -> None:
    construct = stack.ingest_dlq if queue == "ingest_dlq" else stack.plugins.dead_letter_queue
    dimension = {"Name": "QueueName", "Value": {"Fn::GetAtt": [_id(stack, construct), "QueueName"]}}
    alarm = _alarm_on(template, "ApproximateNumberOfMessagesVisible", dimension)
    _assert_alarm(stack, alarm, threshold=0, comparison="GreaterThanThreshold", statistic="Maximum")


def test_queue_oldest_message_alarm(stack: OpsStack, template: Template) -> None:
    dimension = {"Name": "QueueName", "Value": {"Fn::GetAtt": [_id(stack, stack.ingest_queue), "QueueName"]}}
    alarm = _alarm_on(template, "ApproximateAgeOfOldestMessage", dimension)
    _assert_alarm(stack, alarm, threshold=900, comparison="GreaterThanThreshold", statistic="Maximum")
    # The work queue is not a dead-letter queue: no depth alarm on it.
    assert not [
        a for a in _alarms(template, "ApproximateNumberOfMessagesVisible") if dimension in a["Dimensions"]
    ]


def test_api_5xx_rate_and_p99_latency_alarms(stack: OpsStack, template: Template) -> None:
    dimension = {"Name": "ApiName", "Value": "skypacs-dicomweb"}
    rate = _alarm_on(template, "5XXError", dimension)
    _assert_alarm(stack, rate, threshold=0.01, comparison="GreaterThanThreshold", statistic="Average")
    latency = _alarm_on(template, "Latency", dimension)
    _assert_alarm(stack, latency, threshold=5000, comparison="GreaterThanThreshold", statistic="p99")


def test_target_group_health_alarms(stack: OpsStack, template: Template) -> None:
    target_group = {
        "Name": "TargetGroup",
        "Value": {"Fn::GetAtt": [_id(stack, stack.target_group), "TargetGroupFullName"]},
    }
    unhealthy = _alarm_on(template, "UnHealthyHostCount", target_group)
    _assert_alarm(
        stack, unhealthy, threshold=1, comparison="GreaterThanOrEqualToThreshold", statistic="Maximum"
    )
    healthy = _alarm_on(template, "HealthyHostCount", target_group)
    _assert_alarm(stack, healthy, threshold=1, comparison="LessThanThreshold", statistic="Minimum")
    assert healthy["TreatMissingData"] == "breaching"
    for alarm in (healthy, unhealthy):
        assert alarm["Namespace"] == "AWS/NetworkELB"
        assert {d["Name"] for d in alarm["Dimensions"]} == {"TargetGroup", "LoadBalancer"}


def test_target_group_metric_without_load_balancer_uses_its_first(stack: OpsStack) -> None:
    # An attached target group measured without naming its load balancer is measured on that one.
    for name, statistic in (("HealthyHostCount", "Minimum"), ("UnHealthyHostCount", "Maximum")):
        implicit = Observability._target_group_metric(stack.target_group, None, name, statistic)
        explicit = Observability._target_group_metric(stack.target_group, stack.nlb, name, statistic)
        assert (implicit.namespace, implicit.metric_name) == ("AWS/NetworkELB", name)
        implicit_dims, explicit_dims = stack.resolve(implicit.dimensions), stack.resolve(explicit.dimensions)
        assert implicit_dims["TargetGroup"] == explicit_dims["TargetGroup"]
        # The full name is cut from the ARN of the NLB's listener rather than read from the NLB.
        assert '{"Ref": "NlbDimse' in json.dumps(implicit_dims["LoadBalancer"])


def test_service_cpu_alarm(stack: OpsStack, template: Template) -> None:
    service = {"Name": "ServiceName", "Value": {"Fn::GetAtt": [_id(stack, stack.service), "Name"]}}
    alarm = _alarm_on(template, "CPUUtilization", service)
    _assert_alarm(stack, alarm, threshold=85, comparison="GreaterThanThreshold", statistic="Average")
    assert alarm["EvaluationPeriods"] == 3


def test_every_alarm_exposed_and_sent_to_topic(stack: OpsStack, template: Template) -> None:
    alarms = template.find_resources(ALARM)
    # 2 functions x (errors, throttles), 2 dead-letter queues, queue age, API (5XX, p99),
    # target group (unhealthy, no healthy), CPU
    assert len(stack.observability.alarms) == len(alarms) == 12
    topic = {"Ref": _id(stack, stack.observability.topic)}
    assert all(a["Properties"]["AlarmActions"] == [topic] for a in alarms.values())


def test_dashboard_named_and_covering_every_section(template: Template) -> None:
    props = _single(template, "AWS::CloudWatch::Dashboard")
    assert props["DashboardName"] == f"{STACK}-operations"
    body = json.dumps(props["DashboardBody"])
    for section in ("Ingest", "Lambda functions", "DICOMweb API", "DIMSE gateway", "Dead-letter queues"):
        assert f"## {section}" in body
    for metric in (
        "ApproximateNumberOfMessagesVisible",
        "ApproximateAgeOfOldestMessage",
        "Invocations",
        "Duration",
        "Count",
        "4XXError",
        "5XXError",
        "Latency",
        "HealthyHostCount",
        "ActiveFlowCount",
        "CPUUtilization",
        "MemoryUtilization",
    ):
        assert f'\\"{metric}\\"' in body, metric


def test_repeated_input_name_rejected(stack: OpsStack) -> None:
    with pytest.raises(ValueError, match="already used"):
        stack.observability.add_function("Dummy", stack.function)


def test_invalid_alarm_email_rejected() -> None:
    with pytest.raises(ValueError, match="e-mail"):
        Observability(cdk.Stack(cdk.App(), "Email"), "Observability", alarm_email="ops-team")


# --- cdk-nag ---------------------------------------------------------------------------------------------


def _findings(report: Any) -> list[str]:
    return [
        f"{v.rule_name} at {[r.construct_path for r in v.violating_resources]}: {v.description}"
        for v in report.violations
    ]


@pytest.mark.parametrize("pack", [AwsSolutionsChecks, HIPAASecurityChecks])
@pytest.mark.parametrize("construct", ["plugins", "observability"])
def test_no_unacknowledged_nag_findings(
    stack: OpsStack, template: Template, pack: type, construct: str
) -> None:
    report = pack().validate_scope(getattr(stack, construct))
    assert _findings(report) == []


def test_nag_check_is_live(stack: OpsStack, template: Template) -> None:
    # The test stack's own (unhardened) queue is flagged: the checks above do not pass vacuously.
    rules = {v.rule_name for v in AwsSolutionsChecks().validate_scope(stack.ingest_queue).violations}
    assert "AwsSolutions-SQS4" in rules
