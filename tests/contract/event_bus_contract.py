"""The EventBus contract: every adapter passes this suite.

Fixtures: ``event_bus`` (the adapter) and ``received`` (a callable returning the events a subscriber
has received so far, in order), so that each backend supplies its own way to observe delivery.
"""

from __future__ import annotations

from collections.abc import Callable

from skypacs.ports import INSTANCE_DELETED, INSTANCE_STORED, ArchiveEvent, EventBus


class EventBusContract:
    def test_published_events_reach_subscribers_with_their_detail(
        self, event_bus: EventBus, received: Callable[[], list[ArchiveEvent]]
    ) -> None:
        stored = ArchiveEvent(INSTANCE_STORED, {"SOPInstanceUID": "1.2.3", "key": "studies/x.dcm", "size": 5})
        deleted = ArchiveEvent(INSTANCE_DELETED, {"SOPInstanceUID": "1.2.3"})
        event_bus.publish(stored)
        event_bus.publish(deleted)
        assert received() == [stored, deleted]

    def test_a_batch_is_published_in_order(
        self, event_bus: EventBus, received: Callable[[], list[ArchiveEvent]]
    ) -> None:
        batch = [ArchiveEvent(INSTANCE_STORED, {"SOPInstanceUID": f"1.2.3.{n}", "outcome": "stored"}) for n in range(23)]
        assert event_bus.publish_many(batch) == {}
        assert received() == batch
