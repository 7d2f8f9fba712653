"""Helpers for driving `GET /events/stream` through the real ASGI app, chunk by chunk."""

from __future__ import annotations

import asyncio
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import orjson
from channels.testing import ApplicationCommunicator

from researchflow.asgi import application


@dataclass
class SSEEvent:
    event: str
    data: str
    id: str | None

    @property
    def frame(self) -> dict[str, Any]:
        parsed: dict[str, Any] = orjson.loads(self.data)
        return parsed


@dataclass
class SSEParser:
    """The SSE wire format (WHATWG HTML, "Server-sent events"), enough for the tests: fields
    `event`, `data`, `id`, `retry`, comments; an event dispatched at each blank line."""

    buffer: str = ""
    comments: list[str] = field(default_factory=list)
    retry: int | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        self.buffer += chunk.decode()
        events: list[SSEEvent] = []
        while "\n\n" in self.buffer:
            block, self.buffer = self.buffer.split("\n\n", 1)
            fields: dict[str, list[str]] = {}
            for line in block.split("\n"):
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                    continue
                name, _, value = line.partition(":")
                fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)
            if "retry" in fields:
                self.retry = int(fields["retry"][-1])
            if "data" in fields:
                events.append(
                    SSEEvent(
                        (fields.get("event") or ["message"])[-1],
                        "\n".join(fields["data"]),
                        fields["id"][-1] if "id" in fields else None,
                    )
                )
        return events


class Stream:
    """One `GET /events/stream` against the ASGI app."""

    def __init__(
        self,
        *,
        query: dict[str, str] | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
        cookie: bytes | None = None,
        token: str | None = None,
        method: str = "GET",
        path: str = "/events/stream",
        app: Any = application,
    ) -> None:
        all_headers = [(b"host", b"localhost"), *(headers or [])]
        if cookie is not None:
            all_headers.append((b"cookie", cookie))
        if token is not None:
            all_headers.append((b"authorization", f"Token {token}".encode()))
        self.comm = ApplicationCommunicator(
            app,
            {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": method,
                "scheme": "http",
                "path": path,
                "raw_path": path.encode(),
                "query_string": urllib.parse.urlencode(query or {}).encode(),
                "root_path": "",
                "headers": all_headers,
                "client": ("127.0.0.1", 50000),
                "server": ("localhost", 80),
            },
        )
        self.parser = SSEParser()
        self.pending: list[SSEEvent] = []
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.ended = False

    async def receive(self, timeout: float = 5) -> dict[str, Any]:
        """The app's next message. Unlike `ApplicationCommunicator.receive_output`, a timeout
        does not cancel the app: a test may wait for nothing and then go on reading."""
        if self.comm.future.done():
            self.comm.future.result()  # the app's exception, if it raised
        message: dict[str, Any] = await asyncio.wait_for(self.comm.output_queue.get(), timeout)
        return message

    async def start(self, timeout: float = 5) -> int:
        await self.comm.send_input({"type": "http.request", "body": b"", "more_body": False})
        start = await self.receive(timeout)
        assert start["type"] == "http.response.start", start
        self.status = start["status"]
        self.headers = dict(start["headers"])
        return self.status

    async def body(self, timeout: float = 5) -> dict[str, Any]:
        """The whole body of a refusal, as JSON."""
        message = await self.receive(timeout)
        assert message["type"] == "http.response.body"
        assert not message.get("more_body")
        parsed: dict[str, Any] = orjson.loads(message["body"])
        return parsed

    async def next(self, timeout: float = 5) -> SSEEvent:
        while not self.pending:
            message = await self.receive(timeout)
            assert message["type"] == "http.response.body", message
            self.pending += self.parser.feed(message.get("body", b""))
            if not message.get("more_body"):
                self.ended = True
                if not self.pending:
                    raise AssertionError("the stream ended")
        return self.pending.pop(0)

    async def opened(self, timeout: float = 5) -> dict[str, Any]:
        """Start, expect 200, and read up to `auth.success`; its payload."""
        status = await self.start(timeout)
        assert status == 200, (status, await self.body())
        first = await self.next(timeout)
        assert first.event == "connection.established", first
        second = await self.next(timeout)
        assert second.event == "auth.success", second
        payload: dict[str, Any] = second.frame["payload"]
        return payload

    async def events(self, count: int, timeout: float = 5) -> list[SSEEvent]:
        """The next `count` events with an id (log events), skipping control frames."""
        out: list[SSEEvent] = []
        while len(out) < count:
            event = await self.next(timeout)
            if event.id is not None:
                out.append(event)
        return out

    async def nothing(self, timeout: float = 0.3) -> bool:
        """True if no event arrives within `timeout` (comments do not count)."""
        if self.pending:
            return False
        try:
            while True:
                message = await self.receive(timeout)
                self.pending += self.parser.feed(message.get("body", b""))
                if self.pending:
                    return False
        except TimeoutError:
            return True

    async def disconnect(self) -> None:
        await self.comm.send_input({"type": "http.disconnect"})
        await self.comm.wait(5)
