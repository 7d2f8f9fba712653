"""Committed events onto the channel layer and off it: one group per shard of projects
(`group(shard)`, events/shards.py); each hub hears the shards of the projects its sockets may
see (hub.py subscribes and unsubscribes).

Out: the bus calls `hand_off` on commit, in commit order, from whatever thread committed. In a
server process the event goes out through a hub's own loop (`HubSender`: it owns the layer's
connections there); elsewhere (a management command, the demo runner) through a private
thread (`BackgroundSender`), and only when a shared (Redis) layer exists: the in-memory layer
has no listener outside this process. Either way a `HandOff` carries the events from the
committing thread onto the loop, and events of one shard waiting together travel as one
layer message to that shard's group (`rf.batch`, up to `BATCH_MAX`).

In: `receive_loop` hands each event of each layer message to the hub, once per process.

What must stay true: each shard's events reach the layer in commit order (one send at a time
per sender; the hand-off keeps submission order; a run split by shard keeps each shard's
order), and an event handed off is never silently swallowed by
a sender that stopped: it is sent, or routed another way. A lost layer message costs latency,
not the event: every hub repairs gaps from the log (`ordering.py`, `hub.py`).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import multiprocessing.util
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from channels.layers import BaseChannelLayer, get_channel_layer
from django.conf import settings

from events import metrics, stamper
from events.record import LoggedEvent

logger = logging.getLogger(__name__)

GROUP = "researchflow.events"


def group(shard: int) -> str:
    """The layer group of one shard (channels allows ASCII letters, digits, "-", "_", ".")."""
    name = _GROUPS.get(shard)
    if name is None:
        name = _GROUPS[shard] = f"{GROUP}.{shard}"
    return name


_GROUPS: dict[int, str] = {}  # built once per shard, not per send
# Events per layer message when several are waiting to go: with Redis each layer message is a
# PUBLISH round trip, so a run of events travels as one "rf.batch": the rate one process can
# hand to the others must not be capped by round trips.
BATCH_MAX = 100
# How long a hand-off buffer collects events before the loop takes them (the first event of a
# burst goes at once): one loop wake-up per interval, not per event, keeps the publishing
# thread and the loop thread from ping-ponging for the GIL. The most latency a busy publisher
# adds.
HAND_OFF_INTERVAL = 0.001
# At hub stop, how long its sender may spend publishing what is still queued.
SHUTDOWN_SEND_TIMEOUT = 2.0
# At interpreter exit, how long the background sender may spend publishing what is still
# queued: a worker script's last events reach sockets now rather than at the servers' next log
# check (WS_GAP_CHECK_INTERVAL), and a Redis that is down delays the exit by at most this.
EXIT_FLUSH_TIMEOUT = 5.0


def layer_message(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """One channel-layer message for a run of event messages (in commit order)."""
    if len(messages) == 1:
        return messages[0]
    return {"type": "rf.batch", "events": messages}


def by_shard(messages: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(group, layer message) for a run of event messages: one per shard present, each with
    that shard's events in commit order. A run of one shard (the common case) stays one list."""
    shard = messages[0].get("s", 0)
    for message in messages:
        if message.get("s", 0) != shard:
            break
    else:
        return [(group(shard), layer_message(messages))]
    runs: dict[int, list[dict[str, Any]]] = {}
    for message in messages:
        runs.setdefault(message.get("s", 0), []).append(message)
    return [(group(s), layer_message(run)) for s, run in runs.items()]


class Outage:
    """One failing channel-layer operation (a sender's sends, a receive loop's receives):
    a run of failures is logged once when it starts (WARNING, the exception's type; the
    traceback only with DEBUG logging) and once when it ends (how many failed, for how long);
    every failure is counted in `researchflow_channel_layer_errors_total`. A Redis outage at
    50 events/s must cost two log lines, not a traceback per attempt. Failures cost latency,
    not events: the hubs repair from the log.

    Used from one thread (its loop's) at a time."""

    __slots__ = ("_failures", "_op", "_since", "_what")

    def __init__(self, what: str, op: str) -> None:
        self._what = what
        self._op = op
        self._failures = 0
        self._since = 0.0

    @property
    def failing(self) -> bool:
        return self._failures > 0

    def failed(self, exc: BaseException) -> None:
        metrics.LAYER_ERRORS.labels(op=self._op).inc()
        self._failures += 1
        debug = logger.isEnabledFor(logging.DEBUG)
        if self._failures == 1:
            self._since = time.monotonic()
            logger.warning(
                "%s: channel layer %s failing (%s); hubs repair from the log; counting "
                "failures until it recovers",
                self._what,
                self._op,
                type(exc).__name__,
                exc_info=exc if debug else None,
            )
        elif debug:
            logger.debug("%s: channel layer %s failed again", self._what, self._op, exc_info=exc)

    def succeeded(self) -> None:
        if self._failures:
            logger.warning(
                "%s: channel layer %s recovered after %d failed attempt(s) over %.1fs",
                self._what,
                self._op,
                self._failures,
                time.monotonic() - self._since,
            )
            self._failures = 0


