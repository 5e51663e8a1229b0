#!/usr/bin/env python3
"""Monthly cost estimate of the AWS deployment (``infra/``) for a stated archive size and load.

Not a test and not a bill: run it by hand, e.g. ``python bench/cost.py`` (1 TB, 1 million instances,
1,000 studies ingested a day, 20,000 QIDO-RS searches a day, 2,000 study retrievals a day) or
``python bench/cost.py --tb 10 --instances 10000000 --studies-per-day 3000``. It prints one line per
service, the total, and every assumption it made, so the figure can be argued with line by line.

Why a script rather than a spreadsheet: the arithmetic is pure functions over three frozen dataclasses
(:class:`Load` what the archive holds and does, :class:`Deployment` what ``cdk deploy`` provisions,
:class:`Prices` what AWS charges), unit-tested in ``tests/unit/test_cost_estimate.py``, and the
defaults follow the CDK app's defaults. ``docs/deploy-aws.md`` quotes its output.

Prices are us-east-1 on-demand LIST prices (no free tier, no savings plans, no reserved instances) as
of :data:`PRICES_AS_OF`. They change: check https://aws.amazon.com/pricing/ before relying on a figure.
Not included: data transfer between your site and AWS other than retrieval egress (VPN, Direct
Connect), support plans, taxes, S3 server-access-log storage, and AWS Backup.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

HOURS_PER_MONTH = 730.0
"""AWS's billing month for hourly resources."""
DAYS_PER_MONTH = 365.0 / 12
SECONDS_PER_MONTH = DAYS_PER_MONTH * 86_400
GB_PER_TB = 1024.0
"""AWS bills storage in GB of 2**30 bytes; a "TB" here is 1,024 of them."""

PRICES_AS_OF = "2025-06-01"
"""Date of the list prices in :class:`Prices` (us-east-1, on demand, USD)."""


@dataclass(frozen=True)
class Prices:
    """us-east-1 on-demand list prices in USD as of :data:`PRICES_AS_OF` (first pricing tier)."""

    s3_standard_gb_month: float = 0.023
    s3_put_per_1k: float = 0.005
    """PUT, COPY, POST, LIST."""
    s3_get_per_1k: float = 0.0004
    """GET, HEAD (and every other request)."""
    # DynamoDB on-demand throughput was halved on 2024-11-01 (from $1.25 / $0.25 per million).
    dynamodb_per_million_wru: float = 0.625
    dynamodb_per_million_rru: float = 0.125
    dynamodb_gb_month: float = 0.25
    dynamodb_pitr_gb_month: float = 0.20
    lambda_gb_second: float = 0.0000166667
    """x86_64 (``infra.bundling.LAMBDA_ARCHITECTURE``); arm64 is $0.0000133334."""
    lambda_per_million_requests: float = 0.20
    apigw_rest_per_million: float = 3.50
    data_transfer_out_gb: float = 0.09
    """Internet egress from a region (API Gateway answers), first 10 TB."""
    opensearch_r6g_large_hour: float = 0.167
    opensearch_master_hour: float = 0.128
    """m6g.large.search, the usual dedicated master node."""
    opensearch_gp3_gb_month: float = 0.122
    fargate_vcpu_hour: float = 0.04048
    fargate_gb_hour: float = 0.004445
    nlb_hour: float = 0.0225
    nlb_lcu_hour: float = 0.006
    alb_hour: float = 0.0225
    alb_lcu_hour: float = 0.008
    nat_hour: float = 0.045
    nat_gb: float = 0.045
    public_ipv4_hour: float = 0.005
    """Every public IPv4 address, in use or not (since 2024-02-01): the NAT gateway's Elastic IP."""
    cloudfront_gb: float = 0.085
    cloudfront_per_10k_https: float = 0.01
    kms_key_month: float = 1.0
    kms_per_10k_requests: float = 0.03
    sqs_per_million: float = 0.40
    eventbridge_per_million: float = 1.0
    eventbridge_archive_gb: float = 0.10
    logs_ingest_gb: float = 0.50
    logs_storage_gb_month: float = 0.03
    cloudwatch_alarm_month: float = 0.10
    cloudwatch_dashboard_month: float = 3.0
    xray_per_million_traces: float = 5.0
    secret_month: float = 0.40
    secrets_per_10k_calls: float = 0.05


