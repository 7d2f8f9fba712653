"""Layer batches: events waiting together travel as one "rf.batch" layer message, in order;
a bad entry in a batch costs only itself."""

from __future__ import annotations

from typing import Any

import pytest

from events.gateway import transport
from events.gateway.transport import group
from tests.transport_helpers import chain, started_hub, wait_for


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("hubs_stopped")
async def test_events_waiting_together_travel_as_one_layer_message_in_order() -> None:
    hub, sub = await started_hub()
    layer_messages: list[dict[str, Any]] = []
    real_send = hub.layer.group_send

    async def recording_send(group: str, message: dict[str, Any]) -> None:
        layer_messages.append(message)
        await real_send(group, message)

    hub.layer.group_send = recording_send
    try:
        events = chain((hub.last_id or 0) + 1, transport.BATCH_MAX + 30)
        # All waiting in the outbox at once, as after one hand-off tick under load.
        hub.sender.enqueue_batch([e.to_message() for e in events])
        await wait_for(lambda: len(sub.ids) >= len(events))
    finally:
        del hub.layer.group_send
    assert [m["type"] for m in layer_messages] == ["rf.batch", "rf.batch"]
    assert [len(m["events"]) for m in layer_messages] == [transport.BATCH_MAX, 30]
    assert sub.ids == [e.id for e in events]
    assert hub.gap_repaired == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("hubs_stopped")
async def test_a_bad_entry_in_a_batch_costs_only_itself(caplog: Any) -> None:
    hub, sub = await started_hub()
    first, second = chain((hub.last_id or 0) + 1, 2)
    message = {
        "type": "rf.batch",
        "events": [first.to_message(), {"type": "rf.event", "garbage": True}, second.to_message()],
    }
    await hub.layer.group_send(group(0), message)  # chain() events are in shard 0
    await wait_for(lambda: len(sub.ids) >= 2)
    assert sub.ids == [first.id, second.id]
    assert "bad layer message dropped" in caplog.text


def test_a_lone_event_travels_as_itself() -> None:
    (event,) = chain(1, 1)
    assert transport.layer_message([event.to_message()]) == event.to_message()