# --- out: from the committing thread to the layer ---------------------------------------------


def hand_off(record: LoggedEvent) -> None:
    """The bus's sink, on commit (any thread): get the event to every process's hub."""
    _route(record.to_message())


def _route(message: dict[str, Any]) -> None:
    sender = _sender_for_publish()
    if sender is not None:
        if sender.layer is None:
            return
        if sender.submit(message):
            return
        # That sender retired between the look-up and submit(): as if there had been none.
    if settings.REDIS_URL:
        _background_sender().submit(message)


class HandOff:
    """Carries layer messages from any thread onto one event loop, in submission order.

    `submit` appends to a buffer under a lock (the order of submit calls is the order the
    loop sees) and wakes the loop only when it is not already armed. The loop then forwards
    the buffer to `sink` now and every HAND_OFF_INTERVAL while events keep coming, and stops
    ticking after an interval with none. `sink` runs on the loop with each batch, in order.
    """

    __slots__ = ("_armed", "_buffer", "_closed", "_lock", "_loop", "_sink", "_timer")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sink: Callable[[list[dict[str, Any]]], None]
    ) -> None:
        self._loop = loop
        self._sink = sink
        self._lock = threading.Lock()
        self._buffer: list[dict[str, Any]] = []
        self._armed = False  # a forward is scheduled or ticking: no need to wake the loop
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
            # The loop closed under us: nothing will forward this buffer any more.
            for stranded in self.close():
                _route(stranded)
        return True

    def _start(self) -> None:
        if self._timer is not None or self._closed:
            return
        self.forward()
        if not self._closed:  # the sink may have closed it (a sender that retired)
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

    def forward(self) -> None:
        """On the loop thread: give the sink everything buffered now, not at the next tick."""
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


