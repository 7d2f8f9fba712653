"""The per-process fan-out hub: one channel-layer message per event per server process.

The textbook Channels pattern (a group per socket, `group_send`, `send_json` per socket) costs a
layer message and a JSON encode per socket and, with channels-redis, drops silently when a
channel is over capacity. Here every server process runs one hub per event loop; the hub
listens on one layer channel in the group `GROUP`, receives each event once (already encoded
by the bus), and offers it to its local sockets, indexed by project, in-process.

Ordering and loss: each event carries `prev`, the log position just before its own (positions
are gapless: `events/sequencer.py`). The hub delivers strictly along that chain. An event
that arrives ahead of its predecessor waits `WS_GAP_WAIT`; then the hub reads the missing ones
from the log. Every `WS_GAP_CHECK_INTERVAL` it also compares the log's newest id with the last
one it delivered, which repairs a lost tail; on PostgreSQL it first stamps rows whose writer
died between commit and stamping, so they too reach the log and then the sockets. So a lost
or reordered layer message (pub/sub is fire-and-forget; the in-memory layer drops past its
capacity) costs latency, never an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import close_old_connections

from events import log, metrics, sequencer
from events.record import LoggedEvent

from . import credentials, shutdown

logger = logging.getLogger(__name__)

GROUP = "researchflow.events"
_Pair = tuple[LoggedEvent, dict[str, Any]]  # an event and its ASGI send message
# Events per layer message when several are waiting to go: with Redis each layer message is a
# PUBLISH round trip, and one per event capped a process at ~4,000 events/s handed to the
# others (docs/benchmarks.md, publishing). A run of events travels as one "rf.batch".
BATCH_MAX = 100


def layer_message(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """One channel-layer message for a run of event messages (in commit order)."""
    if len(messages) == 1:
        return messages[0]
    return {"type": "rf.batch", "events": messages}


PROCESS_ID = f"{socket.gethostname()}:{os.getpid()}"
# Read by GET /api/ws/stats/ (events/views.py): one hash per process, field "stats".


def stats_key_prefix() -> str:
    """Where each process's hub publishes its socket stats, one key per process."""
    return f"{settings.REDIS_PREFIX}:wsstats:"


class Subscriber(Protocol):
    """What the hub needs from a socket (the consumer implements it)."""

    user_id: int | None
    visible_projects: frozenset[str] | None  # None: every project (staff)

    def offer(self, event: LoggedEvent, message: dict[str, Any] | None = None) -> None: ...

    def stats_snapshot(self) -> tuple[bool, frozenset[str]]: ...

    def credential_key(self) -> Any: ...  # a REST token key or a session ref, re-checked

    def apply_standing(self, standing: Any, valid: set[Any]) -> None: ...

    def go_away(self) -> None: ...


