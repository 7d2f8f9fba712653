"""Shared by the transport tests: a loop in a thread, a recording sink and socket, event chains."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from events.gateway.hub import Hub
from events.gateway.transport import hand_off
from events.record import LoggedEvent


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


class LoopThread:
    """An event loop running in its own thread, like a server's."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        wait_until(self.loop.is_running)

    def call(self, fn: Callable[[], Any]) -> Any:
        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(5)

    def stop(self) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()


class Sink:
    """A hand-off sink that records what it was given, in how many batches, on which threads."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.batches = 0
        self.threads: set[int] = set()

    def __call__(self, batch: list[dict[str, Any]]) -> None:
        self.batches += 1
        self.threads.add(threading.get_ident())
        self.items.extend(batch)

    @property
    def seqs(self) -> list[int]:
        return [m["seq"] for m in self.items]


class Collecting:
    """A socket as the hub sees it (the `Subscriber` protocol) that records the ids offered."""

    def __init__(self) -> None:
        self.user_id: int | None = None
        self.visible_projects: frozenset[str] | None = None  # every project, like staff
        self.ids: list[int] = []

    def offer(self, event: LoggedEvent, message: dict[str, Any] | None = None) -> None:
        self.ids.append(event.id)

    def stats_snapshot(self) -> tuple[bool, frozenset[str]]:
        return True, frozenset()

    def credential_key(self) -> str | None:
        return None

    def apply_standing(self, standing: Any, valid_tokens: set[str]) -> None:
        pass

    def go_away(self) -> None:
        pass


def unpack(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The event messages in one layer message: itself, or the events of an "rf.batch"."""
    return message["events"] if message.get("type") == "rf.batch" else [message]


def chain(first: int, count: int) -> list[LoggedEvent]:
    """`count` events with consecutive ids from `first`, each linked to the one before."""
    return [
        LoggedEvent(
            id=i,
            prev_id=i - 1,
            type="stage.progress",
            project_id="prj_" + "p" * 20,
            run_id="run_" + "r" * 20,
            timestamp="2026-01-01T00:00:00.000Z",
            payload={},
            frame="{}",
        )
        for i in range(first, first + count)
    ]


async def hand_off_from_a_thread(events: list[LoggedEvent]) -> None:
    """Hand the events off from another thread, as on_commit runs in a request thread, and
    give the loop a moment to take what it takes at once."""

    def commit_all() -> None:
        for event in events:
            hand_off(event)

    await asyncio.to_thread(commit_all)
    await asyncio.sleep(0.05)


async def started_hub() -> tuple[Hub, Collecting]:
    hub = Hub.for_loop()
    await hub.ready()
    sub = Collecting()
    hub.add(sub)
    await hub.settled()  # a staff-like socket: the hub now hears every shard
    return hub, sub
