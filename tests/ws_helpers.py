"""Helpers for driving `/ws` with Channels' WebsocketCommunicator against the real ASGI app."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import Client
from prometheus_client import REGISTRY

from events import log
from events.gateway.hub import Hub
from researchflow.asgi import application

# What a browser on http://localhost sends: the server's own origin (events/gateway/security.py).
HOST = (b"host", b"localhost")
ORIGIN = (b"origin", b"http://localhost")


async def session_cookie(user: User) -> bytes:
    return await db(_session_cookie)(user)


def _session_cookie(user: User) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def open_socket(
    *,
    origin: bytes | None = b"http://localhost",
    cookie: bytes | None = None,
    host: bytes = b"localhost",
) -> tuple[WebsocketCommunicator, dict[str, Any]]:
    headers = [(b"host", host)]
    if origin is not None:
        headers.append((b"origin", origin))
    if cookie is not None:
        headers.append((b"cookie", cookie))
    comm = WebsocketCommunicator(application, "/ws", headers=headers)
    connected, _ = await comm.connect(timeout=5)
    assert connected
    established = await comm.receive_json_from(timeout=5)
    assert established["type"] == "connection.established"
    return comm, established


async def send(comm: WebsocketCommunicator, msg_type: str, **payload: Any) -> None:
    await comm.send_json_to({"type": msg_type, "payload": payload})


async def request(comm: WebsocketCommunicator, msg_type: str, **payload: Any) -> dict[str, Any]:
    await send(comm, msg_type, **payload)
    reply: dict[str, Any] = await comm.receive_json_from(timeout=5)
    return reply


def token_for(user: User) -> str:
    from rest_framework.authtoken.models import Token

    return Token.objects.get_or_create(user=user)[0].key


async def authed_socket(
    user: User, *, types: list[str] | None = None, categories: list[str] | None = None, **auth: Any
) -> WebsocketCommunicator:
    comm, _ = await open_socket()
    payload: dict[str, Any] = {"token": await db(token_for)(user), **auth}
    if types is not None:
        payload["eventTypes"] = types
    if categories is not None:
        payload["eventCategories"] = categories
    reply = await request(comm, "auth", **payload)
    assert reply["type"] == "auth.success", reply
    return comm


async def receive_events(
    comm: WebsocketCommunicator, count: int, timeout: float = 5
) -> list[dict[str, Any]]:
    events = []
    while len(events) < count:
        msg = await comm.receive_json_from(timeout=timeout)
        if "id" in msg:
            events.append(msg)
    return events


def db(fn: Any) -> Any:
    return database_sync_to_async(fn)


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float = 5,
    *,
    what: str = "the condition",
    interval: float = 0.005,
) -> None:
    """Return as soon as `predicate()` (sync or async) is true; fail the test after `timeout`
    seconds. Tests wait for the effect they need, never for a fixed time: a fixed sleep is
    either too short on a loaded machine (flaky) or longer than needed (slow)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def metric(name: str, labels: dict[str, str] | None = None) -> float:
    """A series' current value in this process (0 when it has none yet)."""
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def holds(predicate: Callable[[], bool], duration: float) -> bool:
    """True if `predicate()` stays true for `duration` seconds: for a test that something
    does NOT happen (the socket twin is channels' `receive_nothing`). `duration` is how long
    the test gives the wrong behaviour to show itself; each use says why it is enough."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration
    while loop.time() < deadline:
        if not predicate():
            return False
        await asyncio.sleep(0.005)
    return bool(predicate())


def the_hub() -> Hub:
    """This process's one running hub (the tests' sockets all share the test's loop)."""
    (hub,) = Hub.running()
    return hub


async def offered_everything_logged(timeout: float = 5) -> Hub:
    """Wait until the hub has taken in every event in the log and offered it to its sockets
    (each socket has sent it, queued it, coalesced it or filtered it out).

    Observed through public surfaces: the log's head and the hub's `lastEventId` (its stats).
    The hub offers what it took in at the end of the loop turn that took it in (a callback
    scheduled with call_soon then); the `sleep(0)` after the condition is met resumes this
    task only after that callback has run.
    """
    head = await db(log.head)()
    await wait_until(
        lambda: (the_hub().stats()["lastEventId"] or 0) >= head,
        timeout,
        what=f"the hub to take in event {head}",
    )
    await asyncio.sleep(0)
    return the_hub()


ALL_CATEGORIES = ["RUN_EVENTS", "STAGE_EVENTS", "ARTIFACT_EVENTS", "GOVERNANCE_EVENTS"]


class Gate:
    """Wraps the ASGI app so a test decides when socket writes go out (a slow client) and
    whether the server refuses them (`refuse`: a peer that has gone, as uvicorn's send raises
    ClientDisconnected).

    What the server side of the gate saw, for tests to wait on: `stalled` writes suspended at
    the shut gate now, `cancelled` writes whose task was cancelled while suspended there,
    `refused` frames refused."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.open.set()
        self.refuse = False
        self.stalled = 0
        self.cancelled = 0
        self.refused = 0

    async def app(self, scope: Any, receive: Any, send: Any) -> Any:
        async def gated_send(message: dict[str, Any]) -> None:
            if message["type"] == "websocket.send":
                if not self.open.is_set():
                    self.stalled += 1
                    try:
                        await self.open.wait()
                    except asyncio.CancelledError:
                        self.cancelled += 1
                        raise
                    finally:
                        self.stalled -= 1
                if self.refuse:
                    self.refused += 1
                    raise OSError("client disconnected")
            await send(message)

        return await application(scope, receive, gated_send)


async def gated_socket(gate: Gate, user: User) -> WebsocketCommunicator:
    """An authenticated socket, subscribed to everything, whose writes the gate controls."""
    comm = WebsocketCommunicator(gate.app, "/ws", headers=[HOST, ORIGIN])
    assert (await comm.connect(timeout=5))[0]
    await comm.receive_json_from(timeout=5)
    await send(comm, "auth", token=await db(token_for)(user), eventCategories=ALL_CATEGORIES)
    assert (await comm.receive_json_from(timeout=5))["type"] == "auth.success"
    return comm
