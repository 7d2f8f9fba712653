"""Helpers for driving `/ws` with Channels' WebsocketCommunicator against the real ASGI app."""

from __future__ import annotations

import asyncio
from typing import Any

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import Client

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


async def settle(seconds: float = 0.05) -> None:
    await asyncio.sleep(seconds)


ALL_CATEGORIES = ["RUN_EVENTS", "STAGE_EVENTS", "ARTIFACT_EVENTS", "GOVERNANCE_EVENTS"]


class Gate:
    """Wraps the ASGI app so a test decides when socket writes go out (a slow client) and
    whether the server refuses them (`refuse`: a peer that has gone, as uvicorn's send raises
    ClientDisconnected)."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.open.set()
        self.refuse = False

    async def app(self, scope: Any, receive: Any, send: Any) -> Any:
        async def gated_send(message: dict[str, Any]) -> None:
            if message["type"] == "websocket.send":
                await self.open.wait()
                if self.refuse:
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