@dataclass(frozen=True)
class Load:
    """What the archive holds and what it is asked to do; the defaults are a busy hospital's day."""

    tb: float = 1.0
    """Average DICOM bytes stored during the month (current versions, S3 Standard)."""
    instances: int = 1_000_000
    """Instances stored; with ``tb`` it gives the mean instance size (1 TB / 1 M = ~1.07 MB)."""
    studies_per_day: float = 1_000.0
    instances_per_study: float = 30.0
    """A mix: CR/DX 2-4, US 30-60, CT/MR 100-600 instances per study."""
    series_per_study: float = 4.0
    qido_per_day: float = 20_000.0
    retrievals_per_day: float = 2_000.0
    """Study retrievals (a viewer opening a study, or a whole-study WADO-RS / C-MOVE)."""
    viewer_fraction: float = 0.5
    """Share of retrievals by a viewer (OHIF: series metadata, then one frames request per instance,
    through API Gateway); the rest are whole-study WADO-RS, redirected (303) to the streaming service."""
    catalog_item_kb: float = 4.0
    """Catalog instance item: gzip-compressed DICOM JSON header plus record fields."""
    index_doc_kb: float = 10.0
    """OpenSearch instance document on disk per primary copy (source plus indexed fields)."""
    indexer_seconds: float = 0.08
    """Indexer Lambda time per instance, in batches of ~10 at this load: S3 HEAD + ranged GETs and the
    catalog lookup on 8 threads, ~10 ms parsing, one OpenSearch round per batch (~0.5 s: bulk, level
    rebuild), then one DynamoDB transaction and one EventBridge put per instance (~25 ms)."""
    indexer_batch: float = 10.0
    """Instances per indexer invocation (batch size 100, 2 s window: ~10 at this load, more in bursts)."""
    api_seconds: float = 0.15
    """DICOMweb Lambda time per request (QIDO via OpenSearch, metadata via DynamoDB, frames via S3)."""
    nat_gb: float = 20.0
    """Bytes through the NAT gateway: ECR image pulls, Fargate logs, EventBridge/SQS/KMS/X-Ray calls
    (S3 and DynamoDB go through free gateway endpoints)."""
    flow_log_gb: float = 5.0


@dataclass(frozen=True)
class Deployment:
    """What the CDK app provisions with its default context (see docs/deploy-aws.md)."""

    search_data_nodes: int = 2
    search_node_hourly: float = 0.0
    """Price of one data node an hour; 0 = r6g.large.search (``Prices.opensearch_r6g_large_hour``)."""
    search_volume_gib: float = 100.0
    search_master_nodes: int = 0
    gateway_tasks: float = 2.0
    gateway_vcpu: float = 1.0
    gateway_gb: float = 2.0
    gateway_tls: bool = False
    streaming_tasks: float = 1.0
    streaming_vcpu: float = 1.0
    streaming_gb: float = 2.0
    nat_gateways: int = 1
    plugins: int = 0
    """Plugin functions (the ``plugins`` context option; none by default): one Lambda each, invoked once
    per stored instance, each with two alarms of its own."""
    plugin_seconds: float = 0.1
    plugin_memory_gb: float = 0.5
    indexer_memory_gb: float = 1.0
    """``infra/constructs/indexer.py`` MEMORY_MB (1024)."""
    api_memory_gb: float = 1769 / 1024
    """``infra/constructs/api.py`` API_MEMORY_MB (1769: one full vCPU for rendering and transcoding)."""
    authorizer_memory_gb: float = 0.25
    kms_keys: int = 9
    """Bucket, catalog, search, logs, gateway logs, streaming, backup, alarm topic, event bus."""
    secrets: int = 1
    alarms: int = 15
    """The stack's own alarms; each plugin adds two (see :func:`alarm_count`)."""
    dashboards: int = 1


@dataclass(frozen=True)
class Volumes:
    """Monthly quantities derived from a :class:`Load` (all per month)."""

    instance_gb: float
    ingested_instances: float
    ingested_gb: float
    viewer_opens: float
    study_retrievals: float
    retrieved_instances: float
    viewer_gb: float
    streamed_gb: float
    qido: float
    api_requests: float


@dataclass(frozen=True)
class Line:
    service: str
    monthly: float
    detail: str


