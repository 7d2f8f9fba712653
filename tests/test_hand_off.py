"""The hand-off: committed events carried from the committing threads onto a hub's loop and
through its sender to the layer, in commit order, batched per loop turn, nothing lost when
the hub stops."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from events.gateway import transport
from events.gateway.transport import HandOff, group, hand_off
from events.record import LoggedEvent
from tests.transport_helpers import (
    LoopThread,
    Sink,
    chain,
    hand_off_from_a_thread,
    started_hub,
    unpack,
    wait_for,
    wait_until,
)


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.stop()


def ticking_slowly(loop_thread: LoopThread, monkeypatch: Any) -> tuple[Sink, HandOff]:
    """A hand-off whose first event has gone out and whose next tick is 30 s away: what is
    submitted now stays buffered."""
    monkeypatch.setattr(transport, "HAND_OFF_INTERVAL", 30)
    sink = Sink()
    handoff = HandOff(loop_thread.loop, sink)
    handoff.submit({"seq": 0})
    assert wait_until(lambda: len(sink.items) == 1)
    return sink, handoff


def test_many_threads_lose_nothing_and_keep_the_submission_order(
    loop_thread: LoopThread,
) -> None:
    sink = Sink()
    handoff = HandOff(loop_thread.loop, sink)
    seq = itertools.count()
    order = threading.Lock()  # submit order = seq order, as commits are ordered by the log lock
    per_thread = 3000

    def publisher() -> None:
        for _ in range(per_thread):
            with order:
                assert handoff.submit({"seq": next(seq)})

    threads = [threading.Thread(target=publisher) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wait_until(lambda: len(sink.items) == 8 * per_thread)
    assert sink.seqs == list(range(8 * per_thread))
    assert sink.threads == {loop_thread.thread.ident}  # the sink only ever runs on the loop
    assert sink.batches < 8 * per_thread  # batched, not one loop callback per event


def test_a_burst_wakes_the_loop_once(loop_thread: LoopThread) -> None:
    sink = Sink()
    handoff = HandOff(loop_thread.loop, sink)
    wakes = []
    real = loop_thread.loop.call_soon_threadsafe

    def counting(*args: Any, **kwargs: Any) -> Any:
        wakes.append(args[0])
        return real(*args, **kwargs)

    loop_thread.loop.call_soon_threadsafe = counting  # type: ignore[method-assign, assignment]
    busy = threading.Event()
    loop_thread.loop.call_soon_threadsafe(busy.wait, 5)  # the loop is busy elsewhere
    for i in range(500):
        handoff.submit({"seq": i})
    busy.set()
    assert wait_until(lambda: len(sink.items) == 500)
    assert sink.seqs == list(range(500))
    assert len(wakes) == 2  # ours (busy.wait) and one for the whole burst


def test_the_first_event_goes_at_once_later_ones_within_the_interval_then_it_idles(
    loop_thread: LoopThread, monkeypatch: Any
) -> None:
    monkeypatch.setattr(transport, "HAND_OFF_INTERVAL", 1.0)
    sink = Sink()
    handoff = HandOff(loop_thread.loop, sink)
    t0 = time.monotonic()
    handoff.submit({"seq": 0})
    assert wait_until(lambda: len(sink.items) == 1, 0.5)  # not held for the interval
    handoff.submit({"seq": 1})
    handoff.submit({"seq": 2})
    assert wait_until(lambda: len(sink.items) == 3, 5.0)
    assert time.monotonic() - t0 >= 0.9  # collected for an interval, in one batch
    assert sink.batches == 2
    # An interval with nothing: the timer stops and the next event wakes the loop again.
    assert wait_until(lambda: loop_thread.call(lambda: handoff._timer is None), 5.0)
    assert not handoff._armed
    t1 = time.monotonic()
    handoff.submit({"seq": 3})
    assert wait_until(lambda: len(sink.items) == 4, 0.5)
    assert time.monotonic() - t1 < 0.5
    assert sink.seqs == [0, 1, 2, 3]


def test_a_submit_on_the_loop_thread_goes_out_behind_what_is_buffered(
    loop_thread: LoopThread, monkeypatch: Any
) -> None:
    sink, handoff = ticking_slowly(loop_thread, monkeypatch)
    handoff.submit({"seq": 1})
    handoff.submit({"seq": 2})  # buffered for 30 s
    loop_thread.call(lambda: handoff.submit({"seq": 3}))  # on_commit inside async code
    assert sink.seqs == [0, 1, 2, 3]  # synchronously, in order


def test_close_hands_back_what_is_buffered_and_refuses_more(
    loop_thread: LoopThread, monkeypatch: Any
) -> None:
    _sink, handoff = ticking_slowly(loop_thread, monkeypatch)
    for i in range(1, 4):
        handoff.submit({"seq": i})  # the next tick is 30 s away
    left = loop_thread.call(handoff.close)
    assert [m["seq"] for m in left] == [1, 2, 3]
    assert handoff.submit({"seq": 4}) is False  # the caller sends it another way
    assert loop_thread.call(lambda: handoff._timer) is None


def test_events_buffered_for_a_loop_that_closed_are_sent_elsewhere(monkeypatch: Any) -> None:
    elsewhere: list[dict[str, Any]] = []
    monkeypatch.setattr(transport, "_route", elsewhere.append)
    loop = asyncio.new_event_loop()
    loop.close()
    handoff = HandOff(loop, Sink())
    assert handoff.submit({"seq": 0}) is True
    assert elsewhere == [{"seq": 0}]
    assert handoff.submit({"seq": 1}) is False


# --- through a hub's sender to the layer ----------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("hubs_stopped")
async def test_hand_offs_from_many_threads_reach_the_layer_in_commit_order() -> None:
    hub, sub = await started_hub()
    sent: list[int] = []
    real_send = hub.layer.group_send

    async def recording_send(group: str, message: dict[str, Any]) -> None:
        sent.extend(m["id"] for m in unpack(message))
        await real_send(group, message)

    hub.layer.group_send = recording_send
    arrived: list[int] = []
    real_accept = hub.accept

    def recording_accept(event: LoggedEvent) -> None:
        arrived.append(event.id)
        real_accept(event)

    hub.accept = recording_accept  # type: ignore[method-assign]
    try:
        events = iter(chain((hub.last_id or 0) + 1, 6 * 1500))
        commit_order = threading.Lock()

        def committer() -> None:
            for _ in range(1500):
                with commit_order:  # the log lock: on_commit runs in id order
                    hand_off(next(events))

        def run_committers() -> None:
            threads = [threading.Thread(target=committer) for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        await asyncio.to_thread(run_committers)
        await wait_for(lambda: len(sub.ids) >= 9000, 10)
    finally:
        hub.layer.group_send = real_send
        del hub.accept
    first = sub.ids[0]
    assert sent == list(range(first, first + 9000))  # the layer saw commit order
    assert arrived == sent  # and delivered it in that order: no reordering to repair
    assert sub.ids == sent
    assert hub.gap_repaired == 0


@pytest.mark.django_db(transaction=True)
async def test_events_still_buffered_when_the_hub_stops_are_published(monkeypatch: Any) -> None:
    monkeypatch.setattr(transport, "HAND_OFF_INTERVAL", 30)
    hub, _sub = await started_hub()
    listener = await hub.layer.new_channel("listener.")
    await hub.layer.group_add(group(0), listener)
    try:
        events = chain((hub.last_id or 0) + 1, 5)
        # The first goes at once, the other four wait for a tick that is 30 s away.
        await hand_off_from_a_thread(events)
        await hub.stop()
        received: list[int] = []
        while len(received) < 5:
            received.extend(m["id"] for m in unpack(await hub.layer.receive(listener)))
        assert received == [e.id for e in events]
        # Stopped: a late hand-off is not swallowed by the dead hub's buffer.
        assert hub.sender.submit(events[0].to_message()) is False
    finally:
        await hub.layer.group_discard(group(0), listener)
        await hub.stop()


@pytest.mark.django_db(transaction=True)
async def test_a_send_interrupted_by_stop_goes_again_and_the_rest_follow() -> None:
    hub, _sub = await started_hub()
    sent: list[int] = []
    attempts: list[int] = []

    one_at_a_time = asyncio.Lock()  # as channels_redis publishes: one at a time per shard

    async def hanging_once(group: str, message: dict[str, Any]) -> None:
        async with one_at_a_time:
            ids = [m["id"] for m in unpack(message)]
            attempts.append(ids[0])
            if len(attempts) == 1:
                await asyncio.sleep(30)  # a stuck layer: cancelled by stop()
            sent.extend(ids)

    hub.layer.group_send = hanging_once
    try:
        events = chain((hub.last_id or 0) + 1, 4)
        await hand_off_from_a_thread(events)
        assert sent == []
        await hub.stop()
    finally:
        del hub.layer.group_send  # the instance attribute: back to the layer's method
    assert sent == [e.id for e in events]
    assert attempts[0] == events[0].id
