"""PostgreSQL: this process's committed events get their log positions off the committing
thread, many per stamping.

A writer's transaction on PostgreSQL logs its event rows unpositioned (events/sequencer.py
says why). Right after commit the bus hands each record here and returns: the change's
caller does not wait for a second transaction. One thread per process stamps everything
handed to it so far in one `sequencer.stamp()` (which positions every committed row waiting,
this process's and others'), gives each record its position and frame, and delivers them, in
position order, to the bus's sinks and subscribers. Under load the records that pile up
while one stamping runs go together in the next, so the stamping's round trip, lock, commit
and WAL flush are paid per batch, not per event.

What must stay true:
- Delivery order is position order, within a batch and across batches (one thread; each
  stamping's positions are above the previous one's).
- A record handed over is delivered or left to the log: if stamping keeps failing (the
  database is down) the records are dropped after `RETRY_FOR` seconds with one warning, and
  the hubs' periodic log check stamps and delivers them (events/gateway/hub.py). Nothing here
  can lose an event from the log: its row committed before it was handed over.
- `flush()` returns once everything handed over before the call has been delivered (or
  dropped as above): read-your-writes for code that needs a position now, and the exit path.
- A forked child starts with no stamper and no pending records (they are its parent's).
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing.util
import os
import threading
import time
from collections.abc import Callable

from django.db import connections

from . import sequencer
from .record import LoggedEvent, encode_frame

logger = logging.getLogger(__name__)

Deliver = Callable[[LoggedEvent], None]

# How long a batch is retried while the stamping fails, and the wait between attempts.
RETRY_FOR = 5.0
RETRY_DELAY = 0.05
# At interpreter exit: how long the last records may take to be stamped and delivered.
EXIT_FLUSH_TIMEOUT = 5.0


class Stamper:
    """One stamping thread for this process, started on first use."""

    def __init__(self, deliver: Deliver, using: str = "default") -> None:
        self._deliver = deliver
        self._using = using
        self._cond = threading.Condition(threading.Lock())
        self._pending: list[LoggedEvent] = []
        self._submitted = 0  # records handed over, ever
        self._finished = 0  # records delivered or dropped, ever
        self._thread: threading.Thread | None = None

    def submit(self, record: LoggedEvent) -> None:
        """Any thread, after the record's transaction committed."""
        with self._cond:
            self._ensure_thread()
            self._pending.append(record)
            self._submitted += 1
            self._cond.notify_all()

    def flush(self, timeout: float = EXIT_FLUSH_TIMEOUT) -> bool:
        """Wait until every record submitted before this call was delivered (or dropped).
        False on timeout. From the stamping thread itself (a subscriber calling it) it
        returns at once: waiting there would wait for itself."""
        if threading.current_thread() is self._thread:
            return True
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._submitted
            while self._finished < target:
                left = deadline - time.monotonic()
                if left <= 0 or not self._alive():
                    return self._finished >= target
                self._cond.wait(left)
        return True

    # --- the stamping thread -----------------------------------------------------------------

    def _alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _ensure_thread(self) -> None:
        # Under self._cond.
        if self._alive():
            return
        self._thread = threading.Thread(target=self._run, name="event-stamper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._pending:
                        self._cond.wait()
                    batch, self._pending = self._pending, []
                try:
                    self._stamp_and_deliver(batch)
                finally:
                    with self._cond:
                        self._finished += len(batch)
                        self._cond.notify_all()
        finally:
            connections[self._using].close()

    def _stamp_and_deliver(self, batch: list[LoggedEvent]) -> None:
        positions = self._stamp([record.pk for record in batch])
        if positions is None:
            return
        stamped = []
        for record in batch:
            found = positions.get(record.pk)
            if found is None:
                # Not in the log: its savepoint rolled back after it was logged.
                continue
            position, record.shard_prev = found
            record.id, record.prev_id = position, position - 1
            record.frame = encode_frame(position, record.type, record.timestamp, record.payload)
            stamped.append(record)
        stamped.sort(key=lambda r: r.id)
        for record in stamped:
            self._deliver(record)

    def _stamp(self, pks: list[int]) -> dict[int, tuple[int, int | None]] | None:
        deadline = time.monotonic() + RETRY_FOR
        failures = 0
        while True:
            try:
                positions = sequencer.stamp(pks, using=self._using)
            except Exception as exc:
                failures += 1
                connections[self._using].close()  # reconnect on the next attempt
                if time.monotonic() >= deadline:
                    logger.warning(
                        "event stamper: %d event(s) not positioned after %d attempt(s) (%s); "
                        "the servers' log check positions and delivers them",
                        len(pks),
                        failures,
                        type(exc).__name__,
                    )
                    return None
                time.sleep(RETRY_DELAY)
                continue
            if failures:
                logger.warning("event stamper: stamping recovered after %d failure(s)", failures)
            return positions


_stamper: Stamper | None = None
_stamper_lock = threading.Lock()
_exit_hooks_pid = 0


def stamper(deliver: Deliver) -> Stamper:
    """This process's stamper (created on first use, delivering to `deliver`)."""
    global _stamper, _exit_hooks_pid
    if _stamper is None:
        with _stamper_lock:
            if _stamper is None:
                if _exit_hooks_pid == 0:
                    atexit.register(_flush_at_exit)
                    os.register_at_fork(after_in_child=_forget_after_fork)
                if _exit_hooks_pid != os.getpid():
                    # A multiprocessing child ends with os._exit after its finalizers,
                    # skipping atexit; each process registers its own.
                    _exit_hooks_pid = os.getpid()
                    multiprocessing.util.Finalize(None, _flush_at_exit, exitpriority=110)
                _stamper = Stamper(deliver)
    return _stamper


def _forget_after_fork() -> None:
    # The child has the parent's stamper object but not its thread, and its lock may have
    # been held at fork time; the parent's records are not the child's to deliver.
    global _stamper, _stamper_lock
    _stamper = None
    _stamper_lock = threading.Lock()


def flush(timeout: float = EXIT_FLUSH_TIMEOUT) -> bool:
    """Wait until this process's committed events were stamped and delivered (True when they
    were, or there was nothing to stamp)."""
    current = _stamper
    return current is None or current.flush(timeout)


def _flush_at_exit() -> None:
    if not flush(EXIT_FLUSH_TIMEOUT):
        logger.warning(
            "event stamper: events not positioned within %.1fs at exit; the servers' log "
            "check positions and delivers them",
            EXIT_FLUSH_TIMEOUT,
        )