def volumes(load: Load) -> Volumes:
    instance_gb = load.tb * GB_PER_TB / load.instances if load.instances else 0.0
    ingested = load.studies_per_day * load.instances_per_study * DAYS_PER_MONTH
    retrievals = load.retrievals_per_day * DAYS_PER_MONTH
    viewer_opens = retrievals * load.viewer_fraction
    study_retrievals = retrievals - viewer_opens
    retrieved = retrievals * load.instances_per_study
    qido = load.qido_per_day * DAYS_PER_MONTH
    # A viewer opening a study: one series search, one metadata request per series, one frames request
    # per instance. A whole-study retrieval: the one request that answers 303.
    per_open = 1 + load.series_per_study + load.instances_per_study
    return Volumes(
        instance_gb=instance_gb,
        ingested_instances=ingested,
        ingested_gb=ingested * instance_gb,
        viewer_opens=viewer_opens,
        study_retrievals=study_retrievals,
        retrieved_instances=retrieved,
        viewer_gb=viewer_opens * load.instances_per_study * instance_gb,
        streamed_gb=study_retrievals * load.instances_per_study * instance_gb,
        qido=qido,
        api_requests=qido + viewer_opens * per_open + study_retrievals,
    )


def catalog_wru_per_instance(item_kb: float, batch: float = 1.0) -> float:
    """Write request units of one ingest. Transactional writes cost twice the standard units: the
    instance item, plus its share of the four small level items (series, study, patient, patient-study
    link, each under 1 KB) that one transaction writes once for the ``batch`` instances of a series it
    holds (``Catalog.put_instances``), plus one unit for the keys-only ``by-sop-instance`` GSI entry."""
    return 2 * (math.ceil(item_kb) + 4 / max(batch, 1.0)) + 1


def catalog_rru_per_instance() -> float:
    """Two eventually consistent GSI queries (``get_instance`` and ``put_instance``) of half a unit."""
    return 1.0


def xray_traces(invocations: float) -> float:
    """Lambda active tracing samples the first request each second and 5% of the rest (default rule);
    spread evenly over the month."""
    reservoir = min(invocations, SECONDS_PER_MONTH)
    return reservoir + 0.05 * (invocations - reservoir)


def _hourly(rate: float, count: float = 1) -> float:
    return rate * count * HOURS_PER_MONTH


def s3_line(load: Load, vol: Volumes, p: Prices) -> Line:
    storage = load.tb * GB_PER_TB * p.s3_standard_gb_month
    puts = vol.ingested_instances  # the gateway's (or STOW's) PUT
    # Ingest: HEAD + two ranged GETs of the header; retrieval: one GET per instance (streamed) or a HEAD
    # and a ranged GET per frames request.
    gets = 3 * vol.ingested_instances + vol.study_retrievals * load.instances_per_study
    gets += 2 * vol.viewer_opens * load.instances_per_study
    requests = puts / 1000 * p.s3_put_per_1k + gets / 1000 * p.s3_get_per_1k
    return Line(
        "S3",
        storage + requests,
        f"{load.tb * GB_PER_TB:,.0f} GB Standard ${storage:,.2f}; {puts:,.0f} PUT + {gets:,.0f} GET/HEAD",
    )


def dynamodb_line(load: Load, vol: Volumes, p: Prices) -> Line:
    wru = vol.ingested_instances * catalog_wru_per_instance(load.catalog_item_kb, load.indexer_batch)
    # Ingest lookups; a retrieval or series metadata reads the study partition (strongly consistent:
    # one unit per 4 KB of items read).
    rru = vol.ingested_instances * catalog_rru_per_instance()
    rru += vol.retrieved_instances * load.catalog_item_kb / 4
    storage_gb = load.instances * (load.catalog_item_kb + 0.5) / (1024 * 1024)
    cost = wru / 1e6 * p.dynamodb_per_million_wru + rru / 1e6 * p.dynamodb_per_million_rru
    cost += storage_gb * (p.dynamodb_gb_month + p.dynamodb_pitr_gb_month)
    return Line(
        "DynamoDB", cost, f"{wru / 1e6:,.1f} M WRU, {rru / 1e6:,.1f} M RRU, {storage_gb:,.1f} GB + PITR"
    )


def alarm_count(dep: Deployment) -> int:
    return dep.alarms + 2 * dep.plugins


