"""The arithmetic of ``bench/cost.py``."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.bench_scripts import load_bench_script

cost = load_bench_script("cost")
IDLE = cost.Load(studies_per_day=0.0, qido_per_day=0.0, retrievals_per_day=0.0, nat_gb=0.0, flow_log_gb=0.0)


def line(lines: list, service: str) -> float:
    return next(item.monthly for item in lines if item.service == service)


def test_volumes_follow_the_stated_load() -> None:
    vol = cost.volumes(cost.Load())
    assert vol.instance_gb == pytest.approx(1024 / 1_000_000)
    assert vol.ingested_instances == pytest.approx(1_000 * 30 * 365 / 12)
    assert vol.viewer_opens == pytest.approx(vol.study_retrievals) == pytest.approx(1_000 * 365 / 12)
    # QIDO + per viewer open (series search + 4 metadata + 30 frames) + one 303 per whole-study retrieval.
    expected = (20_000 + 1_000 * 35 + 1_000) * 365 / 12
    assert vol.api_requests == pytest.approx(expected)


def test_s3_storage_and_requests() -> None:
    load = replace(IDLE, tb=2.0)
    assert cost.s3_line(load, cost.volumes(load), cost.Prices()).monthly == pytest.approx(2048 * 0.023)
    busy = replace(IDLE, studies_per_day=1.0, instances_per_study=1.0, tb=0.0)
    ingested = 365 / 12
    # One PUT and three GET/HEAD per ingested instance.
    expected = ingested * 0.005 / 1000 + 3 * ingested * 0.0004 / 1000
    assert cost.s3_line(busy, cost.volumes(busy), cost.Prices()).monthly == pytest.approx(expected)


def test_catalog_write_units_count_the_transaction_twice() -> None:
    assert cost.catalog_wru_per_instance(4.0) == 2 * (4 + 4) + 1
    assert cost.catalog_wru_per_instance(0.3) == 2 * (1 + 4) + 1
    assert cost.catalog_wru_per_instance(4.1) == 2 * (5 + 4) + 1
    # A batch of 10 of one series shares one write of the four level items.
    assert cost.catalog_wru_per_instance(4.0, batch=10) == pytest.approx(2 * (4 + 0.4) + 1)


def test_dynamodb_uses_current_on_demand_prices() -> None:
    prices = cost.Prices()
    assert prices.dynamodb_per_million_wru == 0.625
    load = replace(IDLE, studies_per_day=1_000_000 / (365 / 12), instances_per_study=1.0, instances=1,
                   indexer_batch=1.0)
    monthly = cost.dynamodb_line(load, cost.volumes(load), prices).monthly
    storage = (4.5 / 1024 / 1024) * (0.25 + 0.20)
    assert monthly == pytest.approx(17 * 0.625 + 1 * 0.125 + storage)


def test_opensearch_defaults_match_the_cdk_defaults() -> None:
    lines = cost.estimate(IDLE)
    nodes = 2 * 0.167 * 730
    volumes = 2 * 100 * 0.122
    assert line(lines, "OpenSearch") == pytest.approx(nodes + volumes)
    with_masters = cost.estimate(IDLE, replace(cost.Deployment(), search_master_nodes=3))
    assert line(with_masters, "OpenSearch") == pytest.approx(nodes + volumes + 3 * 0.128 * 730)
    bigger = cost.estimate(IDLE, replace(cost.Deployment(), search_node_hourly=0.335))
    assert line(bigger, "OpenSearch") == pytest.approx(2 * 0.335 * 730 + volumes)


def test_fargate_tasks_by_the_hour() -> None:
    dep = cost.Deployment()
    per_task = (0.04048 * 1 + 0.004445 * 2) * 730
    assert cost.fargate_line(dep, cost.Prices()).monthly == pytest.approx(3 * per_task)
    assert cost.fargate_line(replace(dep, gateway_tasks=4.0), cost.Prices()).monthly == pytest.approx(
        5 * per_task
    )


def test_nat_gateway_hours_address_and_bytes() -> None:
    load = replace(IDLE, nat_gb=100.0)
    expected = (0.045 + 0.005) * 730 + 100 * 0.045
    assert cost.nat_line(load, cost.Deployment(), cost.Prices()).monthly == pytest.approx(expected)


def test_xray_samples_one_a_second_then_five_percent() -> None:
    assert cost.xray_traces(1000) == 1000
    month = cost.SECONDS_PER_MONTH
    assert cost.xray_traces(month + 1_000_000) == pytest.approx(month + 50_000)


def test_idle_archive_pays_only_fixed_costs() -> None:
    lines = cost.estimate(replace(IDLE, tb=0.0))
    assert line(lines, "DynamoDB") == pytest.approx((1_000_000 * 4.5 / 1024 / 1024) * 0.45)
    assert line(lines, "API Gateway") == 0
    assert line(lines, "CloudFront") == 0
    assert line(lines, "Lambda") == 0
    assert cost.total(lines) == pytest.approx(sum(item.monthly for item in lines))


def test_cost_grows_with_every_load_figure() -> None:
    base = cost.total(cost.estimate(cost.Load()))
    for change in (
        {"tb": 2.0},
        {"studies_per_day": 2_000.0},
        {"qido_per_day": 40_000.0},
        {"retrievals_per_day": 4_000.0},
    ):
        assert cost.total(cost.estimate(replace(cost.Load(), **change))) > base, change


def test_default_estimate_is_stable() -> None:
    """The figure quoted in docs/deploy-aws.md; update both together."""
    assert cost.total(cost.estimate(cost.Load())) == pytest.approx(707, abs=1)


def test_command_line_overrides_and_renders(capsys: pytest.CaptureFixture[str]) -> None:
    load, dep = cost.parse_args(
        ["--tb", "10", "--instances", "10000000", "--search-data-nodes", "4", "--gateway-tls"]
    )
    assert (load.tb, load.instances, dep.search_data_nodes, dep.gateway_tls) == (10.0, 10_000_000, 4, True)
    assert load.studies_per_day == cost.Load().studies_per_day
    assert cost.main(["--studies-per-day", "500"]) == 0
    out = capsys.readouterr().out
    assert "total" in out and "Assumptions:" in out and cost.PRICES_AS_OF in out
    assert "500 studies/day" in out


def test_command_line_refuses_no_instances() -> None:
    with pytest.raises(SystemExit):
        cost.parse_args(["--instances", "0"])
