"""The background sender: publishing from a process (or a moment) with no hub running."""

from __future__ import annotations

import asyncio
import os
import threading
import time
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


def test_the_exit_flush_with_nothing_published_returns_at_once(monkeypatch: Any) -> None:
    monkeypatch.setattr(transport, "_sender", None)
    assert transport.flush_background_sender(5) is True
    transport._flush_at_exit()  # no sender: nothing to do, nothing raised


def test_the_exit_flush_returns_at_once_when_the_senders_thread_is_gone(
    monkeypatch: Any,
) -> None:
    class Layer:
        async def group_send(self, group: str, message: dict[str, Any]) -> None:
            pass

    monkeypatch.setattr(transport, "get_channel_layer", Layer)
    sender = BackgroundSender()
    # What a forked child or a late exit sees: the sender object, its thread gone (a thread
    # that ended stands in for it; the real one idles on, a daemon).
    gone = threading.Thread(target=lambda: None)
    gone.start()
    gone.join()
    sender._thread = gone
    sender.submit({"seq": 1})
    monkeypatch.setattr(transport, "_sender", sender)
    started = time.monotonic()
    assert transport.flush_background_sender(30) is False
    assert time.monotonic() - started < 1  # not the 30 s timeout


def test_a_forked_child_starts_its_own_sender(monkeypatch: Any) -> None:
    class Layer:
        async def group_send(self, group: str, message: dict[str, Any]) -> None:
            pass

    monkeypatch.setattr(transport, "get_channel_layer", Layer)
    monkeypatch.setattr(transport, "_sender", None)
    parent_sender = transport._background_sender()
    pid = os.fork()
    if pid == 0:  # the child: the parent's sender has no thread here
        ok = transport._sender is None and transport.flush_background_sender(1)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert transport._sender is parent_sender