def lambda_line(load: Load, vol: Volumes, dep: Deployment, p: Prices) -> Line:
    authorizer = vol.api_requests / 10  # REST authorizer results are cached (300 s): ~1 call in 10
    gb_seconds = (
        vol.ingested_instances * load.indexer_seconds * dep.indexer_memory_gb
        + vol.api_requests * load.api_seconds * dep.api_memory_gb
        + authorizer * 0.05 * dep.authorizer_memory_gb
        + vol.ingested_instances * dep.plugins * dep.plugin_seconds * dep.plugin_memory_gb
    )
    invocations = vol.ingested_instances / load.indexer_batch + vol.api_requests + authorizer
    invocations += vol.ingested_instances * dep.plugins
    cost = gb_seconds * p.lambda_gb_second + invocations / 1e6 * p.lambda_per_million_requests
    return Line("Lambda", cost, f"{gb_seconds / 1e6:,.2f} M GB-s, {invocations / 1e6:,.2f} M invocations")


def api_gateway_line(vol: Volumes, p: Prices) -> Line:
    egress_gb = vol.viewer_gb + vol.qido * 20 / (1024 * 1024)  # ~20 KB of DICOM JSON per search
    cost = vol.api_requests / 1e6 * p.apigw_rest_per_million + egress_gb * p.data_transfer_out_gb
    return Line("API Gateway", cost, f"{vol.api_requests / 1e6:,.2f} M requests, {egress_gb:,.0f} GB out")


def opensearch_line(load: Load, dep: Deployment, p: Prices) -> Line:
    nodes = _hourly(dep.search_node_hourly or p.opensearch_r6g_large_hour, dep.search_data_nodes)
    masters = _hourly(p.opensearch_master_hour, dep.search_master_nodes)
    storage = dep.search_data_nodes * dep.search_volume_gib * p.opensearch_gp3_gb_month
    used_gb = load.instances * load.index_doc_kb * 2 / (1024 * 1024)  # one replica
    return Line(
        "OpenSearch",
        nodes + masters + storage,
        f"{dep.search_data_nodes} data nodes + {dep.search_master_nodes} masters, "
        f"{dep.search_data_nodes} x {dep.search_volume_gib:,.0f} GiB gp3 (~{used_gb:,.0f} GB used)",
    )


def fargate_line(dep: Deployment, p: Prices) -> Line:
    def task(vcpu: float, gb: float) -> float:
        return _hourly(p.fargate_vcpu_hour * vcpu + p.fargate_gb_hour * gb)

    gateway = dep.gateway_tasks * task(dep.gateway_vcpu, dep.gateway_gb)
    streaming = dep.streaming_tasks * task(dep.streaming_vcpu, dep.streaming_gb)
    return Line(
        "Fargate",
        gateway + streaming,
        f"gateway {dep.gateway_tasks:g} x {dep.gateway_vcpu:g} vCPU/{dep.gateway_gb:g} GB ${gateway:,.2f}, "
        f"streaming {dep.streaming_tasks:g} x {dep.streaming_vcpu:g} vCPU/{dep.streaming_gb:g} GB",
    )


def load_balancers_line(vol: Volumes, dep: Deployment, p: Prices) -> Line:
    # Processed bytes dominate the LCU dimensions at this load: 1 LCU = 1 GB an hour (ALB and NLB alike).
    nlb_lcu = max(vol.ingested_gb / HOURS_PER_MONTH, 1 / 24)
    alb_lcu = max(vol.streamed_gb / HOURS_PER_MONTH, 1 / 24)
    nlb = _hourly(p.nlb_hour) + _hourly(p.nlb_lcu_hour, nlb_lcu * (2 if dep.gateway_tls else 1))
    alb = _hourly(p.alb_hour) + _hourly(p.alb_lcu_hour, alb_lcu)
    return Line("Load balancers", nlb + alb, f"NLB ${nlb:,.2f} ({nlb_lcu:,.2f} LCU), ALB ${alb:,.2f}")


def nat_line(load: Load, dep: Deployment, p: Prices) -> Line:
    cost = _hourly(p.nat_hour + p.public_ipv4_hour, dep.nat_gateways) + load.nat_gb * p.nat_gb
    return Line("NAT gateway", cost, f"{dep.nat_gateways} x (hours + Elastic IP), {load.nat_gb:,.0f} GB")


