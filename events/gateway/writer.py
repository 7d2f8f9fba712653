"""The per-socket outbound path: send at once, or queue behind a send that suspended.

A socket with nothing queued hands each frame to the server at once, without a task
(`_send_now`). Only when the server's `send()` suspends (back-pressure: the client's TCP
window is full) does a writer task exist: it finishes the suspended send (`_SuspendedSend`)
and then drains a bounded queue, so a slow client only ever delays itself. Rules that must
stay true:

- Frames leave in the order they were queued: events, control replies and the close.
- Each socket's event stream is strictly increasing by id (no duplicate, whatever offers it).
- Live events queued at once are held to WS_SEND_QUEUE frames and WS_SEND_BUFFER_BYTES bytes of
  frames (over either: close 4008, slow consumer); replayed events are not (a resume is bounded
  by WS_RESUME_MAX_EVENTS instead). Bytes are counted only when a frame queues: the common
  case (sent at once) does no accounting. What the transport and the kernel hold beyond the
  queue is bounded by the server adapter (servers/uvicorn_send_buffer.py, docs/operations.md).
- A queued `stage.progress` event is superseded by a newer one for the same stage (the
  client is behind: only the latest progress matters), and leaves the queue at once, with its
  bytes: the queue holds at most one live progress per stage besides the other events, whatever
  the publish rate (`_supersede`). The newer one takes the older one's place when that was the
  last entry (a burst on one stage), else it goes to the end: ids still leave in increasing
  order, so a client's last id is a safe resume point and what it never got is only older
  progress of a stage it has newer progress of (docs/protocol.md). A frame already handed to
  the server cannot be recalled. Replayed events and every other type are never coalesced.
- An idle socket holds no task and no queue: memory per socket decides how many sockets a
  process holds (tests/test_ws_memory.py).

`SocketWriter` is a base class of the consumer, not an object of its own: the fan-out path
(`offer` → `_enqueue` → `_send_now`) runs per socket per event, and a separate object would
cost an attribute look-up and a call there, and ~100 bytes per socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import orjson

from events import metrics
from events.record import LoggedEvent
from events.schemas import iso_timestamp

if TYPE_CHECKING:
    from .hub import Hub

# What a queue entry holds: `(kind, item)`. A tuple, so queueing allocates one small object.
LIVE = 0  # item: a LoggedEvent, counted against WS_SEND_QUEUE
REPLAYED = 1  # item: a LoggedEvent from a resume, not counted against WS_SEND_QUEUE
CONTROL = 2  # item: an encoded reply frame (str)
CLOSE = 3  # item: the close code (int), sent once everything before it has been

Entry = tuple[int, Any]

CLOSE_SLOW_CONSUMER = 4008  # the client reads too slowly: its live queue overflowed


def control_frame(msg_type: str, payload: dict[str, Any]) -> str:
    """A server message that is not an event (a reply, an error, a notice), stamped now."""
    return orjson.dumps(
        {"type": msg_type, "timestamp": iso_timestamp(), "payload": payload}
    ).decode()


class SocketWriter:
    """One socket's outbound side: frames to the server, the send queue, and the close.

    The host class (the consumer) sets `base_send` (the server's ASGI send) and `hub` (whose
    counters this updates), and provides `close()` (channels' websocket close).
    """

    __slots__ = (
        "_bytes_limit",
        "_close_code",
        "_closing",
        "_last_queued_id",
        "_pending_progress",
        "_queue",
        "_queue_limit",
        "_queued",
        "_queued_bytes",
        "_replay_queued",
        "_writer",
        "base_send",  # the server's ASGI send (set by the host: channels' __call__)
        "hub",  # the socket's hub, whose delivery counters this updates (set by the host)
        "last_sent_id",
        "message_count",
    )

    base_send: Any
    hub: Hub

    if TYPE_CHECKING:  # provided by the host class

        async def close(
            self, code: int | bool | None = None, reason: str | None = None
        ) -> None: ...

    def _start_writer(self, queue_limit: int, bytes_limit: int) -> None:
        self._closing = False
        self._close_code: int | None = None
        self.message_count = 0
        self.last_sent_id = 0
        self._last_queued_id = 0
        # Read once by the caller: Django's settings is a LazyObject, and _enqueue runs once
        # per delivery.
        self._queue_limit = queue_limit
        self._bytes_limit = bytes_limit
        # Built on first use: frames queue only behind a send that suspended (back-pressure),
        # so most sockets never need one: memory per idle socket decides how many a process holds.
        self._queue: deque[Entry] | None = None
        self._queued = 0  # entries in the queue
        self._replay_queued = 0  # of _queued: replayed events (not held to WS_SEND_QUEUE)
        # Characters of the LIVE frames in the queue (a superseded progress is no longer in
        # it). orjson leaves non-ASCII unescaped, so a character may be up to 4 bytes on the
        # wire; the frames (ids, names, numbers) are nearly all ASCII.
        self._queued_bytes = 0
        # stage id → its queued LIVE stage.progress entry, exactly while that entry is in the
        # queue. Built with the queue's first progress (an idle socket holds none).
        self._pending_progress: dict[str, Entry] | None = None
        self._writer: asyncio.Task[None] | None = None

    # --- queueing ------------------------------------------------------------------------

    def _enqueue(
        self,
        event: LoggedEvent,
        *,
        replayed: bool = False,
        message: dict[str, Any] | None = None,
    ) -> None:
        """Send or queue one event. `replayed` (a resume from the log): never coalesced, since
        resume promises every event, and not counted against WS_SEND_QUEUE — a replay is bounded
        by WS_RESUME_MAX_EVENTS instead, and a client catching up on a slow link must not be
        closed as a slow consumer by its own backlog. Live events queued behind a replay still
        meet the limit on their own. `message`: the event's ASGI send message, if the caller
        built it once for every socket."""
        if event.id <= self._last_queued_id:
            return  # already queued or sent: the per-socket stream is strictly increasing
        self._last_queued_id = event.id
        if self._writer is None and not self._queue:
            # Nothing queued, no writer: hand the frame to the server now, with no task.
            if self._send_now(message or {"type": "websocket.send", "text": event.frame}, event):
                self._sent(event)
            return
        entry: Entry
        if replayed:
            entry = (REPLAYED, event)
            self._replay_queued += 1
        else:
            entry = (LIVE, event)
            if event.type == "stage.progress":
                pending = self._pending_progress
                older = pending.get(event.stage_id) if pending is not None else None
                if older is not None:
                    # The client is behind on this stage: the newer progress supersedes the
                    # queued one, which leaves the queue now, with its bytes.
                    self._supersede(older, entry)
                    return
            self._queued_bytes += len(event.frame)
            if (
                self._queued - self._replay_queued >= self._queue_limit
                or self._queued_bytes > self._bytes_limit
            ):
                self._overflowed(1)
                return
            if event.type == "stage.progress":
                if self._pending_progress is None:
                    self._pending_progress = {}
                self._pending_progress[event.stage_id] = entry
        self._append(entry)

    def _supersede(self, older: Entry, entry: Entry) -> None:
        """Put `entry` (a live stage.progress) in the queue instead of `older`, the same
        stage's queued one: in its place when it is the last entry (nothing queued after it),
        else at the end, so that ids still leave in increasing order. O(entries queued after
        `older`): none in a burst on one stage, one per other busy stage otherwise."""
        queue = self._queue
        assert queue is not None and self._pending_progress is not None
        event: LoggedEvent = entry[1]
        if queue[-1] is older:
            queue[-1] = entry
        else:
            for index in range(len(queue) - 1, -1, -1):
                queued = queue[index]
                if queued is older:
                    del queue[index]
                    break
                if queued[0] == CLOSE:
                    return  # behind a close: never sent; `older` goes out before the close
            queue.append(entry)
        self._pending_progress[event.stage_id] = entry
        self.hub.coalesced += 1
        self._queued_bytes += len(event.frame) - len(older[1].frame)
        if self._queued_bytes > self._bytes_limit:
            self._overflowed(0)

    def _overflowed(self, refused: int) -> None:
        """The live queue is over a bound: drop it (and `refused` events not queued), 4008."""
        dropped = self._queued + refused
        self.hub.dropped += dropped
        metrics.DROPPED.labels(reason="slow_consumer").inc(dropped)
        metrics.SLOW_CONSUMER_CLOSES.inc()
        self._close_soon(CLOSE_SLOW_CONSUMER)

    def _push(self, frame: str) -> None:
        """Send a control frame, or queue it behind the frames already queued (order kept)."""
        if self._closing:
            return
        if self._writer is None and not self._queue:
            self._send_now({"type": "websocket.send", "text": frame})
            return
        self._append((CONTROL, frame))

    def _close_after_flush(self, code: int) -> None:
        """Close once the frames already queued (the reason, say) have been sent."""
        self._append((CLOSE, code))

    def _append(self, entry: Entry) -> None:
        if self._queue is None:
            self._queue = deque()
        self._queue.append(entry)
        self._queued += 1
        # The writer exists only while there is something to send: an idle socket holds no
        # task (memory per socket is the cost that decides how many sockets a process holds).
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    # --- sending -------------------------------------------------------------------------

    def _send_now(self, message: dict[str, Any], event: LoggedEvent | None = None) -> bool:
        """Send one frame without a task: the common case, where the server takes it at once.

        An ASGI `send` is a coroutine, but uvicorn's and daphne's only suspend under
        back-pressure (the client's TCP window is full). So it is driven by hand: if it
        finishes in one step, the frame is on the transport and no task was made — at fan-out
        rates a task per socket per event costs more than the frame itself.
        If it suspends, a writer task takes the half-sent coroutine over (`_SuspendedSend`)
        and everything after it queues behind, so order is kept and a slow client meets the
        queue limit as before. The coroutine runs in the caller's task and context (the
        hub's): nothing in a server's `send` depends on either. True: sent; False: refused,
        or still going (the writer counts `event` as sent once it is).
        """
        coro = self.base_send(message)
        try:
            blocked_on = coro.send(None)
        except StopIteration:
            return True
        except Exception:
            # The server refused the frame (the client has gone): its disconnect follows
            # through receive; stop offering this socket anything meanwhile.
            self._closing = True
            return False
        self._writer = asyncio.get_running_loop().create_task(
            self._write_loop(_SuspendedSend(coro, blocked_on), event)
        )
        return False

    def _sent(self, event: LoggedEvent) -> None:
        self.last_sent_id = event.id
        self.message_count += 1
        hub = self.hub
        hub.delivered += 1
        if not hub.delivered & 15 and event.committed_at:
            # Sampled: a histogram observation per frame costs more than the frame.
            metrics.PUBLISH_TO_SEND.observe(max(0.0, time.time() - event.committed_at))

    async def _write_loop(
        self, suspended: _SuspendedSend | None = None, suspended_event: LoggedEvent | None = None
    ) -> None:
        send = self.base_send
        try:
            if suspended is not None:
                await suspended
                if suspended_event is not None:
                    self._sent(suspended_event)
            # No await between the emptiness check and leaving: nothing can slip in unseen.
            while queue := self._queue:
                entry = queue.popleft()
                kind, item = entry
                if kind == LIVE:
                    self._queued_bytes -= len(item.frame)
                    pending = self._pending_progress
                    if pending is not None and pending.get(item.stage_id) is entry:
                        del pending[item.stage_id]  # sent from here on: no longer replaceable
                    self._queued -= 1
                    await send({"type": "websocket.send", "text": item.frame})
                    self._sent(item)
                elif kind == REPLAYED:
                    self._queued -= 1
                    self._replay_queued -= 1
                    await send({"type": "websocket.send", "text": item.frame})
                    self._sent(item)
                elif kind == CONTROL:
                    self._queued -= 1
                    await send({"type": "websocket.send", "text": item})
                else:  # CLOSE
                    self._queued -= 1
                    await self._close(item)
                    return
        except Exception:
            # The server refused a frame (the client has gone), as in _send_now: its
            # disconnect follows through receive. Not re-raised into a task nobody awaits.
            self._closing = True
        finally:
            self._writer = None
            if not self._queue:
                # Drained: back to sending at once, and to no queue.
                self._queue = None
                self._pending_progress = None

    # --- closing -------------------------------------------------------------------------

    async def _close(self, code: int, reason: str | None = None) -> None:
        """Close now; whatever is still queued is dropped."""
        if self._close_code is None:
            self._close_code = code
        self._closing = True
        self._queue = None
        self._queued = 0
        self._replay_queued = 0
        self._queued_bytes = 0
        self._pending_progress = None
        with contextlib.suppress(Exception):
            await self.close(code=code, reason=reason)

    def _close_soon(self, code: int) -> None:
        """Close from code that cannot await (a timer, the fan-out): in a task of its own."""
        if not self._closing:
            self._closing = True
            self._close_code = code
            asyncio.get_running_loop().create_task(self._close(code))

    def _stop_writer(self) -> None:
        """The socket is gone: stop the writer task, if one is running."""
        self._closing = True
        if self._writer is not None:
            self._writer.cancel()


class _SuspendedSend:
    """Awaiting it carries on a send coroutine that `_send_now` started by hand and that
    suspended (the server is waiting for the client to read).

    `blocked_on` is what the coroutine yielded to its (absent) task: the future it waits on.
    Yielding it up makes the writer task wait on it exactly as if the coroutine had been
    awaited from the start; sends and throws (cancellation) are passed down to it.
    """

    __slots__ = ("_blocked_on", "_coro")

    def __init__(self, coro: Any, blocked_on: Any) -> None:
        self._coro = coro
        self._blocked_on = blocked_on

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self._coro, self._blocked_on
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # passed down, as `await` would
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value
