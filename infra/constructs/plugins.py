"""Event plugins on AWS: the EventBridge bus the archive publishes to, and one Lambda per plugin.

DESIGN.md "Plugins": on AWS each event plugin is its own Lambda subscribed through an EventBridge rule,
so a slow or failing plugin never slows or fails ingest, and each retries on its own. The publisher is
``skypacs.adapters.eventbridge.EventBridgeEventBus``: ``Source`` is the archive's source name and
``DetailType`` the event type (``InstanceStored``, ``InstanceDeleted``, ``StudyChanged``); each rule
here matches exactly that.

Nothing is lost (DESIGN.md "Keys"): the bus is archived for replay, and an event that cannot be
delivered (EventBridge gave up, or the plugin failed all of Lambda's asynchronous retries) lands in one
dead-letter queue.

Plugins are declared in the CDK context key ``plugins`` (``cdk.json`` or ``cdk synth -c plugins='[...]'``)::

    "plugins": [
      {"name": "event-log", "handler": "functions.plugins.event_log.handler",
       "detailTypes": ["InstanceStored", "InstanceDeleted"],
       "memoryMiB": 256, "timeoutSeconds": 30, "reservedConcurrency": 5,
       "environment": {"SKYPACS_LOG_IDENTIFIERS": "0"}}
    ]
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aws_cdk import Acknowledgment, Aws, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.bundling import LAMBDA_ARCHITECTURE, LAMBDA_RUNTIME, lambda_code
from skypacs.adapters.eventbridge import DEFAULT_SOURCE
from skypacs.ports import INSTANCE_DELETED, INSTANCE_STORED, STUDY_CHANGED

#: CDK context key holding the plugin declarations.
PLUGINS_CONTEXT = "plugins"

#: Event types the archive publishes (``skypacs.ports``); a rule on anything else would never fire.
DETAIL_TYPES = (INSTANCE_STORED, INSTANCE_DELETED, STUDY_CHANGED)

DEFAULT_ARCHIVE_RETENTION_DAYS = 30

#: Dead letters are kept for SQS's maximum, so there is time to look at them and replay.
DEAD_LETTER_RETENTION = Duration.days(14)

#: EventBridge retries a failed delivery (throttled or unavailable Lambda) for up to a day.
TARGET_MAX_EVENT_AGE = Duration.hours(24)
TARGET_RETRY_ATTEMPTS = 185  # EventBridge's own maximum: spreads retries over the whole event age.

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_HANDLER = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")
_CONTEXT_KEYS = {
    "name": "name",
    "handler": "handler",
    "detailTypes": "detail_types",
    "memoryMiB": "memory_mib",
    "timeoutSeconds": "timeout_seconds",
    "reservedConcurrency": "reserved_concurrency",
    "environment": "environment",
}


@dataclass(frozen=True)
class PluginSpec:
    """One event plugin: a handler in the Lambda bundle and the event types it receives.

    ``name`` names the function's log service and its constructs: lower-case letters, digits and ``-``.
    ``reserved_concurrency`` bounds what one plugin can take from the account's concurrency, so a burst
    of C-STOREs fanned out to plugins cannot starve the indexer.
    """

    name: str
    handler: str
    detail_types: tuple[str, ...]
    memory_mib: int = 512
    timeout_seconds: int = 60
    environment: Mapping[str, str] = field(default_factory=dict)
    reserved_concurrency: int = 5

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(
                f"plugin name {self.name!r} must be 1-32 lower-case letters, digits or '-', "
                "starting with a letter"
            )
        where = f"plugin {self.name!r}"
        if not isinstance(self.handler, str) or not _HANDLER.match(self.handler):
            raise ValueError(f"{where}: handler {self.handler!r} must be a dotted path (module.function)")
        if isinstance(self.detail_types, str) or not isinstance(self.detail_types, Sequence):
            raise ValueError(f"{where}: detail types must be a list of event types")  # noqa: TRY004
        detail_types = tuple(self.detail_types)
        if not detail_types:
            raise ValueError(f"{where}: give at least one detail type of {', '.join(DETAIL_TYPES)}")
        unknown = [t for t in detail_types if t not in DETAIL_TYPES]
        if unknown:
            raise ValueError(f"{where}: unknown detail types {unknown}; known: {', '.join(DETAIL_TYPES)}")
        if len(set(detail_types)) != len(detail_types):
            raise ValueError(f"{where}: detail types repeated in {list(detail_types)}")
        _check_int(where, "memory_mib", self.memory_mib, 128, 10240)
        _check_int(where, "timeout_seconds", self.timeout_seconds, 1, 900)
        _check_int(where, "reserved_concurrency", self.reserved_concurrency, 1, 1000)
        if not isinstance(self.environment, Mapping) or not all(
            isinstance(k, str) and k and isinstance(v, str) for k, v in self.environment.items()
        ):
            raise ValueError(f"{where}: environment must map names to strings")
        object.__setattr__(self, "detail_types", detail_types)
        object.__setattr__(self, "environment", dict(self.environment))


def _check_int(where: str, name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{where}: {name} must be a whole number from {low} to {high}, got {value!r}")


def plugin_specs_from_context(value: Any) -> list[PluginSpec]:
    """The plugins declared in the CDK context key ``plugins``.

    ``cdk.json`` gives a list of objects; ``cdk synth -c plugins='[...]'`` gives the same list as a JSON
    string. Absent (``None``) means no plugins. Unknown keys are errors: a misspelt ``detailType`` must
    not deploy a plugin that silently receives nothing.
    """
    if value is None:
        return []
    if isinstance(value, str):
        if not value.strip():
            return []
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"context {PLUGINS_CONTEXT!r} is not valid JSON: {exc.msg}") from exc
    if not isinstance(value, list):
        # Context errors are ValueErrors, like the stack's other context checks.
        kind = type(value).__name__
        message = f"context {PLUGINS_CONTEXT!r} must be a list of plugin objects, got {kind}"
        raise ValueError(message)  # noqa: TRY004
    specs: list[PluginSpec] = []
    for position, item in enumerate(value):
        if not isinstance(item, Mapping):
            message = f"context {PLUGINS_CONTEXT!r}[{position}] must be an object, got {item!r}"
            raise ValueError(message)  # noqa: TRY004
        unknown = sorted(set(item) - set(_CONTEXT_KEYS))
        if unknown:
            raise ValueError(
                f"context {PLUGINS_CONTEXT!r}[{position}]: unknown keys {unknown}; "
                f"known: {sorted(_CONTEXT_KEYS)}"
            )
        missing = [k for k in ("name", "handler", "detailTypes") if k not in item]
        if missing:
            raise ValueError(f"context {PLUGINS_CONTEXT!r}[{position}]: missing {missing}")
        specs.append(PluginSpec(**{_CONTEXT_KEYS[k]: v for k, v in item.items()}))
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"context {PLUGINS_CONTEXT!r}: plugin names repeated: {duplicates}")
    return specs


class Plugins(Construct):
    """The archive's event bus, its archive, and the plugin functions subscribed to it.

    Attributes:
        bus: the EventBridge bus the indexer and the delete service publish to (``SKYPACS_EVENT_BUS``).
        archive: every archive event, kept ``archive_retention_days`` for replay to a new or fixed plugin.
        key: the KMS key of the bus, the dead-letter queue and (unless ``log_key`` is given) the plugins'
            log groups.
        archive_key: the KMS key of the archive.
        dead_letter_queue: events no plugin could take: undeliverable by EventBridge, failed by Lambda,
            or not decryptable on the bus.
        functions: plugin name -> its Lambda function.
        rules: plugin name -> the rule that routes its detail types to it.
        source: the ``Source`` the archive publishes with, matched by the archive and every rule.
    """

    bus: events.EventBus
    archive: events.Archive
    key: kms.Key
    archive_key: kms.Key
    dead_letter_queue: sqs.Queue
    functions: dict[str, lambda_.Function]
    rules: dict[str, events.Rule]

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        plugins: Sequence[PluginSpec] = (),
        archive_retention_days: int = DEFAULT_ARCHIVE_RETENTION_DAYS,
        source: str = DEFAULT_SOURCE,
        log_retention: logs.RetentionDays = logs.RetentionDays.ONE_YEAR,
        log_key: kms.IKey | None = None,
    ) -> None:
        """Create the bus, its archive and dead-letter queue, and one function and rule per plugin.

        Args:
            vpc: the plugin functions run in its private subnets, like every SkyPACS function.
            plugins: the plugins to deploy (see :func:`plugin_specs_from_context`).
            archive_retention_days: days the archive keeps events for replay (at least one).
            source: the ``Source`` the archive publishes with; the archive and every rule match it.
            log_retention: how long the plugins' logs are kept.
            log_key: the stack's key for log groups (its policy must allow CloudWatch Logs); without
                it, ``key`` encrypts the plugins' logs.
        """
        super().__init__(scope, construct_id)
        _check_int("Plugins", "archive_retention_days", archive_retention_days, 1, 36500)
        names = [p.name for p in plugins]
        if len(set(names)) != len(names):
            raise ValueError(f"plugin names repeated: {names}")
        self.source = source
        stack = Stack.of(self)

        self.key = kms.Key(
            self,
            "Key",
            description="Encrypts SkyPACS archive events: event bus, dead letters, plugin logs",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self._allow_service_use_of_key()

        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self.key,
            enforce_ssl=True,
            retention_period=DEAD_LETTER_RETENTION,
        )
        Validations.of(self.dead_letter_queue).acknowledge(
            Acknowledgment(
                id="AwsSolutions-SQS3",
                reason="This queue is the dead-letter queue of the plugin rules and functions.",
            )
        )

        self.bus = events.EventBus(
            self,
            "Bus",
            # Named after the stack so that it is recognisable in the console and in SKYPACS_EVENT_BUS.
            event_bus_name=f"{stack.stack_name}-archive-events",
            description="SkyPACS archive events (instance stored/deleted, study changed) for plugins",
            kms_key=self.key,
            # Events the bus cannot encrypt or decrypt (key disabled) are kept instead of dropped.
            dead_letter_queue=self.dead_letter_queue,
        )
        # EventBus(dead_letter_queue=) sets the bus's DeadLetterConfig but grants nothing: allow the bus.
        self.dead_letter_queue.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowEventBusDeadLetters",
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                actions=["sqs:SendMessage"],
                resources=[self.dead_letter_queue.queue_arn],
                conditions={"ArnEquals": {"aws:SourceArn": self.bus.event_bus_arn}},
            )
        )
        # The archive has a key of its own: Archive's key policy names the bus ARN, and the bus depends on
        # `key` (and its dead-letter queue on `key`), so one shared key would be a dependency cycle.
        self.archive_key = kms.Key(
            self,
            "ArchiveKey",
            description="Encrypts the SkyPACS archive-event archive (replay)",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        # events.Archive rather than bus.archive(): the latter drops kms_key (aws-cdk-lib 2.275).
        self.archive = events.Archive(
            self,
            "Archive",
            source_event_bus=self.bus,
            description="Every SkyPACS archive event, for replay to plugins",
            event_pattern=events.EventPattern(source=[source]),
            retention=Duration.days(archive_retention_days),
            kms_key=self.archive_key,
        )

        self.functions = {}
        self.rules = {}
        for spec in plugins:
            self._add_plugin(spec, vpc=vpc, log_retention=log_retention, log_key=log_key or self.key)

    def grant_put_events(self, grantee: iam.IGrantable) -> iam.Grant:
        """Allow ``grantee`` (the indexer, the API) to publish to this bus, and to no other."""
        return self.bus.grant_put_events_to(grantee)

    def _allow_service_use_of_key(self) -> None:
        # Services act with their own principals, so the key policy (not an IAM policy) must allow them.
        # EventBus and Archive add their own statements for the bus and the archive; EventBridge also sends
        # undeliverable events to the encrypted dead-letter queue, and CloudWatch Logs encrypts the plugins'
        # log groups. Conditioned on this account (the rules' ARNs would make the key depend on the rules,
        # which depend on the bus, which depends on the key) and on log groups of this account and region.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowEventBridgeDeadLetters",
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=["*"],  # in a key policy, "*" is this key
                conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}},
            )
        )
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchLogs",
                principals=[iam.ServicePrincipal(f"logs.{Aws.REGION}.amazonaws.com")],
                actions=[
                    "kms:Encrypt*",
                    "kms:Decrypt*",
                    "kms:ReEncrypt*",
                    "kms:GenerateDataKey*",
                    "kms:Describe*",
                ],
                resources=["*"],
                conditions={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": (
                            f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:*"
                        )
                    }
                },
            )
        )

    def _add_plugin(
        self, spec: PluginSpec, *, vpc: ec2.IVpc, log_retention: logs.RetentionDays, log_key: kms.IKey
    ) -> None:
        scope = Construct(self, spec.name)
        log_group = logs.LogGroup(
            scope,
            "LogGroup",
            retention=log_retention,
            encryption_key=log_key,
            removal_policy=RemovalPolicy.RETAIN,
        )
        function = lambda_.Function(
            scope,
            "Function",
            description=f"SkyPACS plugin {spec.name}: {', '.join(spec.detail_types)}",
            code=lambda_code(),
            handler=spec.handler,
            runtime=LAMBDA_RUNTIME,
            architecture=LAMBDA_ARCHITECTURE,
            memory_size=spec.memory_mib,
            timeout=Duration.seconds(spec.timeout_seconds),
            reserved_concurrent_executions=spec.reserved_concurrency,
            vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            tracing=lambda_.Tracing.ACTIVE,
            log_group=log_group,
            environment={"POWERTOOLS_SERVICE_NAME": f"skypacs-plugin-{spec.name}", **spec.environment},
            # Lambda retries a failed asynchronous invocation twice, then keeps the event here.
            dead_letter_queue=self.dead_letter_queue,
        )
        # Sending to an SSE-KMS queue needs the key as well; Function(dead_letter_queue=) grants only
        # sqs:SendMessage.
        self.key.grant(function, "kms:Decrypt", "kms:GenerateDataKey")
        rule = events.Rule(
            scope,
            "Rule",
            description=f"Archive events {', '.join(spec.detail_types)} to plugin {spec.name}",
            event_bus=self.bus,
            event_pattern=events.EventPattern(source=[self.source], detail_type=list(spec.detail_types)),
            targets=[
                targets.LambdaFunction(
                    function,
                    dead_letter_queue=self.dead_letter_queue,
                    max_event_age=TARGET_MAX_EVENT_AGE,
                    retry_attempts=TARGET_RETRY_ATTEMPTS,
                )
            ],
        )
        _acknowledge_function_findings(function)
        self.functions[spec.name] = function
        self.rules[spec.name] = rule


def _acknowledge_function_findings(function: lambda_.Function) -> None:
    """cdk-nag findings every plugin function has by construction, each with its reason."""
    managed = "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/{}]"
    Validations.of(function).acknowledge(
        Acknowledgment(
            id=managed.format("AWSLambdaBasicExecutionRole"),
            reason="Lambda's own policy for writing its logs (CreateLogStream/PutLogEvents); the log group "
            "is this function's, encrypted and with retention.",
        ),
        Acknowledgment(
            id=managed.format("AWSLambdaVPCAccessExecutionRole"),
            reason="Lambda's own policy for the network interfaces of a function in a VPC; the EC2 "
            "network-interface actions it needs cannot be scoped to resources at creation time.",
        ),
        Acknowledgment(
            id="AwsSolutions-IAM5[Resource::*]",
            reason="X-Ray tracing: xray:PutTraceSegments and xray:PutTelemetryRecords support no "
            "resource-level permissions, so AWS requires Resource '*'.",
        ),
        Acknowledgment(
            id="AwsSolutions-L1",
            reason="All SkyPACS functions share one bundle built for infra.bundling.LAMBDA_RUNTIME "
            "(python3.12: its manylinux wheels, e.g. numpy, are built for that runtime's glibc).",
        ),
        Acknowledgment(
            id="HIPAA.Security-IAMNoInlinePolicy",
            reason="The inline policy is the CDK grant policy of this function's own role (dead-letter "
            "queue, its key, X-Ray); it is attached to no other identity.",
        ),
    )
