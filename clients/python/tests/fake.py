"""A scripted `/ws` server on loopback (websockets' own server), for the client behaviours
the real app cannot be made to show on demand: a socket that goes silent, a close with a
given code, a replay that repeats ids, TLS. Each connection runs `script(conn, auth)`, after
the server sent `connection.established` and read the client's `auth` message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve

# This server's own frame log (DEBUG) would show the client's token: a test that reads the
# log must see only what the client logs.
server_logger = logging.getLogger("tests.fake_server")
server_logger.setLevel(logging.INFO)

Script = Callable[[ServerConnection, dict[str, Any]], Awaitable[None]]
RUN = "run_" + "a" * 20
PROJECT = "prj_" + "b" * 20


def stamp() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def frame(kind: str, payload: dict[str, Any], event_id: int | None = None) -> str:
    message: dict[str, Any] = {"type": kind, "timestamp": stamp(), "payload": payload}
    if event_id is not None:
        message["id"] = event_id
    return json.dumps(message)


def run_started(event_id: int) -> str:
    return frame(
        "run.started",
        {"runId": RUN, "projectId": PROJECT, "startedAt": stamp(), "estimatedDuration": None},
        event_id,
    )


class FakeServer:
    def __init__(self, script: Script, ssl_context: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.ssl_context = ssl_context
        self.auths: list[dict[str, Any]] = []  # every auth payload received, in order
        self.received: list[dict[str, Any]] = []  # every later client message
        self.server: Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        port = next(iter(self.server.sockets)).getsockname()[1]
        scheme = "wss" if self.ssl_context else "ws"
        host = "localhost" if self.ssl_context else "127.0.0.1"
        return f"{scheme}://{host}:{port}/ws"

    async def __aenter__(self) -> FakeServer:
        self.server = await serve(
            self._handle, "127.0.0.1", 0, ssl=self.ssl_context, logger=server_logger
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, conn: ServerConnection) -> None:
        await conn.send(frame("connection.established", {"clientId": "c1", "version": 1}))
        auth = json.loads(await conn.recv())
        assert auth["type"] == "auth"
        self.auths.append(auth["payload"])
        await self.script(conn, auth["payload"])

    async def record(self, conn: ServerConnection) -> None:
        """Read (and remember) the client's messages until it closes; answer no ping."""
        async for raw in conn:
            self.received.append(json.loads(raw))


def auth_success() -> str:
    return frame("auth.success", {"userId": "alice", "projectId": None, "runId": None})


async def wait_until(predicate: Callable[[], bool], limit: float = 10) -> None:
    async with asyncio.timeout(limit):
        while not predicate():
            await asyncio.sleep(0.01)
