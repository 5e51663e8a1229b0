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
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from skypacs.errors import BackendError
from skypacs.ports import ArchiveEvent

if TYPE_CHECKING:
    EventBridgeClient = Any
    """``mypy_boto3_events.EventBridgeClient`` where the stubs are installed."""

DEFAULT_SOURCE = "skypacs"


class EventBridgeEventBus:
    def __init__(
        self, bus_name: str, *, source: str = DEFAULT_SOURCE, client: EventBridgeClient | None = None
    ) -> None:
        if client is None:
            import boto3

            client = boto3.client("events")
        self.bus_name, self.source, self.client = bus_name, source, client

    def publish(self, event: ArchiveEvent) -> None:
        entry = {
            "Source": self.source,
            "DetailType": event.type,
            "Detail": json.dumps(event.detail, separators=(",", ":")),
            "EventBusName": self.bus_name,
        }
        try:
            response = self.client.put_events(Entries=[entry])
        except (ClientError, BotoCoreError) as exc:
            detail = (
                exc.response.get("Error", {}).get("Code")
                if isinstance(exc, ClientError)
                else type(exc).__name__
            )
            raise BackendError(f"cannot publish {event.type} to event bus {self.bus_name}: {detail}") from exc
        if response.get("FailedEntryCount", 0):
            failed: dict[str, Any] = next((e for e in response.get("Entries", ()) if e.get("ErrorCode")), {})
            raise BackendError(
                f"event bus {self.bus_name} rejected {event.type}: "
                f"{failed.get('ErrorCode', 'unknown error')} {failed.get('ErrorMessage', '')}".rstrip()
            )
