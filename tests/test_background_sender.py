"""The background sender: publishing from a process (or a moment) with no hub running."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from events.gateway import transport
from events.gateway.transport import BackgroundSender, hand_off
from tests.transport_helpers import chain, started_hub, unpack, wait_until


def test_flush_waits_for_events_still_in_the_senders_buffer(monkeypatch: Any) -> None:
    monkeypatch.setattr(transport, "HAND_OFF_INTERVAL", 30)
    sent: list[int] = []

    class Layer:
        async def group_send(self, group: str, message: dict[str, Any]) -> None:
            await asyncio.sleep(0.01)
            sent.extend(m["seq"] for m in unpack(message))

    monkeypatch.setattr(transport, "get_channel_layer", Layer)
    sender = BackgroundSender()
    sender.submit({"seq": 0})
    assert wait_until(lambda: sent == [0])
    for i in range(1, 5):
        sender.submit({"seq": i})  # buffered: the next tick is 30 s away
    sender.flush(5)  # without forwarding the buffer first it would return at once
    assert sent == [0, 1, 2, 3, 4]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("hubs_stopped")
async def test_a_hand_off_racing_with_stop_goes_to_the_background_sender(
    monkeypatch: Any, settings: Any
) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # a shared layer exists

    class Sender:
        def __init__(self) -> None:
            self.got: list[int] = []

        def submit(self, message: dict[str, Any]) -> None:
            self.got.append(message["id"])

    sender = Sender()
    monkeypatch.setattr(transport, "_background_sender", lambda: sender)
    hub, _sub = await started_hub()
    # The race: the look-up still finds the hub's sender usable, but it has stopped by submit().
    monkeypatch.setattr(transport, "_sender_for_publish", lambda: hub.sender)
    await hub.stop()
    (event,) = chain((hub.last_id or 0) + 1, 1)
    await asyncio.to_thread(hand_off, event)
    assert sender.got == [event.id]
