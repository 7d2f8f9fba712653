"""Graceful shutdown: on SIGTERM, every socket gets its queued frames, then close 1001.

What the servers do on their own (measured, see docs/operations.md):

- uvicorn stops accepting, then fails every open WebSocket with 1012 at once (queued frames
  lost), and only *then* sends the ASGI lifespan "shutdown" event: a lifespan handler runs too
  late to close anything politely.
- daphne's Twisted reactor cancels every application instance and drops the TCP connections
  without a close frame (the client sees 1006).

So instead of a lifespan handler we chain in front of the server's own signal handler. At the
first socket (`Hub._start`) we replace the SIGTERM/SIGINT handler the server installed
(uvicorn's `Server.handle_exit`, Twisted's `sigTerm`/`sigInt`) with ours. On the signal we
ask every hub to drain — each socket flushes its queue and closes with 1001 (going away) —
and when they are done (or after `WS_SHUTDOWN_TIMEOUT`) we call the server's handler, which
then shuts down as usual with no WebSocket left to cut. The client reconnects to another
worker and resumes from the last id it received, so nothing is lost either way; 1001 just
makes the reconnect immediate and the log quiet.

This works whichever way the server was started (`manage.py serve`, `uvicorn …`,
`daphne …`), because it needs nothing from the command line. When no server handler is
installed (a test run, a plain script) nothing is replaced. A second signal during the
drain skips the wait.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import signal
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Protocol

from django.conf import settings

from events import metrics

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)

_lock = threading.Lock()
_count_lock = threading.Lock()
_installed = False
_draining = False
_previous: dict[int, Callable[[int, FrameType | None], object]] = {}


class Drainable(Protocol):
    """What shutdown needs of a hub: its loop, and a drain that returns the sockets left."""

    loop: asyncio.AbstractEventLoop

    async def drain(self, grace: float) -> int: ...


def _no_hubs() -> Sequence[Drainable]:
    return []


# Set by install(): the hubs running in this process. Given, not imported, so that this module
# stays below the hub (the hub installs the handler; shutdown never imports the hub).
_running: Callable[[], Sequence[Drainable]] = _no_hubs


def draining() -> bool:
    """True from the shutdown signal on: /readyz answers 503 so balancers stop routing here."""
    return _draining


def install(running: Callable[[], Sequence[Drainable]]) -> None:
    """Put our handler in front of the server's SIGTERM/SIGINT handlers (once per process).

    Only from the main thread (the only one that may set handlers; both servers run their loop
    there) and only over a handler the server installed: Python's defaults mean no server
    is managing shutdown, and replacing them would only change how a script or test dies.
    """
    global _installed, _running
    _running = running
    with _lock:
        if _installed or threading.current_thread() is not threading.main_thread():
            return
        _installed = True
        for sig in SIGNALS:
            previous = signal.getsignal(sig)
            if not callable(previous) or previous is signal.default_int_handler:
                continue
            _previous[sig] = previous
            signal.signal(sig, _on_signal)
        if _previous:
            logger.debug("graceful WebSocket shutdown armed for %s", sorted(_previous))


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """Runs in the main thread between bytecodes: only schedule work, never block."""
    global _draining
    hubs = _running()
    if _draining or not hubs:
        _chain(signum)  # nothing to drain, or a second signal: the server's shutdown, now
        return
    _draining = True
    logger.info("signal %d: closing WebSockets with 1001 before the server shuts down", signum)
    futures = [asyncio.run_coroutine_threadsafe(_drain(hub), hub.loop) for hub in hubs]
    remaining = [len(futures)]

    def one_done(_future: concurrent.futures.Future[None]) -> None:
        with _count_lock:  # hubs on several loops finish on several threads
            remaining[0] -= 1
            last = remaining[0] == 0
        if last:
            metrics.mark_this_process_dead()
            _chain(signum)

    for future in futures:
        future.add_done_callback(one_done)


def _chain(signum: int) -> None:
    previous = _previous.get(signum)
    if previous is not None:
        # The frame argument is unused by both servers; the original one is stale by now.
        previous(signum, None)


async def _drain(hub: Drainable) -> None:
    try:
        left = await hub.drain(settings.WS_SHUTDOWN_TIMEOUT)
    except Exception:
        logger.exception("graceful shutdown: draining a hub failed; the server closes the rest")
        return
    if left:
        metrics.SHUTDOWN_SOCKETS_LEFT.inc(left)
        logger.warning(
            "graceful shutdown: %d socket(s) still open after %.1fs; the server drops them",
            left,
            settings.WS_SHUTDOWN_TIMEOUT,
        )


async def drain_all(grace: float | None = None) -> int:
    """Drain the hubs of the running loop (tests, or an embedding server's own shutdown hook).
    Returns the number of sockets still open at the timeout."""
    global _draining
    _draining = True
    loop = asyncio.get_running_loop()
    left = 0
    for hub in _running():
        if hub.loop is loop:
            left += await hub.drain(settings.WS_SHUTDOWN_TIMEOUT if grace is None else grace)
    return left


def reset_for_tests() -> None:
    """Forget a drain (tests run many "servers" in one process)."""
    global _draining
    _draining = False