class HubSender:
    """Publishes the events committed in this process through one hub's loop, in commit
    order: hand-off → outbox → one layer message per waiting run, one send at a time.

    One send at a time on purpose: concurrent sends could reorder events, and with Redis
    pub/sub they queue on one lock per shard anyway.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, layer: BaseChannelLayer | None) -> None:
        self.loop = loop
        self.layer = layer
        self.retired = False
        self._outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._handoff = HandOff(loop, self.enqueue_batch)
        self._outage = Outage("event hub", "send")
        _register(self)

    def submit(self, message: dict[str, Any]) -> bool:
        """Any thread. False once this sender stopped taking events (route it elsewhere)."""
        return self._handoff.submit(message)

    def retire(self) -> None:
        """On the loop thread, when the hub starts stopping: from now on hand-offs that reach
        this sender are routed as if it did not exist (its send loop may be gone already)."""
        self.retired = True

    def enqueue_batch(self, messages: list[dict[str, Any]]) -> None:
        """On the loop thread, with a hand-off batch in commit order."""
        if self.layer is None:
            return
        if self.retired:
            # The send loop may already be gone (or was cancelled before it ever ran, so its
            # final send never runs): route these, and whatever is still buffered behind them,
            # as if this sender did not exist.
            for message in [*messages, *self._handoff.close()]:
                _route(message)
            return
        for message in messages:
            self._outbox.put_nowait(message)

    async def send_loop(self) -> None:
        """Publish what waits in the outbox as one layer message (up to BATCH_MAX events)."""
        unsent: list[dict[str, Any]] = []  # taken from the outbox, not yet through the layer
        try:
            while True:
                unsent = [await self._outbox.get()]
                while len(unsent) < BATCH_MAX and not self._outbox.empty():
                    unsent.append(self._outbox.get_nowait())
                for name, message in by_shard(unsent):
                    await self._send(name, message)
                unsent = []
        finally:
            # Cancelled (Hub.stop, or the server cancelling every task at shutdown): what the
            # bus already handed us still goes out, so no other process has to wait for its
            # log check to see it. An interrupted send goes again (hubs drop duplicates).
            await self._send_rest(unsent)

    async def _send(self, name: str, message: dict[str, Any]) -> None:
        assert self.layer is not None
        try:
            await self.layer.group_send(name, message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Every hub (ours included) repairs the gap from the log within an interval.
            self._outage.failed(exc)
        else:
            self._outage.succeeded()

    async def _send_rest(self, unsent: list[dict[str, Any]]) -> None:
        rest = list(unsent)
        while not self._outbox.empty():
            rest.append(self._outbox.get_nowait())
        # Closed, not forgotten: a hand_off racing with stop() finds it closed and sends its
        # event through the background sender instead of into this dead outbox.
        rest.extend(self._handoff.close())
        if not rest:
            return
        done = 0
        try:
            async with asyncio.timeout(SHUTDOWN_SEND_TIMEOUT):
                for start in range(0, len(rest), BATCH_MAX):
                    chunk = rest[start : start + BATCH_MAX]
                    for name, message in by_shard(chunk):
                        await self._send(name, message)
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


# Every hub's sender in this process, oldest first. One is enough to publish through: every
# hub (that one included) that wants a shard hears its group.
_hub_senders: weakref.WeakValueDictionary[int, HubSender] = weakref.WeakValueDictionary()
_registered = 0
_registry_lock = threading.Lock()
_last_sender: weakref.ref[HubSender] | None = None


def _register(sender: HubSender) -> None:
    global _registered
    with _registry_lock:
        _registered += 1
        _hub_senders[_registered] = sender


def _usable(sender: HubSender) -> bool:
    return not sender.retired and sender.loop.is_running() and not sender.loop.is_closed()


def _sender_for_publish() -> HubSender | None:
    """The sender used last while it stays usable (no list built per publish), else the
    oldest usable one, else None."""
    global _last_sender
    sender = _last_sender() if _last_sender is not None else None
    if sender is not None and _usable(sender):
        return sender
    for candidate in list(_hub_senders.values()):
        if _usable(candidate):
            _last_sender = weakref.ref(candidate)
            return candidate
    return None


class BackgroundSender:
    """A thread with its own loop, for publishing from code that has no server loop."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._queue: asyncio.Queue[dict[str, Any]] | None = None
        self._started = threading.Event()
        self._handoff = HandOff(self._loop, self._enqueue)
        self._thread = threading.Thread(target=self._run, name="event-sender", daemon=True)
        self._thread.start()
        self._started.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._queue = asyncio.Queue()
        self._loop.call_soon(self._started.set)
        self._loop.run_until_complete(self._send_loop())

    def _enqueue(self, batch: list[dict[str, Any]]) -> None:
        assert self._queue is not None
        for message in batch:
            self._queue.put_nowait(message)

    async def _send_loop(self) -> None:
        assert self._queue is not None
        layer = get_channel_layer()
        outage = Outage("background event sender", "send")
        while True:
            batch = [await self._queue.get()]
            while len(batch) < BATCH_MAX and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                if layer is not None:
                    for name, message in by_shard(batch):
                        await layer.group_send(name, message)
            except Exception as exc:
                outage.failed(exc)
            else:
                outage.succeeded()
            finally:
                for _ in batch:
                    self._queue.task_done()

    def submit(self, message: dict[str, Any]) -> None:
        self._handoff.submit(message)

    async def _flushed(self) -> None:
        assert self._queue is not None
        self._handoff.forward()  # don't wait for the next tick
        await self._queue.join()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything submitted so far was handed to the layer (for commands).
        False if that did not happen within `timeout`, or the sender's thread is gone (then
        nothing could send it: the servers' log check delivers it)."""
        if not self._thread.is_alive() or self._loop.is_closed():
            return False
        try:
            future = asyncio.run_coroutine_threadsafe(self._flushed(), self._loop)
        except RuntimeError:  # the loop closed meanwhile
            return False
        try:
            future.result(timeout)
        except Exception:
            future.cancel()
            return False
        return True


_sender: BackgroundSender | None = None
_sender_lock = threading.Lock()
_atexit_installed = False
_finalizer_pid = 0


def _background_sender() -> BackgroundSender:
    global _sender
    if _sender is None:
        with _sender_lock:  # two threads must not start two senders (order, and a leak)
            if _sender is None:
                _install_exit_hooks()
                _sender = BackgroundSender()
    return _sender


