"""The per-socket outbound path (events/gateway/writer.py) without a server: a fake ASGI send
that can be held shut, to build a queue behind a suspended send and watch it drain."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson

from events.gateway.writer import CLOSE_SLOW_CONSUMER, SocketWriter
from events.record import LoggedEvent


class _Hub:
    def __init__(self) -> None:
        self.delivered = 0
        self.coalesced = 0
        self.dropped = 0


class _Socket(SocketWriter):
    """A SocketWriter host: records the frames the 'server' took and the close."""

    __slots__ = ("base_send", "closed_with", "frames", "hub", "open")

    def __init__(self, queue_limit: int = 100, bytes_limit: int = 1 << 20) -> None:
        self.hub = _Hub()
        self.frames: list[str] = []
        self.closed_with: int | None = None
        self.open = asyncio.Event()
        self.open.set()
        self.base_send = self._server_send
        self._start_writer(queue_limit, bytes_limit)

    async def _server_send(self, message: dict[str, Any]) -> None:
        if not self.open.is_set():
            await self.open.wait()  # back-pressure: the send suspends
        self.frames.append(message["text"])

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        self.closed_with = int(code) if code is not None else None

    def names(self) -> list[str]:
        return [orjson.loads(f).get("payload", {}).get("name", f) for f in self.frames]

    async def drained(self) -> None:
        self.open.set()
        for _ in range(100):
            if self._writer is None:
                return
            await asyncio.sleep(0)
        raise AssertionError("the writer did not finish")


_ids = iter(range(1, 1_000_000))


def _event(name: str, *, stage: str = "", kind: str = "run.created") -> LoggedEvent:
    event_id = next(_ids)
    payload = {"name": name}
    frame = orjson.dumps({"id": event_id, "type": kind, "payload": payload}).decode()
    return LoggedEvent(
        id=event_id,
        prev_id=event_id - 1,
        type=kind,
        project_id="p",
        run_id="r",
        timestamp="t",
        payload=payload,
        frame=frame,
        stage_id=stage,
    )


def _progress(name: str, stage: str) -> LoggedEvent:
    return _event(name, stage=stage, kind="stage.progress")


async def _stalled(sock: _Socket) -> None:
    """The next send suspends, so what follows it queues."""
    sock.open.clear()
    sock._enqueue(_event("stuck"))
    assert sock._writer is not None


async def test_it_sends_at_once_without_a_task_when_nothing_is_queued() -> None:
    sock = _Socket()
    sock._enqueue(_event("a"))
    sock._push('{"type":"pong"}')
    assert sock.names() == ["a", '{"type":"pong"}']
    assert sock._writer is None and sock._queue is None
    assert sock.message_count == 1 and sock.hub.delivered == 1


async def test_it_keeps_order_behind_a_suspended_send() -> None:
    sock = _Socket()
    await _stalled(sock)
    sock._enqueue(_event("a"))
    sock._push('{"type":"pong"}')
    sock._enqueue(_event("b"))
    await sock.drained()
    assert sock.names() == ["stuck", "a", '{"type":"pong"}', "b"]
    assert sock.message_count == 3 and sock._queue is None


async def test_it_never_sends_an_event_twice() -> None:
    sock = _Socket()
    event = _event("once")
    sock._enqueue(event)
    sock._enqueue(event)
    assert sock.names() == ["once"]


async def test_a_newer_progress_supersedes_a_queued_one_for_the_same_stage() -> None:
    sock = _Socket()
    await _stalled(sock)
    for name, stage in (("s1-10%", "s1"), ("s2-10%", "s2"), ("s1-50%", "s1"), ("s1-90%", "s1")):
        sock._enqueue(_progress(name, stage))
    assert sock._queued == 2
    await sock.drained()
    assert sock.names() == ["stuck", "s2-10%", "s1-90%"]
    assert sock.hub.coalesced == 2
    assert sock._queued == 0 and not sock._pending_progress


async def test_a_progress_already_sent_is_not_superseded() -> None:
    sock = _Socket()
    await _stalled(sock)
    sock._enqueue(_progress("s1-10%", "s1"))
    await sock.drained()
    sock.open.clear()
    sock._enqueue(_event("stuck again"))
    sock._enqueue(_progress("s1-50%", "s1"))
    await sock.drained()
    assert sock.names() == ["stuck", "s1-10%", "stuck again", "s1-50%"]
    assert sock.hub.coalesced == 0


async def test_replayed_progress_is_never_coalesced() -> None:
    sock = _Socket()
    await _stalled(sock)
    for name in ("10%", "50%"):
        sock._enqueue(_progress(name, "s1"), replayed=True)
    sock._enqueue(_progress("90%", "s1"))  # live: nothing live to supersede
    await sock.drained()
    assert sock.names() == ["stuck", "10%", "50%", "90%"]
    assert sock.hub.coalesced == 0


async def test_it_closes_a_slow_consumer_when_live_events_overflow_the_queue() -> None:
    sock = _Socket(queue_limit=2)
    await _stalled(sock)
    sock._enqueue(_event("a"))
    sock._enqueue(_event("b"))
    assert sock.closed_with is None
    sock._enqueue(_event("c"))  # the third queued live event: over the limit of 2
    await asyncio.sleep(0)
    assert sock.closed_with == CLOSE_SLOW_CONSUMER
    assert sock.hub.dropped == 3


async def test_replayed_events_do_not_count_against_the_queue_limit() -> None:
    sock = _Socket(queue_limit=2)
    await _stalled(sock)
    for i in range(5):
        sock._enqueue(_event(f"old{i}"), replayed=True)
    sock._enqueue(_event("live1"))
    sock._enqueue(_event("live2"))
    await sock.drained()
    assert sock.closed_with is None
    assert sock.names() == ["stuck", *(f"old{i}" for i in range(5)), "live1", "live2"]


def _sized(name: str, size: int, *, kind: str = "run.created", stage: str = "") -> LoggedEvent:
    """An event whose frame is `size` characters long."""
    event = _event(name, kind=kind, stage=stage)
    padding = size - len(event.frame)
    assert padding >= 0
    event.frame = event.frame[:-1] + " " * padding + "}"
    assert len(event.frame) == size
    return event


async def test_it_closes_a_slow_consumer_when_queued_live_bytes_exceed_the_byte_bound() -> None:
    sock = _Socket(queue_limit=1000, bytes_limit=3000)
    await _stalled(sock)
    for i in range(3):
        sock._enqueue(_sized(f"a{i}", 1000))  # 3,000 bytes queued: at the bound, not over it
    await asyncio.sleep(0)
    assert sock.closed_with is None
    sock._enqueue(_sized("over", 100))
    await asyncio.sleep(0)
    assert sock.closed_with == CLOSE_SLOW_CONSUMER
    assert sock.hub.dropped == 4


async def test_a_few_large_frames_close_a_slow_consumer_long_before_the_frame_limit() -> None:
    sock = _Socket(queue_limit=1000, bytes_limit=64 * 1024)
    await _stalled(sock)
    queued = 0
    while sock.closed_with is None and queued < 1000:
        sock._enqueue(_sized(f"big{queued}", 16 * 1024))
        queued += 1
        await asyncio.sleep(0)
    assert sock.closed_with == CLOSE_SLOW_CONSUMER
    assert queued == 5  # the fifth 16 KiB frame takes the queue past 64 KiB


async def test_queued_bytes_are_released_as_the_writer_sends_them() -> None:
    sock = _Socket(queue_limit=1000, bytes_limit=2500)
    for round_ in range(3):  # 3 × 2,000 bytes pass through a 2,500-byte bound, 2,000 at a time
        await _stalled(sock)
        sock._enqueue(_sized(f"x{round_}", 1000))
        sock._enqueue(_sized(f"y{round_}", 1000))
        await sock.drained()
        assert sock._queued_bytes == 0
    assert sock.closed_with is None
    assert len(sock.frames) == 9


async def test_a_superseded_progress_frees_its_place_and_its_bytes_at_once() -> None:
    sock = _Socket(queue_limit=1000, bytes_limit=2500)
    await _stalled(sock)
    first = _sized("p1", 1000, kind="stage.progress", stage="s")
    sock._enqueue(first)
    sock._enqueue(_sized("p2", 1200, kind="stage.progress", stage="s"))
    assert sock._queued_bytes == 1200  # only the live entry counts
    assert sock._queue is not None and len(sock._queue) == sock._queued == 1
    assert all(item is not first for _, item in sock._queue)  # the older frame is let go
    await sock.drained()
    assert sock._queued_bytes == 0
    assert sock.names() == ["stuck", "p2"]


async def test_a_burst_on_one_stage_never_fills_the_queue_whatever_its_size() -> None:
    # 20,000 progress reports behind one suspended send, with bounds two frames would break:
    # the queue holds one entry throughout and the socket stays open.
    sock = _Socket(queue_limit=2, bytes_limit=1500)
    await _stalled(sock)
    for i in range(20_000):
        sock._enqueue(_sized(f"{i}", 1000, kind="stage.progress", stage="s"))
        assert sock._queued == 1 and sock._queued_bytes == 1000
    await sock.drained()
    assert sock.closed_with is None
    assert sock.names() == ["stuck", "19999"]
    assert sock.hub.coalesced == 19_999


async def test_a_newer_progress_goes_behind_events_queued_after_the_older_one() -> None:
    # Ids leave in increasing order: the stage's newer progress cannot overtake the lifecycle
    # event queued after its older one (a client resuming from its last id would skip it).
    sock = _Socket()
    await _stalled(sock)
    sock._enqueue(_progress("s1-10%", "s1"))
    sock._enqueue(_event("stage.completed s2", kind="stage.completed"))
    sock._enqueue(_progress("s2-10%", "s2"))
    sock._enqueue(_progress("s1-50%", "s1"))
    sock._enqueue(_progress("s1-90%", "s1"))  # now the last entry: replaced in place
    assert sock._queue is not None and len(sock._queue) == sock._queued == 3
    await sock.drained()
    assert sock.names() == ["stuck", "stage.completed s2", "s2-10%", "s1-90%"]
    ids = [orjson.loads(f)["id"] for f in sock.frames]
    assert ids == sorted(ids)


async def test_lifecycle_events_are_never_coalesced_and_still_meet_the_limit() -> None:
    sock = _Socket(queue_limit=3)
    await _stalled(sock)
    for i in range(3):
        sock._enqueue(_progress(f"p{i}", "s"))
        sock._enqueue(_event(f"artifact {i}", kind="artifact.created"))
    await asyncio.sleep(0)
    assert sock.closed_with == CLOSE_SLOW_CONSUMER  # the third artifact: 1 progress + 3 over 3


async def test_a_progress_behind_a_queued_close_does_not_move_past_it() -> None:
    sock = _Socket()
    await _stalled(sock)
    sock._enqueue(_progress("s1-10%", "s1"))
    sock._close_after_flush(1001)
    sock._enqueue(_progress("s1-50%", "s1"))
    await sock.drained()
    assert sock.names() == ["stuck", "s1-10%"]
    assert sock.closed_with == 1001


async def test_a_coalesced_stream_resumes_exactly_from_its_last_id() -> None:
    # Random interleavings of stalls, lifecycle events and progress on a few stages: what a
    # socket received increases by id, misses no lifecycle event and no stage's last progress,
    # and everything it missed is progress of a stage it later got newer progress of, so a
    # resume from any id it received loses nothing the protocol promises.
    rng = random.Random(20)
    for _ in range(30):
        sock = _Socket(queue_limit=10_000, bytes_limit=1 << 30)
        published: list[LoggedEvent] = []
        for _ in range(300):
            roll = rng.random()
            if roll < 0.1:
                sock.open.clear()  # the client stops reading for a while
            elif roll < 0.2:
                await sock.drained()
            if rng.random() < 0.15:
                event = _event(f"life{len(published)}", kind="stage.completed")
            else:
                event = _progress(f"p{len(published)}", f"s{rng.randrange(4)}")
            published.append(event)
            sock._enqueue(event)
        await sock.drained()
        got = [orjson.loads(f)["id"] for f in sock.frames]
        assert got == sorted(set(got))
        received = set(got)
        for position, event in enumerate(published):
            if event.id in received:
                continue
            assert event.type == "stage.progress", event
            newer = [
                e for e in published[position + 1 :] if e.stage_id == event.stage_id
            ]  # a newer progress of the same stage reached the client, later in its stream
            assert any(e.id in received for e in newer), event


async def test_frames_sent_at_once_are_not_counted() -> None:
    sock = _Socket(queue_limit=1000, bytes_limit=1024)
    for i in range(10):
        sock._enqueue(_sized(f"now{i}", 1000))
    assert sock._queued_bytes == 0
    assert sock._queue is None
    assert sock.closed_with is None
    assert len(sock.frames) == 10


async def test_replayed_events_do_not_count_against_the_byte_bound() -> None:
    sock = _Socket(queue_limit=1000, bytes_limit=2000)
    await _stalled(sock)
    for i in range(5):
        sock._enqueue(_sized(f"old{i}", 1000), replayed=True)
    sock._enqueue(_sized("live", 1000))
    await sock.drained()
    assert sock.closed_with is None
    assert sock.names() == ["stuck", *(f"old{i}" for i in range(5)), "live"]


async def test_it_closes_after_flushing_what_was_queued() -> None:
    sock = _Socket()
    await _stalled(sock)
    sock._push('{"type":"error"}')
    sock._close_after_flush(1001)
    sock._enqueue(_event("after the close"))  # queued behind it: never sent
    await sock.drained()
    assert sock.names() == ["stuck", '{"type":"error"}']
    assert sock.closed_with == 1001


async def test_a_send_the_server_refuses_stops_the_socket_quietly() -> None:
    sock = _Socket()

    async def refuse(message: dict[str, Any]) -> None:
        raise ConnectionResetError

    sock.base_send = refuse
    sock._enqueue(_event("a"))
    assert sock._closing and sock.message_count == 0
