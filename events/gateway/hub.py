"""The per-process fan-out hub: one per event loop, the index of its sockets by project, and
the offer of each event, in log order, to the sockets that may see it.

The textbook Channels pattern (a group per socket, `group_send`, `send_json` per socket) costs a
layer message and a JSON encode per socket and, with channels-redis, drops silently when a
channel is over capacity. Here each loop's hub hears each event it needs once (`transport.py`:
one layer group per shard of projects, events already encoded by the bus) and offers it to its
local sockets, in-process.

What a hub hears (`_reconcile`): nothing while no socket may see anything; the one shard of its
sockets' projects when they all fall in one (events/shards.py); every shard as soon as they
span two or more, or a staff socket is open. Not an arbitrary subset of shards, on purpose: a
socket's events must reach it in log order (ids strictly increase; resume is one integer), and
a hub hearing shards A and B could not tell, holding B's event 9, whether A's quiet stream has
an event 8 still in flight. Hearing one shard, it follows that shard's own links
(`shard_prev`); hearing all, the log's (`prev`), as before routing. Widening (a first socket,
a staff socket, a membership added while connected) joins the groups first, then takes its
baseline from the log head read after that; a hub that heard one shard and widens to all
first delivers that shard's events up to the head from the log (`Chain.rebase`), so its
sockets miss nothing; until then the log's chain has no baseline, so what the layer brings
waits and a repair reads that shard only (`_finish_widening`). A socket waits for the
widening (`settled`) before it is told it is authenticated or replays, so what it may see
reaches it from then on, in order.

Order and loss: `ordering.Chain` delivers strictly along each event's link. An event
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
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol

from channels.layers import get_channel_layer
from django.conf import settings

from events import log, metrics, sequencer, shards
from events.record import LoggedEvent
from events.shards import shard_of

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
_shard_head = in_worker_thread(log.shard_head)
_log_between = in_worker_thread(log.between)
# What a hub hears: nothing, one shard (0..K-1), or every shard.
NOTHING: int | None = None
EVERY_SHARD = -1
# PostgreSQL: position rows whose writer died between its commit and its stamping.
_stamp_log = in_worker_thread(sequencer.stamp)


class Hub:
    _hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.layer = get_channel_layer()
        self.sender = transport.HubSender(loop, self.layer)
        self.channel: str | None = None
        self._chain: Chain[LoggedEvent] | None = None  # None while it hears nothing
        self._hearing: int | None = NOTHING  # a shard, EVERY_SHARD or NOTHING (see _reconcile)
        self._joined: set[int] = set()  # the shard groups our channel is in
        # A join that fails (Redis down) is retried at every log check: logged once per outage.
        self._join_outage = transport.Outage("event hub", "join")
        self._needs: Counter[int] = Counter()  # shard -> projects indexed in it (_by_project)
        self._reconciling = False
        self._settled = asyncio.Event()  # set while what it hears is what its sockets need
        self._settled.set()
        self._by_project: dict[str, set[Subscriber]] = {}
        self._everything: set[Subscriber] = set()  # staff sockets
        self._indexed: dict[Subscriber, frozenset[str] | None] = {}
        self._subscribers: set[Subscriber] = set()
        self._sockets_per_user: Counter[int] = Counter()
        self._repair_scheduled = False
        # A widening from one shard to every shard, until the log gave it that shard's events up
        # to the head: (its chain, that shard, the head); and what the layer brought meanwhile.
        self._widening: tuple[Chain[LoggedEvent], int, int] | None = None
        self._held: list[LoggedEvent] = []
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
        # Events offered in log order, and of those the ones none of its sockets could see
        # (discarded: what this process pays for events it can only drop, docs/scaling.md);
        # events the layer brought, and of those the ones of a shard it no longer hears
        # (unwanted: in flight when it stopped hearing that shard).
        self.received = 0
        self.discarded = 0
        self.layer_received = 0
        self.unwanted = 0
        self._flushed = {
            "delivered": 0,
            "coalesced": 0,
            "received": 0,
            "discarded": 0,
            "layer_received": 0,
            "unwanted": 0,
        }

    @property
    def last_id(self) -> int | None:
        """The newest log position delivered in what it hears (None while it hears nothing)."""
        return self._chain.last_id if self._chain is not None else None

    @property
    def hearing(self) -> int | None:
        """The shard it hears, EVERY_SHARD, or NOTHING."""
        return self._hearing

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
        except Exception:
            logger.exception("event hub failed to start; delivering from the log every interval")
            metrics.LAYER_ERRORS.labels(op="start").inc()
        # Groups are joined as sockets need them (_reconcile).
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
        self._settled.set()  # a socket waiting for a widening goes on (and is closed)
        self.sender.retire()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._settled.set()
        if self.layer is not None and self.channel is not None:
            for shard in tuple(self._joined):
                with contextlib.suppress(Exception):
                    await self.layer.group_discard(transport.group(shard), self.channel)
        self._joined.clear()
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
            if not self._everything:
                self._need_everything(1)
            self._everything.add(sub)
        else:
            by_project = self._by_project
            for project in projects:
                subs = by_project.get(project)
                if subs is None:
                    subs = by_project[project] = set()
                    self._need(shard_of(project), 1)
                subs.add(sub)

    def _unindex(self, sub: Subscriber) -> None:
        if sub not in self._indexed:
            return
        projects = self._indexed.pop(sub)
        if projects is None:
            self._everything.discard(sub)
            if not self._everything:
                self._need_everything(-1)
            return
        for project in projects:
            subs = self._by_project.get(project)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._by_project[project]
                    self._need(shard_of(project), -1)

    # --- what it hears: the shard groups its sockets need ---------------------------------

    def _need(self, shard: int, delta: int) -> None:
        count = self._needs[shard] + delta
        if count > 0:
            self._needs[shard] = count
        else:
            del self._needs[shard]
        if count in (0, 1):
            self._kick()

    def _need_everything(self, delta: int) -> None:
        for shard in range(shards.count()):
            self._need(shard, delta)

    def _wanted(self) -> int | None:
        """What its sockets need it to hear now."""
        needs = self._needs
        if not needs:
            return NOTHING
        if len(needs) == 1 and not self._everything:
            return next(iter(needs))
        return EVERY_SHARD

    def _kick(self) -> None:
        if self._stopping or (self._wanted() == self._hearing and not self._reconciling):
            return  # stopping: no socket may wait for a widening that will not come
        self._settled.clear()
        if not self._reconciling:
            self._reconciling = True
            task = self.loop.create_task(self._reconcile())
            self._tasks.append(task)
            task.add_done_callback(self._forget_task)

    async def settled(self) -> None:
        """Wait until it hears what its sockets need (a socket waits for this after it was
        indexed and before it is told it is authenticated or replays the log)."""
        await self._settled.wait()

    async def _reconcile(self) -> None:
        """Make what it hears match what its sockets need, one change at a time, until they
        agree. Widening joins the groups first, then reads the baseline, so anything committed
        after the read reaches us through the groups; narrowing stops delivering first."""
        try:
            while not self._stopping and (wanted := self._wanted()) != self._hearing:
                if wanted is None:
                    self._hear(NOTHING, None)
                elif wanted == EVERY_SHARD:
                    await self._join(range(shards.count()))
                    await self._widen_to_every_shard()
                elif self._hearing == EVERY_SHARD:
                    # Narrowing to one shard: its chain goes on from where the log chain was.
                    last = self.last_id or 0
                    self._hear(wanted, Chain(last, by_shard=True))
                else:  # from nothing (or another shard: its sockets left) to one shard
                    if self._hearing is not None:
                        self._hear(NOTHING, None)
                    await self._join((wanted,))
                    head = await self._baseline(lambda: _shard_head(wanted))
                    if head is not None and self._wanted() == wanted:
                        self._hear(wanted, Chain(head, by_shard=True))
                await self._leave_unheard()
        finally:
            self._reconciling = False
            if self._stopping or self._wanted() == self._hearing:
                self._settled.set()
            else:
                self._kick()

    def _hear(self, hearing: int | None, chain: Chain[LoggedEvent] | None) -> None:
        self._hearing = hearing
        self._chain = chain
        self._widening = None
        self._held = []

    async def _widen_to_every_shard(self) -> None:
        head = await self._baseline(_log_head)
        if head is None or self._wanted() != EVERY_SHARD:
            return
        previous, chain = self._hearing, self._chain
        if previous is None or previous == EVERY_SHARD or chain is None:
            self._hear(EVERY_SHARD, Chain(head))
            return
        # It heard one shard: its sockets must still get that shard's events up to the head,
        # in order, before the events after it. The log chain starts where the shard's was;
        # what arrives meanwhile is held until the rebase.
        assert previous is not None
        wide: Chain[LoggedEvent] = Chain(chain.last_id or 0)
        self._hear(EVERY_SHARD, wide)
        self._widening = (wide, previous, head)
        await self._finish_widening()

    async def _finish_widening(self) -> None:
        """Deliver the shard it heard up to the widening's head from the log, then what the
        layer brought meanwhile (`Chain.rebase`). Until then the log's chain has no baseline:
        an event of another shard next in the log after that shard's position may still be
        older than the head (not its sockets' to see), so nothing else may go through it, and
        a repair (`_repair`) comes here instead of reading every shard from that position.
        If the log cannot be read, the widening stays pending: the log check comes back."""
        widening = self._widening
        if widening is None:
            return
        wide, shard, head = widening
        try:
            missing = await _log_between(wide.last_id or 0, head, shard)
        except Exception:
            logger.exception("event hub could not read the log while widening; repairing later")
            metrics.LAYER_ERRORS.labels(op="repair").inc()
            return
        if self._widening is not widening:
            return  # a concurrent repair finished it, or what it hears changed meanwhile
        self._widening = None
        held, self._held = self._held, []
        batch = self._batch
        wide.rebase(missing, head, batch)
        gap = False
        for event in held:  # those up to the head are dropped as already delivered
            gap = wide.accept(event, batch) or gap
        if gap and not self._repair_scheduled:
            self._repair_scheduled = True
            self.loop.call_later(settings.WS_GAP_WAIT, self._schedule_repair)
        self._schedule_offer()

    async def _baseline(self, read: Callable[[], Awaitable[int]]) -> int | None:
        """The log head to start delivering after, read again every WS_GAP_CHECK_INTERVAL until
        the log answers; None if the hub stops meanwhile. Never a guess: a baseline below the
        head would deliver the log's history to its sockets as live events (gap repair reads
        from the baseline up), one above it would skip events. Its sockets wait for it (they
        wait for `settled`); their own auth needs the database too."""
        failures = 0
        while not self._stopping:
            try:
                head = int(await read())
            except Exception as exc:
                metrics.LAYER_ERRORS.labels(op="check").inc()
                if not failures:
                    logger.warning(
                        "event hub could not read the log head (%s); retrying every %.1f s",
                        type(exc).__name__,
                        settings.WS_GAP_CHECK_INTERVAL,
                    )
                failures += 1
                await asyncio.sleep(settings.WS_GAP_CHECK_INTERVAL)
                continue
            if failures:
                logger.warning("event hub read the log head after %d failed attempts", failures)
            return head
        return None

    async def _join(self, wanted: Any) -> None:
        if self.layer is None or self.channel is None:
            return
        for shard in wanted:
            if shard in self._joined:
                continue
            try:
                await self.layer.group_add(transport.group(shard), self.channel)
            except Exception as exc:
                # Delivered from the log by the periodic check until a later join works.
                self._join_outage.failed(exc)
                continue
            self._join_outage.succeeded()
            self._joined.add(shard)

    async def _leave_unheard(self) -> None:
        hearing = self._hearing
        if self.layer is None or self.channel is None:
            return
        for shard in tuple(self._joined):
            if hearing == EVERY_SHARD or shard == hearing:
                continue
            self._joined.discard(shard)
            try:
                await self.layer.group_discard(transport.group(shard), self.channel)
            except Exception:
                metrics.LAYER_ERRORS.labels(op="leave").inc()
                logger.exception("event hub: leaving a shard group failed")

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
        self.layer_received += 1
        chain = self._chain
        hearing = self._hearing
        if chain is None or (hearing != EVERY_SHARD and event.shard != hearing):
            # In flight when it stopped hearing that shard: no socket here may want it.
            self.unwanted += 1
            return
        if self._widening is not None:
            self._held.append(event)  # until the log's chain has its baseline (_finish_widening)
            return
        if chain.accept(event, self._batch) and not self._repair_scheduled:
            self._repair_scheduled = True
            self.loop.call_later(settings.WS_GAP_WAIT, self._schedule_repair)
        if self._batch and not self._batch_scheduled:
            self._batch_scheduled = True
            self.loop.call_soon(self._offer_batch)

    def _schedule_offer(self) -> None:
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
        gap = self._chain.gap() if self._chain is not None else None
        if gap is not None and not self._stopping:
            task = self.loop.create_task(self._repair(gap[1]))
            self._tasks.append(task)
            task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[Any]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)

    async def _repair(self, upto: int | None) -> None:
        """Read what the layer lost from the log (of the shard it hears, or all) and deliver
        it, in order."""
        if self._widening is not None:
            await self._finish_widening()  # what is missing is the shard it heard, up to the head
            return
        chain, hearing = self._chain, self._hearing
        if chain is None or chain.last_id is None:
            return
        start = chain.last_id
        try:
            missing = await _log_between(start, upto, None if hearing == EVERY_SHARD else hearing)
        except Exception:
            logger.exception("event hub could not read the log to repair a gap")
            metrics.LAYER_ERRORS.labels(op="repair").inc()
            return
        if self._chain is not chain:
            return  # it widened or narrowed meanwhile: the new chain repairs for itself
        repaired = chain.merge_repair(missing, self._batch)
        self._schedule_offer()
        if chain.gap() is not None and not self._repair_scheduled:
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
            chain, hearing = self._chain, self._hearing
            if chain is None or chain.last_id is None or hearing is None:
                continue  # hears nothing: a socket that needs something sets a fresh baseline
            try:
                if hearing == EVERY_SHARD:
                    await self._join(range(shards.count()))  # retry a join that failed
                    head = await _log_head()
                else:
                    await self._join((hearing,))
                    head = await _shard_head(hearing)
                seen = chain.last_id
                if head > seen:
                    await asyncio.sleep(settings.WS_GAP_WAIT)
                    if self._chain is chain and chain.last_id == seen:
                        # Nothing arrived meanwhile: the tail was lost.
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
            ("layer_received", metrics.LAYER_EVENTS_RECEIVED),
            ("unwanted", metrics.LAYER_EVENTS_UNWANTED),
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
