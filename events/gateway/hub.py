"""The per-process fan-out hub: one per event loop, the index of its sockets by project, and
the offer of each event, in log order, to the sockets that may see it.

The textbook Channels pattern (a group per socket, `group_send`, `send_json` per socket) costs a
layer message and a JSON encode per socket and, with channels-redis, drops silently when a
channel is over capacity. Here each loop's hub hears every event once (`transport.py`: one
layer group, events already encoded by the bus) and offers it to its local sockets,
in-process.

Order and loss: `ordering.Chain` delivers strictly along each event's `prev` link. An event
that arrives ahead of its predecessor waits `WS_GAP_WAIT`; then the hub reads the missing ones
from the log. Every `WS_GAP_CHECK_INTERVAL` it also compares the log's newest id with the last
one it delivered, which repairs a lost tail; on PostgreSQL it first stamps rows whose writer
died between commit and stamping, so they too reach the log and then the sockets. So a lost
or reordered layer message (pub/sub is fire-and-forget; the in-memory layer drops past its
capacity) costs latency, never an event.

The rest is wired here, each in its own module: publishing (`transport.HubSender`), the
credential re-check (`reauth.py`), the cross-process stats (`stats.py`), graceful shutdown
(`shutdown.py`, which is given `Hub.running` and calls `Hub.drain`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections import Counter
from collections.abc import Iterator
from typing import Any, Protocol

from channels.layers import get_channel_layer
from django.conf import settings

from events import log, metrics, sequencer
from events.record import LoggedEvent

from . import reauth, shutdown, stats, transport
from .ordering import Chain
from .orm import in_worker_thread

logger = logging.getLogger(__name__)

_Pair = tuple[LoggedEvent, dict[str, Any]]  # an event and its ASGI send message


class Subscriber(reauth.Rechecked, Protocol):
    """What the hub needs from a socket (the consumer implements it)."""

    visible_projects: frozenset[str] | None  # None: every project (staff)

    def offer(self, event: LoggedEvent, message: dict[str, Any] | None = None) -> None: ...

    def stats_snapshot(self) -> tuple[bool, frozenset[str]]: ...

    def go_away(self) -> None: ...


_log_head = in_worker_thread(log.head)
_log_between = in_worker_thread(log.between)
# PostgreSQL: position rows whose writer died between its commit and its stamping.
_stamp_log = in_worker_thread(sequencer.stamp)


class Hub:
    _hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.layer = get_channel_layer()
        self.sender = transport.HubSender(loop, self.layer)
        self.channel: str | None = None
        self._chain: Chain[LoggedEvent] = Chain()
        self._by_project: dict[str, set[Subscriber]] = {}
        self._everything: set[Subscriber] = set()  # staff sockets
        self._indexed: dict[Subscriber, frozenset[str] | None] = {}
        self._subscribers: set[Subscriber] = set()
        self._sockets_per_user: Counter[int] = Counter()
        self._repair_scheduled = False
        self._batch: list[LoggedEvent] = []  # in order, not yet offered (see accept)
        self._batch_scheduled = False
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
        # Events taken in (in log order), and those of them no local socket could see: what
        # this process pays for events it can only discard (docs/scaling.md).
        self.received = 0
        self.discarded = 0
        self._flushed = {"delivered": 0, "coalesced": 0, "received": 0, "discarded": 0}

    @property
    def last_id(self) -> int | None:
        """The newest log position delivered (None until the hub has read the log head)."""
        return self._chain.last_id

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
        head: int | None = None
        try:
            if self.layer is not None:
                self.channel = await self.layer.new_channel("hub.")
                await self.layer.group_add(transport.GROUP, self.channel)
            # Join the group first, then read the log head: anything committed before the
            # read is older than our baseline, anything after reaches us through the group.
            head = await _log_head()
        except Exception:
            logger.exception("event hub failed to start; retrying from the log every interval")
            metrics.LAYER_ERRORS.labels(op="start").inc()
        self._chain.start(head or 0)
        self._ready.set()
        if self.layer is not None and self.channel is not None:
            self._tasks.append(
                self.loop.create_task(transport.receive_loop(self.layer, self.channel, self))
            )
            self._tasks.append(self.loop.create_task(self.sender.send_loop()))
        self._tasks.append(self.loop.create_task(self._check_loop()))
        self._tasks.append(self.loop.create_task(reauth.recheck_loop(self._subscribers)))
        if settings.REDIS_URL:
            self._stats_task = self.loop.create_task(
                stats.publish_loop(lambda: stats.local_stats(Hub.running()))
            )
            self._tasks.append(self._stats_task)
        # First socket of the process: from now on SIGTERM closes sockets with 1001 first.
        shutdown.install(Hub.running)

    async def stop(self) -> None:
        self._stopping = True
        self.sender.retire()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.layer is not None and self.channel is not None:
            with contextlib.suppress(Exception):
                await self.layer.group_discard(transport.GROUP, self.channel)
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

    # --- events in, offered in log order -------------------------------------------------

    def accept(self, event: LoggedEvent) -> None:
        """Take one event from the layer and deliver it in chain order (`ordering.Chain`).

        What becomes deliverable is offered at the end of this loop turn, with every other
        event received in it: the layer hands over a burst without suspending, and offering it
        socket by socket writes each socket's frames back to back (fewer wake-ups of the
        reader on the other end).
        """
        if self._chain.accept(event, self._batch) and not self._repair_scheduled:
            self._repair_scheduled = True
            self.loop.call_later(settings.WS_GAP_WAIT, self._schedule_repair)
        if self._batch and not self._batch_scheduled:
            self._batch_scheduled = True
            self.loop.call_soon(self._offer_batch)

    def _offer_batch(self) -> None:
        self._batch_scheduled = False
        batch, self._batch = self._batch, []
        if not batch:
            return
        self.received += len(batch)
        if not self._everything:
            by_project = self._by_project
            for event in batch:  # per event, never per socket
                if event.project_id not in by_project:
                    self.discarded += 1
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

    # --- gap repair from the log ---------------------------------------------------------

    def _schedule_repair(self) -> None:
        self._repair_scheduled = False
        gap = self._chain.gap()
        if gap is not None and not self._stopping:
            task = self.loop.create_task(self._repair(gap[1]))
            self._tasks.append(task)
            task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[Any]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)

    async def _repair(self, upto: int | None) -> None:
        """Read what the layer lost from the log and deliver it, in order."""
        start = self._chain.last_id
        if start is None:
            return
        try:
            missing = await _log_between(start, upto)
        except Exception:
            logger.exception("event hub could not read the log to repair a gap")
            metrics.LAYER_ERRORS.labels(op="repair").inc()
            return
        batch = self._batch
        repaired = self._chain.merge_repair(missing, batch)
        if batch and not self._batch_scheduled:
            self._batch_scheduled = True
            self.loop.call_soon(self._offer_batch)
        if self._chain.gap() is not None and not self._repair_scheduled:
            # Events that arrived during the read, behind another gap: repair that one too.
            self._repair_scheduled = True
            self.loop.call_later(settings.WS_GAP_WAIT, self._schedule_repair)
        if repaired:
            self.gap_repaired += repaired
            metrics.GAPS_REPAIRED.inc(repaired)
            logger.info("event hub repaired %d event(s) from the log after id %d", repaired, start)

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
                    self._chain.follow(await _log_head())
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

    def _flush_metrics(self) -> None:
        for name, counter in (
            ("delivered", metrics.DELIVERED),
            ("coalesced", metrics.COALESCED),
            ("received", metrics.HUB_EVENTS_RECEIVED),
            ("discarded", metrics.HUB_EVENTS_DISCARDED),
        ):
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
            "events": {"received": self.received, "discarded": self.discarded},
            "lastEventId": self.last_id,
            "gapEventsRepaired": self.gap_repaired,
        }
