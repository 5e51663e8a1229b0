"""EventBus on Amazon EventBridge, for the AWS archive.

Each :class:`ArchiveEvent` becomes one EventBridge entry: ``DetailType`` is the event type,
``Detail`` its detail as JSON, ``Source`` the archive's source name. Plugins subscribe with a rule on
the bus matching ``source`` and ``detail-type``; each target fails or retries independently of ingest.

PutEvents can accept the request and still reject an entry (``FailedEntryCount``): that is a
:class:`BackendError` too, so ingest's caller retries, and the retry (redelivered, finding the instance
already catalogued) publishes the event again instead of losing it. Entries are at most
256 KB; an event's detail holds UIDs, keys and outcomes only, far below that.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from skypacs.errors import BackendError
from skypacs.ports import ArchiveEvent

if TYPE_CHECKING:
    EventBridgeClient = Any
    """``mypy_boto3_events.EventBridgeClient`` where the stubs are installed."""

DEFAULT_SOURCE = "skypacs"
ENTRIES_PER_CALL = 10
"""EventBridge's most entries in one PutEvents."""


class EventBridgeEventBus:
    def __init__(
        self, bus_name: str, *, source: str = DEFAULT_SOURCE, client: EventBridgeClient | None = None
    ) -> None:
        if client is None:
            import boto3

            client = boto3.client("events")
        self.bus_name, self.source, self.client = bus_name, source, client

    def publish(self, event: ArchiveEvent) -> None:
        failures = self.publish_many([event])
        if failures:
            raise failures[0]

    def publish_many(self, events: Sequence[ArchiveEvent]) -> dict[int, Exception]:
        """PutEvents of up to :data:`ENTRIES_PER_CALL` entries a call; an entry PutEvents rejects fails
        alone (its ``ErrorCode``), a failed call fails its entries."""
        failures: dict[int, Exception] = {}
        for start in range(0, len(events), ENTRIES_PER_CALL):
            chunk = events[start : start + ENTRIES_PER_CALL]
            try:
                results = self._put(chunk)
            except BackendError as exc:
                failures.update({start + n: exc for n in range(len(chunk))})
                continue
            for n, (event, result) in enumerate(zip(chunk, results, strict=False)):
                if result.get("ErrorCode"):
                    failures[start + n] = BackendError(
                        f"event bus {self.bus_name} rejected {event.type}: "
                        f"{result.get('ErrorCode')} {result.get('ErrorMessage', '')}".rstrip()
                    )
        return failures

    def _put(self, events: Sequence[ArchiveEvent]) -> list[dict[str, Any]]:
        """One PutEvents; its per-entry results, in order."""
        entries = [
            {
                "Source": self.source,
                "DetailType": event.type,
                "Detail": json.dumps(event.detail, separators=(",", ":")),
                "EventBusName": self.bus_name,
            }
            for event in events
        ]
        what = events[0].type if len(events) == 1 else f"{len(events)} events"
        try:
            response = self.client.put_events(Entries=entries)
        except (ClientError, BotoCoreError) as exc:
            detail = (
                exc.response.get("Error", {}).get("Code")
                if isinstance(exc, ClientError)
                else type(exc).__name__
            )
            raise BackendError(f"cannot publish {what} to event bus {self.bus_name}: {detail}") from exc
        results: list[dict[str, Any]] = list(response.get("Entries") or [])
        results += [{}] * (len(events) - len(results))
        unexplained = int(response.get("FailedEntryCount", 0)) - sum(1 for r in results if r.get("ErrorCode"))
        if unexplained > 0:  # rejected without saying which: count them all as failed, to be retried
            results = [r if r.get("ErrorCode") else {"ErrorCode": "unknown error"} for r in results]
        return results