def _db(fn: Any) -> Any:
    """Run ORM code in a worker thread with a fresh connection (like database_sync_to_async)."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        close_old_connections()
        try:
            return fn(*args, **kwargs)
        finally:
            close_old_connections()

    return sync_to_async(wrapped, thread_sensitive=False)


_log_head = _db(log.head)
_log_between = _db(log.between)


@_db
def _stamp_log() -> None:
    """PostgreSQL: position rows whose writer died between its commit and its stamping."""
    sequencer.stamp()


class Hub:
    _hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.layer = get_channel_layer()
        self.channel: str | None = None
        self.last_id: int | None = None
        self._by_project: dict[str, set[Subscriber]] = {}
        self._everything: set[Subscriber] = set()  # staff sockets
        self._indexed: dict[Subscriber, frozenset[str] | None] = {}
        self._subscribers: set[Subscriber] = set()
        self._sockets_per_user: Counter[int] = Counter()
        self._waiting: dict[int, LoggedEvent] = {}  # out-of-order events, keyed by prev id
        self._repair_scheduled = False
        self._batch: list[LoggedEvent] = []  # in order, not yet offered (see _deliver)
        self._batch_scheduled = False
        self._outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[Any]] = []
        self._ready = asyncio.Event()
        self._stopping = False
        self._draining = False
        self._drained = asyncio.Event()  # set when the last socket leaves during a drain
        self._stats_task: asyncio.Task[None] | None = None
        # Local tallies flushed to Prometheus once a second: a Counter.inc() per frame would
        # cost more than the frame's own dispatch.
        self.delivered = 0
        self.coalesced = 0
        self.dropped = 0
        self.gap_repaired = 0
        self._flushed = {"delivered": 0, "coalesced": 0}

    # --- lifecycle -----------------------------------------------------------------------

    @classmethod
    def for_loop(cls, loop: asyncio.AbstractEventLoop | None = None) -> Hub:
        loop = loop or asyncio.get_running_loop()
        hub = cls._hubs.get(loop)
        if hub is None:
            hub = cls._hubs[loop] = cls(loop)
            hub._tasks.append(loop.create_task(hub._start()))
        return hub

    @classmethod
    def running(cls) -> list[Hub]:
        return [
            hub
            for loop, hub in list(cls._hubs.items())
            if loop.is_running() and not loop.is_closed() and not hub._stopping
        ]

    async def ready(self) -> None:
        await self._ready.wait()

    async def _start(self) -> None:
        try:
            if self.layer is not None:
                self.channel = await self.layer.new_channel("hub.")
                await self.layer.group_add(GROUP, self.channel)
            # Join the group first, then read the log head: anything committed before the
            # read is older than our baseline, anything after reaches us through the group.
            self.last_id = await _log_head()
        except Exception:
            logger.exception("event hub failed to start; retrying from the log every interval")
            metrics.LAYER_ERRORS.labels(op="start").inc()
            self.last_id = self.last_id or 0
        self._ready.set()
        if self.layer is not None and self.channel is not None:
            self._tasks.append(self.loop.create_task(self._receive_loop()))
            self._tasks.append(self.loop.create_task(self._send_loop()))
        self._tasks.append(self.loop.create_task(self._check_loop()))
        self._tasks.append(self.loop.create_task(self._reauth_loop()))
        if settings.REDIS_URL:
            self._stats_task = self.loop.create_task(self._stats_loop())
            self._tasks.append(self._stats_task)
        # First socket of the process: from now on SIGTERM closes sockets with 1001 first.
        shutdown.install(Hub.running)

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.layer is not None and self.channel is not None:
            with contextlib.suppress(Exception):
                await self.layer.group_discard(GROUP, self.channel)
        Hub._hubs.pop(self.loop, None)

    # --- sockets -------------------------------------------------------------------------

    def add(self, sub: Subscriber) -> None:
        self._subscribers.add(sub)
        self._index(sub)
        if self._draining:
            # Accepted while shutting down: send it on at once (after connect() returns).
            self.loop.call_soon(sub.go_away)

    def remove(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)
        self._unindex(sub)
        if self._draining and not self._subscribers:
            self._drained.set()

    def reindex(self, sub: Subscriber) -> None:
        """Call after a socket's visible projects change (auth, scope, membership change)."""
        self._unindex(sub)
        if sub in self._subscribers:
            self._index(sub)

    def _index(self, sub: Subscriber) -> None:
        projects = sub.visible_projects
        # Remember what we indexed it under: unindexing must not scan every project.
        self._indexed[sub] = projects
        if projects is None:
            self._everything.add(sub)
        else:
            for project in projects:
                self._by_project.setdefault(project, set()).add(sub)

    def _unindex(self, sub: Subscriber) -> None:
        if sub not in self._indexed:
            return
        projects = self._indexed.pop(sub)
        if projects is None:
            self._everything.discard(sub)
            return
        for project in projects:
            subs = self._by_project.get(project)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._by_project[project]

    def claim_user_slot(self, user_id: int) -> bool:
        limit = settings.WS_MAX_CONNECTIONS_PER_USER
        if limit and self._sockets_per_user[user_id] >= limit:
            return False
        self._sockets_per_user[user_id] += 1
        return True

    def release_user_slot(self, user_id: int) -> None:
        self._sockets_per_user[user_id] -= 1
        if self._sockets_per_user[user_id] <= 0:
            del self._sockets_per_user[user_id]

    @property
    def subscribers(self) -> frozenset[Subscriber]:
        return frozenset(self._subscribers)

    # --- inbound events ------------------------------------------------------------------

    def accept(self, event: LoggedEvent) -> None:
        """Take one event from the layer (or the log) and deliver it in chain order."""
        if self.last_id is None:
            # Not started yet: nothing is connected that could want it live.
            return
        if event.id <= self.last_id:
            return  # a duplicate: already delivered (e.g. repaired from the log first)
        if event.prev_id is None or event.prev_id <= self.last_id:
            self._deliver(event)
            while self.last_id in self._waiting:
                self._deliver(self._waiting.pop(self.last_id))
            return
        self._waiting[event.prev_id] = event
        if not self._repair_scheduled:
            self._repair_scheduled = True
            self.loop.call_later(settings.WS_GAP_WAIT, self._schedule_repair)

    def _deliver(self, event: LoggedEvent) -> None:
        # Offered at the end of this loop turn, with every other event received in it: the
        # layer hands over a burst without suspending, and offering it socket by socket
        # writes each socket's frames back to back (fewer wake-ups of the reader on the other
        # end). With the consumer's task-free send, fan-out went from 0.68 to 0.82-0.84 of a
        # bare websockets server (docs/benchmarks.md, fan-out).
        self.last_id = event.id
        self._batch.append(event)
        if not self._batch_scheduled:
            self._batch_scheduled = True
            self.loop.call_soon(self._offer_batch)

    def _offer_batch(self) -> None:
        self._batch_scheduled = False
        batch, self._batch = self._batch, []
        if not batch:
            return
        # One ASGI message per event, shared by every socket: servers only read it.
        pairs = [(event, {"type": "websocket.send", "text": event.frame}) for event in batch]
        for sub, sub_pairs in self._targets(pairs):
            try:
                for event, message in sub_pairs:
                    sub.offer(event, message)
            except Exception:
                self._offer_failed(sub)

    def _targets(self, pairs: list[_Pair]) -> Iterator[tuple[Subscriber, list[_Pair]]]:
        """Each socket that may see any of the events, with those it may see, in log order."""
        by_project = self._by_project
        project = pairs[0][0].project_id
        if all(event.project_id == project for event, _ in pairs):
            for group in (by_project.get(project), self._everything):
                for sub in tuple(group or ()):
                    yield sub, pairs
            return
        # Several projects: a socket may see more than one; it still gets them in log order.
        per_sub: dict[Subscriber, list[_Pair]] = {}
        for pair in pairs:
            for sub in by_project.get(pair[0].project_id, ()):
                per_sub.setdefault(sub, []).append(pair)
        for sub in tuple(self._everything):
            per_sub[sub] = pairs
        yield from per_sub.items()

    def _offer_failed(self, sub: Subscriber) -> None:
        # A bug in one socket must not cost the others their events. This one may have missed
        # some: close it as going away, so its client reconnects and resumes from the log.
        logger.exception("event hub: offering events to a socket failed; closing it (1001)")
        with contextlib.suppress(Exception):
            sub.go_away()

    def _schedule_repair(self) -> None:
        self._repair_scheduled = False
        if self._waiting and not self._stopping:
            task = self.loop.create_task(self._repair(max(e.id for e in self._waiting.values())))
            self._tasks.append(task)
            task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[Any]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)

    async def _repair(self, upto: int | None) -> None:
        """Read what the layer lost from the log and deliver it, in order."""
        if self.last_id is None:
            return
        start = self.last_id
        try:
            missing = await _log_between(start, upto)
        except Exception:
            logger.exception("event hub could not read the log to repair a gap")
            metrics.LAYER_ERRORS.labels(op="repair").inc()
            return
        repaired = 0
        for event in missing:
            if self.last_id is not None and event.id > self.last_id:
                self._deliver(event)
                repaired += 1
        # Whatever was waiting is now either delivered (from the log) or next in line.
        for prev in sorted(self._waiting):
            event = self._waiting.pop(prev)
            if self.last_id is not None and event.id > self.last_id:
                self._deliver(event)
        if repaired:
            self.gap_repaired += repaired
            metrics.GAPS_REPAIRED.inc(repaired)
            logger.info("event hub repaired %d event(s) from the log after id %d", repaired, start)

    async def _receive_loop(self) -> None:
        assert self.layer is not None and self.channel is not None
        while not self._stopping:
            try:
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                metrics.LAYER_ERRORS.labels(op="receive").inc()
                logger.exception("event hub: channel layer receive failed; retrying")
                await asyncio.sleep(0.5)
                continue
            kind = message.get("type")
            if kind == "rf.event":
                self._accept_message(message)
            elif kind == "rf.batch":
                events = message.get("events")
                for event in events if isinstance(events, list) else ():
                    self._accept_message(event)

    def _accept_message(self, message: Any) -> None:
        try:
            self.accept(LoggedEvent.from_message(message))
        except Exception:
            logger.exception("event hub: bad layer message dropped (repaired from log)")

    async def _send_loop(self) -> None:
        """Publish committed events to the layer in commit order: what is waiting in the
        outbox goes as one layer message (up to BATCH_MAX events), one send at a time.

        One send at a time on purpose: starting several sends together (asyncio.gather) was
        ~4 % faster with the in-memory layer but made the Redis pub/sub hub fall further behind
        (its publishes queue on one lock per shard anyway), and could reorder them.
        """
        assert self.layer is not None
        unsent: list[dict[str, Any]] = []  # taken from the outbox, not yet through the layer
        try:
            while True:
                unsent = [await self._outbox.get()]
                while len(unsent) < BATCH_MAX and not self._outbox.empty():
                    unsent.append(self._outbox.get_nowait())
                await self._send(layer_message(unsent))
                unsent = []
        finally:
            # Cancelled (Hub.stop, or the server cancelling every task at shutdown): what the
            # bus already handed us still goes out, so no other process has to wait for its
            # log check to see it. An interrupted send goes again (hubs drop duplicates).
            await self._send_rest(unsent)

    async def _send(self, message: dict[str, Any]) -> None:
        assert self.layer is not None
        try:
            await self.layer.group_send(GROUP, message)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Every hub (ours included) repairs the gap from the log within an interval.
            metrics.LAYER_ERRORS.labels(op="send").inc()
            logger.exception("event hub: group_send failed; hubs will repair from the log")

    async def _send_rest(self, unsent: list[dict[str, Any]]) -> None:
        rest = list(unsent)
        while not self._outbox.empty():
            rest.append(self._outbox.get_nowait())
        # Closed, not forgotten: a hand_off racing with stop() finds it closed and sends its
        # event through the background sender instead of into this dead outbox.
        rest.extend(_hand_off_for(self).close())
        if not rest:
            return
        done = 0
        try:
            async with asyncio.timeout(SHUTDOWN_SEND_TIMEOUT):
                for start in range(0, len(rest), BATCH_MAX):
                    chunk = rest[start : start + BATCH_MAX]
                    await self._send(layer_message(chunk))
                    done += len(chunk)
        except TimeoutError:
            metrics.LAYER_ERRORS.labels(op="send").inc()
            logger.warning(
                "event hub stopping: %d of %d queued event(s) not published within %.1fs; "
                "other hubs repair them from the log",
                len(rest) - done,
                len(rest),
                SHUTDOWN_SEND_TIMEOUT,
            )

    async def _check_loop(self) -> None:
        """The safety net: compare the log head with what we delivered; flush metrics."""
        interval = settings.WS_GAP_CHECK_INTERVAL
        while True:
            await asyncio.sleep(interval)
            self._flush_metrics()
            try:
                await _stamp_log()
            except asyncio.CancelledError:
                raise
            except Exception:
                metrics.LAYER_ERRORS.labels(op="check").inc()
                logger.exception("event hub: stamping the log failed")
            if not self._subscribers or self.last_id is None:
                # No socket to serve: just follow the head so a later socket starts fresh.
                with contextlib.suppress(Exception):
                    self.last_id = max(self.last_id or 0, await _log_head())
                continue
            try:
                head = await _log_head()
                if head > self.last_id:
                    seen = self.last_id
                    await asyncio.sleep(settings.WS_GAP_WAIT)
                    if self.last_id == seen:  # nothing arrived meanwhile: the tail was lost
                        await self._repair(head)
            except asyncio.CancelledError:
                raise
            except Exception:
                metrics.LAYER_ERRORS.labels(op="check").inc()
                logger.exception("event hub: log check failed")

    async def _reauth_loop(self) -> None:
        """Re-read every socket user's standing in one batch: a removed member, a deactivated
        user, a revoked token or an ended session (logout, expiry, password change) stops
        receiving within one interval."""
        recheck = _db(credentials.recheck)
        while True:
            await asyncio.sleep(settings.WS_REAUTH_INTERVAL)
            subs = [s for s in tuple(self._subscribers) if s.user_id is not None]
            if not subs:
                continue
            try:
                standing, valid = await recheck(
                    {s.user_id for s in subs}, {k for s in subs if (k := s.credential_key())}
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("event hub: credential re-check failed; will retry")
                continue
            for sub in subs:
                if sub in self._subscribers and sub.user_id is not None:
                    sub.apply_standing(standing.get(sub.user_id), valid)

    def _flush_metrics(self) -> None:
        for name, counter in (("delivered", metrics.DELIVERED), ("coalesced", metrics.COALESCED)):
            value = getattr(self, name)
            delta = value - self._flushed[name]
            if delta:
                counter.inc(delta)
                self._flushed[name] = value

    # --- graceful shutdown ---------------------------------------------------------------

    async def drain(self, grace: float) -> int:
        """Close every socket with 1001 after the frames already queued for it; return how many
        were still open after `grace` seconds. Clients reconnect elsewhere and resume."""
        self._draining = True
        self._offer_batch()  # what this process already received goes out before the close
        for sub in tuple(self._subscribers):
            sub.go_away()
        if self._subscribers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), grace)
        self._flush_metrics()
        if self._stats_task is not None:
            # Its cleanup deletes our stats key: the cluster view drops us now, not at TTL.
            self._stats_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._stats_task
        return len(self._subscribers)

    # --- cross-process stats -------------------------------------------------------------

    async def _stats_loop(self) -> None:
        """Publish this process's socket stats to Redis for GET /api/ws/stats/ to sum.

        A private client with one connection (not the channel layer's pool) and short
        timeouts: a slow Redis delays only this task. The key expires unless refreshed, so a
        killed process drops out of the sum within the TTL.
        """
        import redis.asyncio as aioredis

        key = stats_key_prefix() + PROCESS_ID
        interval = settings.WS_STATS_INTERVAL
        ttl = max(1, round(settings.WS_STATS_TTL))
        client = aioredis.Redis.from_url(
            str(settings.REDIS_URL),
            socket_connect_timeout=2,
            socket_timeout=2,
            single_connection_client=True,
        )
        failing = False
        try:
            while True:
                try:
                    blob = json.dumps(local_stats())
                    async with client.pipeline(transaction=False) as pipe:
                        pipe.hset(key, "stats", blob)
                        pipe.expire(key, ttl)
                        await pipe.execute()
                    if failing:
                        logger.info("event hub: publishing socket stats to Redis again")
                    failing = False
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    metrics.STATS_PUBLISH_ERRORS.inc()
                    if not failing:  # once per outage, not every interval
                        logger.warning(
                            "event hub: cannot publish socket stats to Redis (%s); retrying",
                            type(exc).__name__,
                        )
                    failing = True
                await asyncio.sleep(interval)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.delete(key), 1.0)
            with contextlib.suppress(Exception):
                await client.aclose()

    # --- outbound (from the bus, on commit) ----------------------------------------------

    def enqueue_batch(self, messages: list[dict[str, Any]]) -> None:
        """Called on this hub's loop thread with a hand-off batch, in commit order."""
        if self.layer is None:
            return
        if self._stopping:
            # stop() has begun and the send loop may already be gone (or was cancelled
            # before it ever ran, so its flush never runs): route these, and whatever is
            # still buffered behind them, as if this hub did not exist.
            for message in [*messages, *_hand_off_for(self).close()]:
                _route(message)
            return
        for message in messages:
            self._outbox.put_nowait(message)

    # --- stats ---------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        by_type: Counter[str] = Counter()
        by_category: Counter[str] = Counter()
        authenticated = 0
        for sub in tuple(self._subscribers):
            is_auth, subscriptions = sub.stats_snapshot()
            authenticated += is_auth
            for name in subscriptions:
                (by_category if name.isupper() else by_type)[name] += 1
        return {
            "connections": {"total": len(self._subscribers), "authenticated": authenticated},
            "subscriptions": {"byType": dict(by_type), "byCategory": dict(by_category)},
            "messages": {
                "sent": self.delivered,
                "coalesced": self.coalesced,
                "dropped": self.dropped,
            },
            "lastEventId": self.last_id,
            "gapEventsRepaired": self.gap_repaired,
        }


