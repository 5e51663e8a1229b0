#!/usr/bin/env python3
"""Indexer Lambda benchmark: what one SQS batch of S3 notifications costs, by batch size.

Not a test: run it by hand, e.g. ``python bench/indexer.py --count 600 --batch-sizes 1,10,100``. It runs
``functions/indexer/handler.py`` in this process, as the Lambda runtime would, against moto's in-process
S3, DynamoDB and EventBridge (no AWS account, no network), on instances cloned from the real CT slice of
pydicom-data (``bench/ingest.py``'s generator: 100 instances a study and series, as a modality sends them).
The objects are put in the bucket first, untimed; then the notifications are handed to the handler in
batches of each size.

It prints, per batch size: instances/s and ms of wall time per instance in the handler, batch latency
p50/p95, and the AWS API calls per instance by service (counted at botocore). moto answers in-process, so
the time is our CPU (parsing, DICOM JSON, DynamoDB marshalling) plus moto's, with no network round trips:
an upper bound of the CPU the function burns, not its latency on AWS (docs/scale-plan.md estimates that
from the call counts). With ``--opensearch-url`` (an unauthenticated endpoint, e.g. a local container)
the batch is indexed there too and OpenSearch requests are counted; without it ingest catalogs only, as
the deployed function does with no search domain.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for path in (str(REPO_ROOT), str(BENCH_DIR)):
    if path not in sys.path:
        sys.path.insert(0, path)

REGION = "us-east-1"
BUCKET, TABLE, BUS, PREFIX = "bench-objects", "bench-catalog", "bench-events", "bench"


@dataclass(frozen=True)
class BatchRun:
    batch_size: int
    instances: int
    seconds: float
    latencies: list[float]
    calls: Counter[str]
    failures: int

    @property
    def per_second(self) -> float:
        return self.instances / self.seconds if self.seconds else 0.0


@dataclass
class LambdaContext:
    function_name: str = "skypacs-indexer-bench"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:123456789012:function:skypacs-indexer-bench"
    aws_request_id: str = ""
    log_group_name: str = "/aws/lambda/skypacs-indexer-bench"
    log_stream_name: str = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def notification(key: str, size: int) -> dict[str, Any]:
    """One SQS record carrying the S3 ObjectCreated notification for ``key``, as the event source sends it."""
    body = {"Records": [{
        "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": BUCKET}, "object": {"key": key, "size": size}},
    }]}
    return {"messageId": str(uuid.uuid4()), "receiptHandle": "bench", "body": json.dumps(body),
            "attributes": {}, "messageAttributes": {}, "eventSource": "aws:sqs", "awsRegion": REGION}


@contextmanager
def counting_calls() -> Iterator[Counter[str]]:
    """Count every AWS API call (``service.Operation``) and OpenSearch request made meanwhile."""
    import botocore.client
    from opensearchpy import Transport

    calls: Counter[str] = Counter()
    make_api_call = botocore.client.BaseClient._make_api_call
    perform_request = Transport.perform_request

    def counted_api_call(self: Any, operation: str, params: Any) -> Any:
        calls[f"{self.meta.service_model.service_name}.{operation}"] += 1
        return make_api_call(self, operation, params)

    def counted_request(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        calls[f"opensearch.{method} {url.split('?')[0].rsplit('/', 1)[-1] or '/'}"] += 1
        return perform_request(self, method, url, *args, **kwargs)

    botocore.client.BaseClient._make_api_call = counted_api_call
    Transport.perform_request = counted_request  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        botocore.client.BaseClient._make_api_call = make_api_call
        Transport.perform_request = perform_request  # type: ignore[method-assign]


def run_batch_size(blobs: Sequence[bytes], batch_size: int, opensearch_url: str | None) -> BatchRun:
    import boto3
    from moto import mock_aws

    from functions.indexer import handler as indexer
    from skypacs import aws
    from skypacs.adapters.dynamodb_catalog import create_catalog_table
    from skypacs.config import (
        ENV_BUCKET,
        ENV_CATALOG_TABLE,
        ENV_EVENT_BUS,
        ENV_OPENSEARCH_ENDPOINT,
        ENV_OPENSEARCH_PREFIX,
    )
    from skypacs.parsing import parse_bytes

    os.environ.update({ENV_BUCKET: BUCKET, ENV_CATALOG_TABLE: TABLE, ENV_EVENT_BUS: BUS})
    if opensearch_url:
        os.environ[ENV_OPENSEARCH_ENDPOINT] = opensearch_url
        os.environ[ENV_OPENSEARCH_PREFIX] = f"{PREFIX}-{uuid.uuid4().hex[:8]}"
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        create_catalog_table(boto3.client("dynamodb", region_name=REGION), TABLE)
        boto3.client("events", region_name=REGION).create_event_bus(Name=BUS)
        records = []
        for blob in blobs:
            key = parse_bytes(blob).key
            s3.put_object(Bucket=BUCKET, Key=key, Body=blob)
            records.append(notification(key, len(blob)))
        aws.set_archive(None)
        archive = aws.archive()
        if opensearch_url:
            archive.index.ensure_indices()  # type: ignore[union-attr]
        latencies: list[float] = []
        failures = 0
        with counting_calls() as calls:
            started = time.perf_counter()
            for start in range(0, len(records), batch_size):
                batch = {"Records": records[start : start + batch_size]}
                began = time.perf_counter()
                context = LambdaContext(aws_request_id=str(uuid.uuid4()))
                response = indexer.handler(batch, context)  # type: ignore[arg-type]
                latencies.append(time.perf_counter() - began)
                failures += len(response["batchItemFailures"])
            seconds = time.perf_counter() - started
        if opensearch_url:
            archive.index.drop_indices()  # type: ignore[union-attr]
        aws.set_archive(None)
    return BatchRun(batch_size, len(records), seconds, latencies, calls, failures)


def parse_ms(blobs: Sequence[bytes]) -> float:
    """Milliseconds per instance of what ingest computes itself: header parse, checks, DICOM JSON."""
    from skypacs.parsing import parse_bytes

    started = time.perf_counter()
    for blob in blobs:
        parse_bytes(blob)
    return (time.perf_counter() - started) * 1000 / len(blobs)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1]


def format_runs(runs: Sequence[BatchRun]) -> str:
    lines = [
        "batch  instances  inst/s  ms/inst  batch p50 ms  batch p95 ms  failures  calls per instance",
        "-----  ---------  ------  -------  ------------  ------------  --------  ------------------",
    ]
    for run in runs:
        per_instance = ", ".join(
            f"{name} {count / run.instances:.2f}" for name, count in sorted(run.calls.items())
            if not name.startswith("sts.")
        )
        lines.append(
            f"{run.batch_size:>5}  {run.instances:>9}  {run.per_second:>6.1f}  {1000 / run.per_second:>7.1f}  "
            f"{percentile(run.latencies, 50) * 1000:>12.1f}  {percentile(run.latencies, 95) * 1000:>12.1f}  "
            f"{run.failures:>8}  {per_instance}"
        )
    return "\n".join(lines)


def _sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or any(size < 1 or size > 10_000 for size in sizes):
        raise argparse.ArgumentTypeError("batch sizes are whole numbers from 1 to 10,000 (SQS's maximum)")
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=600, help="instances per batch size (default 600)")
    parser.add_argument("--batch-sizes", type=_sizes, default=[1, 10, 100],
                        help="comma-separated SQS batch sizes (default 1,10,100; the stack uses 100)")
    parser.add_argument("--opensearch-url", help="an unauthenticated OpenSearch endpoint to index into too")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be positive")

    # Before the handler module is imported: no per-instance JSON log lines, no real credentials.
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ[name] = "bench"
    os.environ["AWS_DEFAULT_REGION"] = REGION
    os.environ.pop("AWS_PROFILE", None)

    from ingest import generate_instances

    instances = generate_instances(args.count)
    blobs = list(instances.take_blobs())
    print(f"source: {instances.source.description}; {len(blobs)} instances, "
          f"{sum(map(len, blobs)) / len(blobs) / 1e6:.2f} MB each, 100 a study; "
          f"moto in-process{'; OpenSearch at ' + args.opensearch_url if args.opensearch_url else ', no OpenSearch'}")
    runs = [run_batch_size(blobs, size, args.opensearch_url) for size in args.batch_sizes]
    print(format_runs(runs))
    print(f"our own CPU per instance, without AWS or moto: {parse_ms(blobs):.1f} ms (parse + DICOM JSON); "
          "the rest of ms/inst above is moto emulating the calls (its DynamoDB transactions copy the table)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