def cloudfront_line(load: Load, vol: Volumes, p: Prices) -> Line:
    # The streaming service answers each whole-study retrieval in one request.
    cost = vol.streamed_gb * p.cloudfront_gb + vol.study_retrievals / 10_000 * p.cloudfront_per_10k_https
    return Line("CloudFront", cost, f"{vol.streamed_gb:,.0f} GB out (free tier not applied)")


def messaging_line(vol: Volumes, p: Prices) -> Line:
    # SQS: the S3 notification, the receive and the batched delete per instance, plus the event source
    # mapping's idle long polls (5 pollers, one 20-second poll each).
    idle_polls = 5 * SECONDS_PER_MONTH / 20
    sqs = (vol.ingested_instances * 2.2 + idle_polls) / 1e6 * p.sqs_per_million
    events = vol.ingested_instances  # InstanceStored
    archive_gb = events * 1 / (1024 * 1024)
    eventbridge = events / 1e6 * p.eventbridge_per_million + archive_gb * (
        p.eventbridge_archive_gb + p.s3_standard_gb_month
    )
    return Line("SQS + EventBridge", sqs + eventbridge, f"SQS ${sqs:,.2f}, {events / 1e6:,.2f} M events")


def observability_line(load: Load, vol: Volumes, dep: Deployment, p: Prices) -> Line:
    # ~1 KB of JSON log lines per ingested instance and per API request (Lambda, API access log).
    log_gb = (vol.ingested_instances + vol.api_requests) / (1024 * 1024) + load.flow_log_gb
    logs = log_gb * (p.logs_ingest_gb + p.logs_storage_gb_month)
    traces = xray_traces(vol.ingested_instances / load.indexer_batch) + xray_traces(vol.api_requests)
    xray = traces / 1e6 * p.xray_per_million_traces
    alarms = alarm_count(dep)
    fixed = alarms * p.cloudwatch_alarm_month + dep.dashboards * p.cloudwatch_dashboard_month
    return Line(
        "CloudWatch + X-Ray",
        logs + xray + fixed,
        f"{log_gb:,.1f} GB logs, {traces / 1e6:,.2f} M traces, {alarms} alarms",
    )


def security_line(dep: Deployment, p: Prices) -> Line:
    # S3 Bucket Keys and the DynamoDB/OpenSearch data-key caches keep KMS calls to ~100k a month.
    kms = dep.kms_keys * p.kms_key_month + 100_000 / 10_000 * p.kms_per_10k_requests
    secrets = dep.secrets * p.secret_month + 10_000 / 10_000 * p.secrets_per_10k_calls
    return Line("KMS + Secrets Manager", kms + secrets, f"{dep.kms_keys} keys, {dep.secrets} secret")


def estimate(load: Load, dep: Deployment | None = None, prices: Prices | None = None) -> list[Line]:
    """One :class:`Line` per service, in the order they are printed."""
    dep = dep if dep is not None else Deployment()
    p = prices if prices is not None else Prices()
    vol = volumes(load)
    return [
        s3_line(load, vol, p),
        dynamodb_line(load, vol, p),
        opensearch_line(load, dep, p),
        lambda_line(load, vol, dep, p),
        api_gateway_line(vol, p),
        fargate_line(dep, p),
        load_balancers_line(vol, dep, p),
        nat_line(load, dep, p),
        cloudfront_line(load, vol, p),
        messaging_line(vol, p),
        observability_line(load, vol, dep, p),
        security_line(dep, p),
    ]


def total(lines: Sequence[Line]) -> float:
    return sum(line.monthly for line in lines)