def hand_off(record: LoggedEvent) -> None:
    """From the bus, on commit (any thread): get the event to every process's hub.

    In a server process the event goes out through the hub's own loop, which owns the layer's
    connections, in commit order. Elsewhere (a management command, the demo runner in its
    own process) it goes through a private sender thread, and only when a shared (Redis)
    layer exists: the in-memory layer has no listener outside this process.
    """
    _route(record.to_message())


def _route(message: dict[str, Any]) -> None:
    hub = _sending_hub()
    if hub is not None:
        if hub.layer is None:
            return
        if _hand_off_for(hub).submit(message):
            return
        # That hub closed between running() and submit(): as if there had been none.
    if settings.REDIS_URL:
        _background_sender().submit(message)


_last_sender: weakref.ref[Hub] | None = None


def _sending_hub() -> Hub | None:
    """The hub whose loop publishes for this process: one is enough, every hub (that one
    included) hears the group. The one used last while it keeps running (the same tests as
    Hub.running(), which builds a list per call: a few us on every publish)."""
    global _last_sender
    hub = _last_sender() if _last_sender is not None else None
    if hub is not None and not hub._stopping and hub.loop.is_running() and not hub.loop.is_closed():
        return hub
    hubs = Hub.running()
    if not hubs:
        return None
    _last_sender = weakref.ref(hubs[0])
    return hubs[0]