def flush_background_sender(timeout: float = 5.0) -> bool:
    """Wait until this process's committed events were handed to the layer: positioned first
    (PostgreSQL's stamper hands them to the sender), then sent. True when they were (or there
    was nothing to send). For worker pools whose children skip interpreter exit
    (docs/operations.md, "Publishing from workers")."""
    deadline = time.monotonic() + timeout
    stamped = stamper.flush(timeout)
    sender = _sender
    sent = sender is None or sender.flush(max(0.0, deadline - time.monotonic()))
    return stamped and sent


def _flush_at_exit() -> None:
    """atexit (and multiprocessing's exit finalizers): publish what is still queued, bounded.
    The sender's thread is a daemon, so at exit it still runs but would be stopped mid-queue;
    without this a script's last events wait for the servers' log check."""
    if not flush_background_sender(EXIT_FLUSH_TIMEOUT):
        metrics.LAYER_ERRORS.labels(op="send").inc()
        logger.warning(
            "background event sender: queued events not published within %.1fs at exit; "
            "servers deliver them from the log",
            EXIT_FLUSH_TIMEOUT,
        )


def _forget_sender_after_fork() -> None:
    # A forked child has the parent's sender object but not its thread: it starts its own on
    # its first publish. The lock may have been held by another thread at fork time.
    global _sender, _sender_lock
    _sender = None
    _sender_lock = threading.Lock()


def _install_exit_hooks() -> None:
    """With each process's first background sender (under _sender_lock)."""
    global _atexit_installed, _finalizer_pid
    if not _atexit_installed:  # once per interpreter; a forked child inherits it
        _atexit_installed = True
        atexit.register(_flush_at_exit)
        os.register_at_fork(after_in_child=_forget_sender_after_fork)
    if _finalizer_pid != os.getpid():
        # A multiprocessing child ends with os._exit after running its finalizers, skipping
        # atexit; its start clears the finalizers it inherited, so each process registers its
        # own. (A second flush in one process is harmless: nothing is left to send.)
        _finalizer_pid = os.getpid()
        multiprocessing.util.Finalize(None, _flush_at_exit, exitpriority=100)


# --- in: from the layer to the hub --------------------------------------------------------------


class Receiver(Protocol):
    """Where received events go (the hub)."""

    def accept(self, event: LoggedEvent) -> None: ...


# The receive side's failures in this process: the receive loop's own, and those channels-redis's
# pub/sub layer logs from its private receive task (_PubSubReceiveNoise). It recovers when a
# layer message arrives again.
_receive_outage = Outage("event hub", "receive")
_PUBSUB_LOGGER = "channels_redis.pubsub"
_PUBSUB_RECEIVE_FAILED = "Unexpected exception in receive task"


class _PubSubReceiveNoise(logging.Filter):
    """channels-redis's pub/sub layer retries its receive task once a second while Redis is
    down and logs a traceback each time (logger.exception): fold those into `_receive_outage`
    (one warning per outage, a count in metrics). Its other records pass untouched, and with
    DEBUG logging on this module so do these."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != _PUBSUB_RECEIVE_FAILED or logger.isEnabledFor(logging.DEBUG):
            return True
        exc = record.exc_info[1] if record.exc_info else None
        _receive_outage.failed(exc if exc is not None else RuntimeError(record.msg))
        return False


_pubsub_noise = _PubSubReceiveNoise()


async def receive_loop(layer: BaseChannelLayer, channel: str, receiver: Receiver) -> None:
    """Give `receiver.accept` every event of every layer message on `channel`, in arrival
    order. A bad entry costs only itself (the hubs repair it from the log)."""
    logging.getLogger(_PUBSUB_LOGGER).addFilter(_pubsub_noise)  # idempotent
    outage = _receive_outage
    while True:
        try:
            message = await layer.receive(channel)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            outage.failed(exc)
            await asyncio.sleep(0.5)
            continue
        if outage.failing:
            outage.succeeded()
        kind = message.get("type")
        if kind == "rf.event":
            _accept_message(receiver, message)
        elif kind == "rf.batch":
            events = message.get("events")
            for event in events if isinstance(events, list) else ():
                _accept_message(receiver, event)


def _accept_message(receiver: Receiver, message: Any) -> None:
    try:
        receiver.accept(LoggedEvent.from_message(message))
    except Exception:
        logger.exception("event hub: bad layer message dropped (repaired from log)")