def render(lines: Sequence[Line], load: Load, dep: Deployment) -> str:
    vol = volumes(load)
    width = max(len(line.service) for line in lines)
    out = [f"SkyPACS on AWS: monthly estimate, us-east-1 on-demand list prices as of {PRICES_AS_OF}", ""]
    out += [f"{line.service:<{width}}  {line.monthly:>10,.2f}  {line.detail}" for line in lines]
    out += [f"{'total':<{width}}  {total(lines):>10,.2f}  USD a month", "", "Assumptions:"]
    out += [
        (
            f"- stored: {load.tb:g} TB in {load.instances:,} instances ({vol.instance_gb * 1024:,.2f} MB each);"
            f" catalog item {load.catalog_item_kb:g} KB, index document {load.index_doc_kb:g} KB (+1 replica)"
        ),
        (
            f"- ingest: {load.studies_per_day:,.0f} studies/day x {load.instances_per_study:g} instances ="
            f" {vol.ingested_instances:,.0f} instances, {vol.ingested_gb:,.0f} GB a month"
            f" (the archive grows by that much: +${vol.ingested_gb * Prices().s3_standard_gb_month:,.2f}"
            " of S3 each month)"
        ),
        (
            f"- search: {load.qido_per_day:,.0f} QIDO-RS a day; retrieval: {load.retrievals_per_day:,.0f} studies a"
            f" day, {load.viewer_fraction:.0%} by a viewer through API Gateway (series metadata + frames),"
            " the rest whole-study through the streaming service and CloudFront"
        ),
        (
            f"- Lambda x86_64: indexer {dep.indexer_memory_gb * 1024:,.0f} MB, {load.indexer_seconds:g} s an"
            f" instance, {load.indexer_batch:g} a batch; API {dep.api_memory_gb * 1024:,.0f} MB,"
            f" {load.api_seconds:g} s a request; {dep.plugins} plugin functions per stored instance"
        ),
        (
            f"- OpenSearch {dep.search_data_nodes} data nodes, {dep.search_master_nodes} dedicated masters;"
            f" gateway {dep.gateway_tasks:g} tasks; streaming {dep.streaming_tasks:g} task;"
            f" {dep.nat_gateways} NAT gateway ({load.nat_gb:g} GB)"
        ),
        (
            "- 730 hours and 30.4 days a month; no free tier (CloudFront's 1 TB/month, Lambda's 400,000 GB-s,"
            " Cognito's first 10,000 users are free), no savings plans or reserved instances"
        ),
        "- not included: VPN / Direct Connect to your site, support, taxes, S3 access-log storage, backups",
    ]
    return "\n".join(out)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Monthly AWS cost of a SkyPACS deployment for a given archive size and load.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    load, dep = Load(), Deployment()
    options = {
        "tb": "TB stored (S3 Standard)",
        "instances": "instances stored",
        "studies_per_day": "studies ingested a day",
        "instances_per_study": "mean instances per study",
        "series_per_study": "mean series per study",
        "qido_per_day": "QIDO-RS searches a day",
        "retrievals_per_day": "study retrievals a day",
        "viewer_fraction": "share of retrievals made by a viewer through the API",
        "catalog_item_kb": "catalog instance item size, KB",
        "index_doc_kb": "OpenSearch document size per instance, KB",
        "indexer_seconds": "indexer Lambda seconds per instance",
        "indexer_batch": "instances per indexer invocation",
        "api_seconds": "DICOMweb Lambda seconds per request",
        "nat_gb": "GB through the NAT gateway a month",
        "flow_log_gb": "VPC flow log GB a month",
    }
    for name, help_text in options.items():
        kind = type(getattr(load, name))
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=kind, default=getattr(load, name), help=help_text
        )
    deployment = {
        "search_data_nodes": "OpenSearch data nodes",
        "search_node_hourly": "USD an hour per data node (0: r6g.large.search, $0.167)",
        "search_volume_gib": "gp3 GiB per data node",
        "search_master_nodes": "dedicated master nodes (m6g.large.search)",
        "gateway_tasks": "gateway Fargate tasks (average)",
        "streaming_tasks": "streaming service Fargate tasks (average)",
        "nat_gateways": "NAT gateways",
        "plugins": "plugin Lambda functions",
    }
    for name, help_text in deployment.items():
        kind = type(getattr(dep, name))
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=kind, default=getattr(dep, name), help=help_text
        )
    parser.add_argument("--gateway-tls", action="store_true", help="a TLS listener too (2762)")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> tuple[Load, Deployment]:
    args = vars(_parser().parse_args(argv))
    load = replace(Load(), **{f.name: args[f.name] for f in fields(Load)})
    dep_names = {f.name for f in fields(Deployment)} & set(args)
    dep = replace(Deployment(), **{name: args[name] for name in dep_names})
    if load.instances <= 0 or load.tb < 0:
        raise SystemExit("--instances must be positive and --tb not negative")
    return load, dep


def main(argv: Sequence[str] | None = None) -> int:
    load, dep = parse_args(argv)
    print(render(estimate(load, dep), load, dep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