# How long the hand-off buffer collects events before the loop takes them (the first event
# of a burst goes at once). A wake-up per event made the publishing thread and the loop
# thread ping-pong for the GIL on one core; one loop turn per interval takes every event
# that arrived in it. This is the latency a busy publisher adds, at most.
HAND_OFF_INTERVAL = 0.001
# At hub stop, how long the send loop may spend publishing what is still queued.
SHUTDOWN_SEND_TIMEOUT = 2.0


class _HandOff:
    """Carries layer messages from any thread onto one event loop, in submission order.

    `submit` appends to a buffer under a lock (the order of submit calls is the order the
    loop sees) and wakes the loop only when no drain is pending. The loop then drains the
    buffer now and every HAND_OFF_INTERVAL while events keep coming, and stops ticking
    after an interval with none. `sink` runs on the loop with each batch, in order.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sink: Callable[[list[dict[str, Any]]], None]
    ) -> None:
        self._loop = loop
        self._sink = sink
        self._lock = threading.Lock()
        self._buffer: list[dict[str, Any]] = []
        self._armed = False  # a drain is scheduled or ticking: no need to wake the loop
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None  # loop thread only

    def submit(self, message: dict[str, Any]) -> bool:
        """Queue one message (any thread). False once closed: the caller sends it elsewhere."""
        on_loop = asyncio.events._get_running_loop() is self._loop
        with self._lock:
            if self._closed:
                return False
            self._buffer.append(message)
            if on_loop:
                # Already on the loop (on_commit in async code): behind what is buffered, now.
                batch, self._buffer = self._buffer, []
            elif self._armed:
                return True
            else:
                self._armed = True
        if on_loop:
            self._sink(batch)
            return True
        try:
            self._loop.call_soon_threadsafe(self._start)
        except RuntimeError:
            # The loop closed under us: nothing will drain this buffer any more.
            for stranded in self.close():
                _route(stranded)
        return True

    def _start(self) -> None:
        if self._timer is not None or self._closed:
            return
        self.drain()
        if not self._closed:  # the sink may have closed it (a hub that began stopping)
            self._timer = self._loop.call_later(HAND_OFF_INTERVAL, self._tick)

    def _tick(self) -> None:
        self._timer = None
        with self._lock:
            batch, self._buffer = self._buffer, []
            if not batch:
                self._armed = False  # idle: the next submit wakes the loop again
        if batch:
            self._sink(batch)
            if not self._closed:
                self._timer = self._loop.call_later(HAND_OFF_INTERVAL, self._tick)

    def drain(self) -> None:
        """On the loop thread: hand everything buffered to the sink now (flush, shutdown)."""
        with self._lock:
            batch, self._buffer = self._buffer, []
        if batch:
            self._sink(batch)

    def close(self) -> list[dict[str, Any]]:
        """Stop accepting; return what was buffered, in order, for the caller to send."""
        with self._lock:
            self._closed = True
            batch, self._buffer = self._buffer, []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return batch


_HAND_OFFS: weakref.WeakKeyDictionary[Hub, _HandOff] = weakref.WeakKeyDictionary()
_HAND_OFFS_LOCK = threading.Lock()


def _hand_off_for(hub: Hub) -> _HandOff:
    handoff = _HAND_OFFS.get(hub)
    if handoff is None:
        with _HAND_OFFS_LOCK:  # two threads must not each create one: their order would mix
            handoff = _HAND_OFFS.get(hub)
            if handoff is None:
                handoff = _HAND_OFFS[hub] = _HandOff(hub.loop, hub.enqueue_batch)
    return handoff


class _BackgroundSender:
    """A thread with its own loop, for publishing from code that has no server loop."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._queue: asyncio.Queue[dict[str, Any]] | None = None
        self._started = threading.Event()
        self._handoff = _HandOff(self._loop, self._enqueue)
        self._thread = threading.Thread(target=self._run, name="event-sender", daemon=True)
        self._thread.start()
        self._started.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._queue = asyncio.Queue()
        self._loop.call_soon(self._started.set)
        self._loop.run_until_complete(self._drain())

    def _enqueue(self, batch: list[dict[str, Any]]) -> None:
        assert self._queue is not None
        for message in batch:
            self._queue.put_nowait(message)

    async def _drain(self) -> None:
        assert self._queue is not None
        layer = get_channel_layer()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < BATCH_MAX and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                if layer is not None:
                    await layer.group_send(GROUP, layer_message(batch))
            except Exception:
                metrics.LAYER_ERRORS.labels(op="send").inc()
                logger.exception("background event sender: group_send failed (hubs will repair)")
            finally:
                for _ in batch:
                    self._queue.task_done()

    def submit(self, message: dict[str, Any]) -> None:
        self._handoff.submit(message)

    async def _flushed(self) -> None:
        assert self._queue is not None
        self._handoff.drain()  # don't wait for the next tick
        await self._queue.join()

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything submitted so far was handed to the layer (for commands)."""
        future = asyncio.run_coroutine_threadsafe(self._flushed(), self._loop)
        with contextlib.suppress(Exception):
            future.result(timeout)


_sender: _BackgroundSender | None = None
_sender_lock = threading.Lock()


def _background_sender() -> _BackgroundSender:
    global _sender
    if _sender is None:
        with _sender_lock:  # two threads must not start two senders (order, and a leak)
            if _sender is None:
                _sender = _BackgroundSender()
    return _sender


def flush_background_sender(timeout: float = 5.0) -> None:
    if _sender is not None:
        _sender.flush(timeout)


def local_stats() -> dict[str, Any]:
    """Stats of every hub in this process, summed."""
    total: dict[str, Any] = {
        "connections": {"total": 0, "authenticated": 0},
        "subscriptions": {"byType": Counter(), "byCategory": Counter()},
        "messages": {"sent": 0, "coalesced": 0, "dropped": 0},
    }
    for hub in Hub.running():
        merge_stats(total, hub.stats())
    return total


def merge_stats(total: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    for key in ("total", "authenticated"):
        total["connections"][key] += part["connections"][key]
    for key in ("byType", "byCategory"):
        total["subscriptions"][key] = Counter(total["subscriptions"][key]) + Counter(
            part["subscriptions"][key]
        )
    for key in ("sent", "coalesced", "dropped"):
        total["messages"][key] += part["messages"][key]
    return total
