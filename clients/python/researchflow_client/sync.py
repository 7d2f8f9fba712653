"""`follow()`: `RunEvents` for synchronous code (scripts, workers, a notebook cell).

    with follow("ws://localhost:3001/ws", token=token, run_id=run_id) as events:
        for event in events:
            ...

Decision: a background thread runs an event loop with the async client in it, and each
`next()` waits for the loop's next event. So there is one implementation of reconnect,
resume and heartbeat (the async one), and the heartbeat keeps running while the caller's
code is busy with an event. websockets' sync client would have needed a second copy of all
of that. The thread is a daemon and is stopped by leaving the `with` block (or `close()`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

from .client import RunEvents
from .events import Event
from .snapshot import RunSnapshot, load_run

T = TypeVar("T")


class Follow:
    """The synchronous iterator `follow()` returns; `last_event_id` as on `RunEvents`."""

    def __init__(self, url: str, **options: Any) -> None:
        self._url = url
        self._options = options
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._events: RunEvents | None = None

    @property
    def last_event_id(self) -> int | None:
        return self._events.last_event_id if self._events is not None else None

    def __enter__(self) -> Follow:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name="researchflow-client", daemon=True
        )
        self._thread.start()
        try:
            # Built in the loop's thread: its queue belongs to that loop.
            self._events = self._call(_make(self._url, self._options))
            self._call(self._events.__aenter__())
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        if self._events is None:
            raise RuntimeError("use `with follow(...) as events:` before iterating")
        try:
            return self._call(self._events.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def load_run(self, timeout: float = 10.0) -> RunSnapshot:
        """The run's current state over the REST API (see `RunEvents.load_run`): what to do on
        `ResyncRequired`, before iterating on for the live events."""
        run_id = self._options.get("run_id")
        if run_id is None:
            raise ValueError("load_run() is for a stream of one run (run_id=)")
        return load_run(
            self._url,
            token=self._options.get("token", ""),
            run_id=run_id,
            ssl=self._options.get("ssl"),
            timeout=timeout,
        )

    def close(self) -> None:
        """Close the socket and stop the background thread. Idempotent."""
        loop, thread, events = self._loop, self._thread, self._events
        self._loop = self._thread = None
        if loop is None:
            return
        if events is not None:
            asyncio.run_coroutine_threadsafe(events.aclose(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(10)
        loop.close()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coroutine.close()
            raise RuntimeError("this follow() was closed")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # Ctrl-C while waiting: do not leave the coroutine running
            raise


async def _make(url: str, options: dict[str, Any]) -> RunEvents:
    return RunEvents(url, **options)


def follow(url: str, **options: Any) -> Follow:
    """Synchronous `RunEvents(url, **options)`; use it as `with follow(...) as events:`.
    The keywords are `RunEvents`'; errors are the same exceptions."""
    return Follow(url, **options)
