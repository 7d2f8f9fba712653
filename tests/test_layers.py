"""The in-memory channel layer subclass (gateway/layers.py): upstream's semantics, fewer costs."""

from __future__ import annotations

from typing import Any

import pytest
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from django.conf import settings

from events import metrics
from events.gateway.layers import InMemoryChannelLayer


def full_count() -> float:
    return float(metrics.LAYER_ERRORS.labels(op="channel_full")._value.get())


def test_it_is_the_default_layer_without_redis() -> None:
    if settings.REDIS_URL:
        pytest.skip("REDIS_URL set: the Redis layer is the default")
    assert isinstance(get_channel_layer(), InMemoryChannelLayer)


async def test_group_send_reaches_every_member_once_in_order() -> None:
    layer = InMemoryChannelLayer(capacity=100)
    a, b = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("g", a)
    await layer.group_add("g", b)
    for i in range(5):
        await layer.group_send("g", {"type": "rf.event", "id": i})
    for channel in (a, b):
        got = [(await layer.receive(channel))["id"] for _ in range(5)]
        assert got == [0, 1, 2, 3, 4]
    assert layer.channels == {}  # nothing left over: exactly once


async def test_a_full_member_is_counted_and_the_others_still_get_it() -> None:
    layer = InMemoryChannelLayer(capacity=1)
    full, free = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("g", full)
    await layer.group_add("g", free)
    await layer.send(full, {"type": "x", "n": 0})  # fills it
    before = full_count()
    await layer.group_send("g", {"type": "x", "n": 1})
    assert full_count() == before + 1
    assert (await layer.receive(free))["n"] == 1
    assert (await layer.receive(full))["n"] == 0
    await layer.send(free, {"type": "x"})
    with pytest.raises(ChannelFull):  # a direct send to a full channel still raises
        await layer.send(free, {"type": "x"})


async def test_messages_are_copies_flat_or_nested() -> None:
    layer = InMemoryChannelLayer()
    channel = await layer.new_channel()
    flat: dict[str, Any] = {"type": "x", "id": 1, "frame": "{}", "t": 1.5, "prev": None}
    nested: dict[str, Any] = {"type": "x", "items": [1, 2], "meta": {"k": "v"}}
    await layer.send(channel, flat)
    await layer.send(channel, nested)
    flat["id"] = 99
    nested["items"].append(3)
    nested["meta"]["k"] = "changed"
    assert await layer.receive(channel) == {
        "type": "x",
        "id": 1,
        "frame": "{}",
        "t": 1.5,
        "prev": None,
    }
    assert await layer.receive(channel) == {"type": "x", "items": [1, 2], "meta": {"k": "v"}}


async def test_a_batch_message_is_copied_level_by_level() -> None:
    layer = InMemoryChannelLayer()
    channel = await layer.new_channel()
    events = [{"type": "rf.event", "id": i, "frame": "{}"} for i in range(3)]
    batch: dict[str, Any] = {"type": "rf.batch", "events": events}
    await layer.send(channel, batch)
    events[0]["id"] = 99
    events.append({"type": "rf.event", "id": 3})
    got = await layer.receive(channel)
    assert got == {
        "type": "rf.batch",
        "events": [{"type": "rf.event", "id": i, "frame": "{}"} for i in range(3)],
    }
    assert got["events"] is not events


def test_upstream_is_still_the_code_the_subclass_copies() -> None:
    """layers.py rewrites channels 4.3's send/group_send; if upstream changes them (or the
    internals they use), re-read it before moving layers.WRITTEN_FOR."""
    import inspect

    from channels.layers import InMemoryChannelLayer as Upstream

    send = inspect.getsource(Upstream.send)
    assert "self.channels.setdefault(" in send
    assert "asyncio.Queue(maxsize=self.get_capacity(channel))" in send
    assert "queue.put_nowait((time.time() + self.expiry, deepcopy(message)))" in send
    assert "raise ChannelFull(channel)" in send
    group_send = inspect.getsource(Upstream.group_send)
    assert "self._clean_expired()" in group_send
    assert "for channel in self.groups[group].keys():" in group_send
    assert "except ChannelFull:\n                pass" in group_send
    layer = Upstream()
    assert isinstance(layer.channels, dict) and isinstance(layer.groups, dict)
    assert layer.expiry == 60
