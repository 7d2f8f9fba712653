"""Give each uvicorn WebSocket a lean receive queue and `writable` flag instead of an
asyncio.Queue and an asyncio.Event.

uvicorn's sans-I/O protocol makes, per connection, an `asyncio.Queue` (three deques and an
`asyncio.Event` with a fourth) for the messages to the app, and an `asyncio.Event` (a fifth
deque) for `writable`. An empty deque costs ~740 bytes, so an idle socket held ~3.7 KiB of
empty deques (docs/benchmarks.md, section 3): more than the whole consumer. What uvicorn uses
of them is small: `put_nowait`, `get`, `empty` of the queue, with one reader (the app's
`receive()`); `set`, `clear`, `is_set`, `wait` of the event. `LeanQueue` and `LeanFlag` do
exactly that, holding a deque only while messages wait and a future only while someone waits.

What must stay true (tests/test_ws_memory.py reads the source): uvicorn makes the queue and
the event in `__init__` and uses no other method of them than the above; `receive()` is
the queue's only reader.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from .versions import installs_once

WRITTEN_FOR = {"uvicorn": "0.54.0"}
CHECKED_BY = "tests/test_ws_memory.py"


class LeanQueue:
    """An unbounded FIFO with one reader at a time: the deque exists while items wait."""

    __slots__ = ("_getter", "_items")

    def __init__(self) -> None:
        self._items: deque[Any] | None = None
        self._getter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        items = self._items
        if items is None:
            items = self._items = deque()
        items.append(item)
        getter, self._getter = self._getter, None
        if getter is not None and not getter.done():
            getter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            if self._getter is not None and not self._getter.done():
                # Two readers would need a list of waiters; uvicorn has one (receive()).
                raise RuntimeError("LeanQueue.get(): another get() is already waiting")
            getter = self._getter = asyncio.get_running_loop().create_future()
            try:
                await getter
            finally:
                if self._getter is getter:
                    self._getter = None
        items = self._items
        item = items.popleft()
        if not items:
            self._items = None
        return item

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items) if self._items else 0


class LeanFlag:
    """asyncio.Event's `set`/`clear`/`is_set`/`wait`: the waiters exist while someone waits."""

    __slots__ = ("_value", "_waiters")

    def __init__(self, value: bool = False) -> None:
        self._value = value
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        self._value = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
                if not self._waiters:
                    self._waiters = None
        return True


@installs_once(WRITTEN_FOR, CHECKED_BY)
def install() -> None:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    original_init = WebSocketsSansIOProtocol.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.queue = LeanQueue()
        self.writable = LeanFlag(self.writable.is_set())

    WebSocketsSansIOProtocol.__init__ = __init__  # type: ignore[method-assign]
