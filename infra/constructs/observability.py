"""Operations: one dashboard, and alarms on what must never go unnoticed, sent to one SNS topic.

What is watched follows DESIGN.md: "nothing is lost" (a message in any dead-letter queue alarms at
once; an ingest queue whose oldest message waits longer than 15 minutes means the indexer is not
keeping up), every function's errors and throttles, the DICOMweb API's 5XX rate and p99 latency, and
the DIMSE gateway's health behind its Network Load Balancer.

Inputs arrive as the stack builds its constructs: pass them to the constructor or add them later with
the ``add_*`` methods; the dashboard is laid out in fixed sections (ingest, functions, API, gateway,
dead letters) whatever the order of the calls.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

LoadBalancer = elbv2.NetworkLoadBalancer | elbv2.ApplicationLoadBalancer
TargetGroup = elbv2.NetworkTargetGroup | elbv2.ApplicationTargetGroup

PERIOD = Duration.minutes(5)

#: An ingest message older than this means the indexer is not keeping up (or is failing and retrying).
MAX_MESSAGE_AGE = Duration.minutes(15)
#: 5XXError's Average is the fraction of requests answered 5XX: alarm above 1 %.
MAX_5XX_RATE = 0.01
MAX_P99_LATENCY = Duration.seconds(5)
MAX_CPU_PERCENT = 85
#: Load balancer health and CPU alarm only when the condition lasts this many 1- or 5-minute periods,
#: so a rolling deployment or a short burst does not page anyone.
SUSTAINED_PERIODS = 3

GRAPH_HEIGHT = 6


class Observability(Construct):
    """A dashboard and alarms for the archive, the alarms sent to one encrypted SNS topic.

    Attributes:
        topic: where every alarm (and its return to OK) is sent; subscribe people or tools to it.
        key: the KMS key of ``topic``.
        dashboard: the CloudWatch dashboard, named after the stack.
        alarms: every alarm created so far.
    """

    topic: sns.Topic
    key: kms.Key
    dashboard: cloudwatch.Dashboard
    alarms: list[cloudwatch.Alarm]

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        functions: Mapping[str, lambda_.IFunction] | None = None,
        dead_letter_queues: Mapping[str, sqs.IQueue] | None = None,
        queues: Mapping[str, sqs.IQueue] | None = None,
        rest_api: apigw.RestApiBase | None = None,
        load_balancers: Mapping[str, LoadBalancer] | None = None,
        target_groups: Mapping[str, TargetGroup] | None = None,
        services: Mapping[str, ecs.BaseService] | None = None,
        alarm_email: str | None = None,
    ) -> None:
        """Create the topic and the dashboard, and watch the given resources.

        Args:
            functions: name -> Lambda function: errors and throttles alarms, invocations and duration.
            dead_letter_queues: name -> dead-letter queue: alarm on the first message.
            queues: name -> work queue (ingest): depth, and an alarm on the age of the oldest message.
            rest_api: the DICOMweb API: request count, 4XX, 5XX rate and latency.
            load_balancers: name -> load balancer; a target group of the same name is measured on it.
            target_groups: name -> target group: healthy and unhealthy hosts.
            services: name -> ECS service: CPU and memory.
            alarm_email: an address subscribed to the topic (it must confirm the subscription).
        """
        super().__init__(scope, construct_id)
        if alarm_email is not None and "@" not in alarm_email.strip("@"):
            raise ValueError(f"alarm_email {alarm_email!r} is not an e-mail address")
        self.alarms = []
        self._names: set[str] = set()
        self._load_balancers: dict[str, LoadBalancer] = {}
        self._dashboard_load_balancers: set[str] = set()

        self.key = kms.Key(
            self,
            "TopicKey",
            description="Encrypts the SkyPACS alarm topic",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.DESTROY,  # alarm notifications are transient; nothing to keep
        )
        # CloudWatch publishes alarm notifications with its service principal; an SSE topic needs the key
        # to allow it (the AWS managed key alias/aws/sns cannot, hence a customer managed key).
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarms",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],  # in a key policy, "*" is this key
            )
        )
        self.topic = sns.Topic(
            self, "AlarmTopic", display_name="SkyPACS alarms", master_key=self.key, enforce_ssl=True
        )
        if alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
        self._action = cw_actions.SnsAction(self.topic)

        # One column per section, in a fixed order; each fills as inputs are added (layout is computed
        # at synthesis). A section's heading is added with its first widget, so empty sections vanish.
        self._sections: dict[str, cloudwatch.Column] = {
            title: cloudwatch.Column()
            for title in ("Ingest", "Lambda functions", "DICOMweb API", "DIMSE gateway", "Dead-letter queues")
        }
        self._dead_letter_graph: cloudwatch.GraphWidget | None = None
        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=f"{Stack.of(self).stack_name}-operations",
            default_interval=Duration.hours(3),
            # (jsii's Python stubs do not see Column and Row as IWidget; they are.)
            widgets=[[column] for column in self._sections.values()],  # type: ignore[list-item]
        )

        for name, queue in (queues or {}).items():
            self.add_queue(name, queue)
        for name, function in (functions or {}).items():
            self.add_function(name, function)
        if rest_api is not None:
            self.add_rest_api(rest_api)
        for name, load_balancer in (load_balancers or {}).items():
            self.add_load_balancer(name, load_balancer)
        for name, target_group in (target_groups or {}).items():
            self.add_target_group(name, target_group, self._load_balancers.get(name))
        for name, service in (services or {}).items():
            self.add_service(name, service)
        for name, queue in (dead_letter_queues or {}).items():
            self.add_dead_letter_queue(name, queue)

    # --- inputs ------------------------------------------------------------------------------------------

    def add_queue(self, name: str, queue: sqs.IQueue) -> None:
        """A work queue (S3 notifications to the indexer): depth, and the age of its oldest message."""
        self._claim(name)
        age = queue.metric_approximate_age_of_oldest_message(period=PERIOD, statistic="Maximum")
        self._alarm(
            f"{name}OldestMessage",
            age,
            threshold=MAX_MESSAGE_AGE.to_seconds(),
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            description=f"Queue {name}: a message has waited over {MAX_MESSAGE_AGE.to_minutes()} minutes; "
            "its consumer is not keeping up or keeps failing",
        )
        self._add(
            "Ingest",
            cloudwatch.GraphWidget(
                title=f"{name}: messages",
                left=[
                    queue.metric_approximate_number_of_messages_visible(period=PERIOD, label="visible"),
                    queue.metric_approximate_number_of_messages_not_visible(period=PERIOD, label="in flight"),
                ],
                width=12,
                height=GRAPH_HEIGHT,
            ),
            cloudwatch.GraphWidget(
                title=f"{name}: age of oldest message (s)",
                left=[age],
                left_annotations=[
                    cloudwatch.HorizontalAnnotation(value=MAX_MESSAGE_AGE.to_seconds(), label="alarm")
                ],
                width=12,
                height=GRAPH_HEIGHT,
            ),
        )

    def add_function(self, name: str, function: lambda_.IFunction) -> None:
        """A Lambda function: alarms on any error and any throttle within five minutes."""
        self._claim(name)
        errors = function.metric_errors(period=PERIOD, statistic="Sum")
        throttles = function.metric_throttles(period=PERIOD, statistic="Sum")
        self._alarm(
            f"{name}Errors",
            errors,
            threshold=0,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            description=f"Function {name} failed at least once in 5 minutes (see its log group)",
        )
        self._alarm(
            f"{name}Throttles",
            throttles,
            threshold=0,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            description=f"Function {name} was throttled: its reserved concurrency is exhausted",
        )
        self._add(
            "Lambda functions",
            cloudwatch.GraphWidget(
                title=f"{name}: invocations",
                left=[
                    function.metric_invocations(period=PERIOD, statistic="Sum"),
                    errors,
                    throttles,
                ],
                width=12,
                height=GRAPH_HEIGHT,
            ),
            cloudwatch.GraphWidget(
                title=f"{name}: duration (ms)",
                left=[
                    function.metric_duration(period=PERIOD, statistic="p50", label="p50"),
                    function.metric_duration(period=PERIOD, statistic="p99", label="p99"),
                    function.metric_duration(period=PERIOD, statistic="Maximum", label="max"),
                ],
                width=12,
                height=GRAPH_HEIGHT,
            ),
        )

    def add_rest_api(self, rest_api: apigw.RestApiBase, name: str = "Api") -> None:
        """The DICOMweb REST API: alarms on a 5XX rate above 1 % and a p99 latency above 5 seconds."""
        self._claim(name)
        # Alarmed metrics carry no label: a label turns the alarm into a metric-math alarm.
        server_errors = rest_api.metric_server_error(period=PERIOD, statistic="Average")
        latency_p99 = rest_api.metric_latency(period=PERIOD, statistic="p99")
        self._alarm(
            f"{name}5XXRate",
            server_errors,
            threshold=MAX_5XX_RATE,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            description=f"API {name}: more than {MAX_5XX_RATE:.0%} of requests answered 5XX in 5 minutes",
        )
        self._alarm(
            f"{name}LatencyP99",
            latency_p99,
            threshold=MAX_P99_LATENCY.to_milliseconds(),
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            description=f"API {name}: p99 latency above {MAX_P99_LATENCY.to_seconds()} s over 5 minutes",
        )
        self._add(
            "DICOMweb API",
            cloudwatch.GraphWidget(
                title=f"{name}: requests",
                left=[rest_api.metric_count(period=PERIOD, statistic="Sum", label="requests")],
                width=8,
                height=GRAPH_HEIGHT,
            ),
            cloudwatch.GraphWidget(
                title=f"{name}: errors",
                left=[
                    rest_api.metric_client_error(period=PERIOD, statistic="Sum", label="4XX"),
                    rest_api.metric_server_error(period=PERIOD, statistic="Sum", label="5XX"),
                ],
                width=8,
                height=GRAPH_HEIGHT,
            ),
            cloudwatch.GraphWidget(
                title=f"{name}: latency (ms)",
                left=[
                    rest_api.metric_latency(period=PERIOD, statistic="p50", label="p50"),
                    latency_p99.with_(label="p99"),
                ],
                left_annotations=[
                    cloudwatch.HorizontalAnnotation(value=MAX_P99_LATENCY.to_milliseconds(), label="alarm")
                ],
                width=8,
                height=GRAPH_HEIGHT,
            ),
        )

    def add_load_balancer(self, name: str, load_balancer: LoadBalancer) -> None:
        """A load balancer for the dashboard (flows or requests); its target groups carry the alarms."""
        if name in self._dashboard_load_balancers:
            raise ValueError(f"load balancer name {name!r} already used")
        self._dashboard_load_balancers.add(name)
        self._load_balancers.setdefault(name, load_balancer)
        if isinstance(load_balancer, elbv2.ApplicationLoadBalancer):
            left = [
                load_balancer.metrics.request_count(period=PERIOD, label="requests"),
                load_balancer.metrics.http_code_elb(
                    elbv2.HttpCodeElb.ELB_5XX_COUNT, period=PERIOD, label="ELB 5XX"
                ),
            ]
        else:
            left = [
                load_balancer.metrics.active_flow_count(period=PERIOD, label="active flows"),
                load_balancer.metrics.new_flow_count(period=PERIOD, label="new flows"),
            ]
        self._add(
            "DIMSE gateway",
            cloudwatch.GraphWidget(title=f"{name}: traffic", left=left, width=12, height=GRAPH_HEIGHT),
        )

    def add_target_group(
        self, name: str, target_group: TargetGroup, load_balancer: LoadBalancer | None = None
    ) -> None:
        """A target group: alarms when any host is unhealthy, and when no host is healthy, for 3 minutes.

        ``load_balancer`` names the load balancer the metrics are reported for; without it, the target
        group's first load balancer (it must be attached by then).
        """
        self._claim(name)
        if load_balancer is None:
            load_balancer = self._load_balancers.get(name)
        healthy = self._target_group_metric(target_group, load_balancer, "HealthyHostCount", "Minimum")
        unhealthy = self._target_group_metric(target_group, load_balancer, "UnHealthyHostCount", "Maximum")
        self._alarm(
            f"{name}UnhealthyHosts",
            unhealthy,
            threshold=1,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=SUSTAINED_PERIODS,
            description=f"Target group {name}: a target failed its health checks for 3 minutes",
        )
        self._alarm(
            f"{name}NoHealthyHosts",
            healthy,
            threshold=1,
            comparison=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            evaluation_periods=SUSTAINED_PERIODS,
            # No data means nothing reports health, which is as bad as no healthy host.
            treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
            description=f"Target group {name}: no healthy target for 3 minutes; the service is down",
        )
        self._add(
            "DIMSE gateway",
            cloudwatch.GraphWidget(
                title=f"{name}: hosts", left=[healthy, unhealthy], width=12, height=GRAPH_HEIGHT
            ),
        )

    def add_service(self, name: str, service: ecs.BaseService) -> None:
        """An ECS service: CPU and memory; alarm when CPU stays above 85 % for 15 minutes."""
        self._claim(name)
        cpu = service.metric_cpu_utilization(period=PERIOD, statistic="Average")
        self._alarm(
            f"{name}Cpu",
            cpu,
            threshold=MAX_CPU_PERCENT,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=SUSTAINED_PERIODS,
            description=f"Service {name}: CPU above {MAX_CPU_PERCENT} % for 15 minutes; scale it out or up",
        )
        self._add(
            "DIMSE gateway",
            cloudwatch.GraphWidget(
                title=f"{name}: CPU and memory (%)",
                left=[
                    cpu.with_(label="CPU %"),
                    service.metric_memory_utilization(period=PERIOD, statistic="Average", label="memory %"),
                ],
                left_y_axis=cloudwatch.YAxisProps(min=0, max=100),
                width=12,
                height=GRAPH_HEIGHT,
            ),
        )

    def add_dead_letter_queue(self, name: str, queue: sqs.IQueue) -> None:
        """A dead-letter queue: any message in it is work that failed; alarm on the first one."""
        self._claim(name)
        depth = queue.metric_approximate_number_of_messages_visible(period=PERIOD, statistic="Maximum")
        self._alarm(
            f"{name}Depth",
            depth,
            threshold=0,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            description=f"Dead-letter queue {name} holds messages: inspect them, fix the cause, replay them",
        )
        if self._dead_letter_graph is None:
            self._dead_letter_graph = cloudwatch.GraphWidget(
                title="Messages in dead-letter queues", width=24, height=GRAPH_HEIGHT
            )
            self._add("Dead-letter queues", self._dead_letter_graph)
        self._dead_letter_graph.add_left_metric(depth.with_(label=name))

    # --- helpers -----------------------------------------------------------------------------------------

    def _claim(self, name: str) -> None:
        # Names become construct ids of the alarms: a repeat would collide, with a less helpful message.
        if not name or name in self._names:
            raise ValueError(f"observability input name {name!r} is empty or already used")
        self._names.add(name)

    def _alarm(
        self,
        construct_id: str,
        metric: cloudwatch.IMetric,
        *,
        threshold: float,
        comparison: cloudwatch.ComparisonOperator,
        description: str,
        evaluation_periods: int = 1,
        treat_missing_data: cloudwatch.TreatMissingData = cloudwatch.TreatMissingData.NOT_BREACHING,
    ) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self,
            construct_id,
            metric=metric,
            threshold=threshold,
            comparison_operator=comparison,
            evaluation_periods=evaluation_periods,
            datapoints_to_alarm=evaluation_periods,
            treat_missing_data=treat_missing_data,
            alarm_description=description,
        )
        alarm.add_alarm_action(self._action)
        alarm.add_ok_action(self._action)
        self.alarms.append(alarm)
        return alarm

    def _add(self, section: str, *widgets: cloudwatch.IWidget) -> None:
        column = self._sections[section]
        if not column.widgets:
            column.add_widget(cloudwatch.TextWidget(markdown=f"## {section}", width=24, height=1))
        column.add_widget(cloudwatch.Row(*widgets))  # type: ignore[arg-type]

    @staticmethod
    def _target_group_metric(
        target_group: TargetGroup, load_balancer: LoadBalancer | None, metric_name: str, statistic: str
    ) -> cloudwatch.Metric:
        # ELB reports target-group metrics per (target group, load balancer): both dimensions are needed.
        if load_balancer is None:
            # The target group's own metrics use its first load balancer. (The unhealthy-host method is
            # un_healthy_host_count on network target groups, unhealthy_host_count on application ones.)
            if isinstance(target_group, elbv2.ApplicationTargetGroup):
                app_metrics = target_group.metrics
                method = (
                    app_metrics.healthy_host_count
                    if metric_name == "HealthyHostCount"
                    else app_metrics.unhealthy_host_count
                )
            else:
                net_metrics = target_group.metrics
                method = (
                    net_metrics.healthy_host_count
                    if metric_name == "HealthyHostCount"
                    else net_metrics.un_healthy_host_count
                )
            return method(period=Duration.minutes(1), statistic=statistic)
        namespace = (
            "AWS/ApplicationELB"
            if isinstance(target_group, elbv2.ApplicationTargetGroup)
            else "AWS/NetworkELB"
        )
        return cloudwatch.Metric(
            namespace=namespace,
            metric_name=metric_name,
            dimensions_map={
                "TargetGroup": target_group.target_group_full_name,
                "LoadBalancer": load_balancer.load_balancer_full_name,
            },
            period=Duration.minutes(1),
            statistic=statistic,
        )
