"""Bound what daphne holds for one WebSocket, in bytes, as uvicorn_send_buffer.py does for
uvicorn: daphne's half.

As daphne ships, its ASGI `send()` never waits: each frame goes straight into Twisted's
transport buffer, which grows without bound for a client that stops reading (daphne #170), so
the gateway's per-socket queue (writer.py, WS_SEND_QUEUE / WS_SEND_BUFFER_BYTES, 4008 on
overflow) never fills and the process holds every frame the client does not read.

So, once per WebSocket (never per frame), when daphne's WebSocket protocol takes the
connection over from the HTTP channel:
- the transport's buffer limit (`bufferSize`, past which Twisted pauses its producer) is
  WS_TRANSPORT_BUFFER_BYTES, and SO_SNDBUF is WS_SOCKET_SNDBUF (0: the kernel's autotuning);
- the transport's producer (the HTTP channel daphne upgraded from) is wrapped in a `WriteGate`
  that also records the pause, so that
- daphne's `send()` of a `websocket.send` waits while the gate is paused, as uvicorn's awaits
  `writable`: at most one frame more than the limit is written, then frames queue in the
  gateway, which bounds them. A close (and everything but a frame) is written at once. While
  the gate is open the send is daphne's own coroutine, unwrapped: nothing added per frame but
  the check.

What must stay true (tests/test_ws_stalled_daphne.py reads the source): daphne hands the ASGI
send to `Server.handle_reply(protocol, message)`; its WebSocket protocol gets the TCP transport
through `makeConnection` (so `connectionMade`), on which the HTTP channel registered itself as
the streaming producer; Twisted's `FileDescriptor.write` pauses the producer above
`bufferSize`, `doWrite` resumes it once the buffer is empty, and `connectionLost` stops it.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Coroutine
from typing import Any

from django.conf import settings

from .versions import installs_once

WRITTEN_FOR = {"daphne": "4.2.3", "twisted": "26.10.0"}
CHECKED_BY = "tests/test_ws_stalled_daphne.py"


class WriteGate:
    """The transport's producer, as Twisted sees it: passes every call on to the producer it
    replaces (the HTTP channel), and lets daphne's `send()` wait while writing is paused."""

    __slots__ = ("_inner", "_resumed", "paused")

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._resumed: asyncio.Future[None] | None = None  # built by the first wait
        self.paused = False

    def pauseProducing(self) -> None:  # Twisted's IPushProducer
        self.paused = True
        if self._inner is not None:
            self._inner.pauseProducing()

    def resumeProducing(self) -> None:
        self._open()
        if self._inner is not None:
            self._inner.resumeProducing()

    def stopProducing(self) -> None:  # the connection is gone
        self._open()
        if self._inner is not None:
            self._inner.stopProducing()

    def _open(self) -> None:
        self.paused = False
        resumed, self._resumed = self._resumed, None
        if resumed is not None and not resumed.done():
            resumed.set_result(None)

    async def writable(self) -> None:
        """Return once writing may go on (the buffer drained, or the connection is gone)."""
        while self.paused:
            if self._resumed is None:
                self._resumed = asyncio.get_running_loop().create_future()
            await self._resumed


def bound_transport(transport: Any) -> WriteGate:
    """Apply the per-socket byte bounds to one accepted WebSocket's transport."""
    transport.bufferSize = settings.WS_TRANSPORT_BUFFER_BYTES
    sndbuf = settings.WS_SOCKET_SNDBUF
    handle = getattr(transport, "getHandle", None)
    sock = handle() if handle is not None else None
    if sndbuf and isinstance(sock, socket.socket):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    gate = WriteGate(transport.producer)
    transport.producer = gate
    transport.streamingProducer = True
    return gate


def gate_of(protocol: Any) -> WriteGate | None:
    transport = getattr(protocol, "transport", None)
    gate = getattr(transport, "producer", None)
    return gate if isinstance(gate, WriteGate) else None


async def _after_writable(gate: WriteGate, reply: Coroutine[Any, Any, None]) -> None:
    try:
        await gate.writable()
    except BaseException:
        reply.close()  # never started: nothing was sent
        raise
    await reply


@installs_once(WRITTEN_FOR, CHECKED_BY)
def install() -> None:
    from daphne.server import Server
    from daphne.ws_protocol import WebSocketProtocol

    original_made = WebSocketProtocol.connectionMade
    original_reply = Server.handle_reply

    def connection_made(self: Any) -> None:
        original_made(self)
        bound_transport(self.transport)

    def handle_reply(self: Any, protocol: Any, message: Any) -> Awaitable[None]:
        # Returns daphne's own coroutine when nothing waits: no second coroutine per frame.
        reply = original_reply(self, protocol, message)
        if message.get("type") == "websocket.send":
            gate = gate_of(protocol)
            if gate is not None and gate.paused:
                return _after_writable(gate, reply)
        return reply

    WebSocketProtocol.connectionMade = connection_made
    Server.handle_reply = handle_reply
