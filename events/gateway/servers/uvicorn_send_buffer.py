"""Bound what uvicorn's transport and the kernel hold for one WebSocket, in bytes.

A client that stops reading fills, in order: the kernel's send buffer for its socket, then
the asyncio transport's write buffer, then (once uvicorn's `send()` waits for the transport to
drain) the gateway's per-socket queue (writer.py, WS_SEND_QUEUE / WS_SEND_BUFFER_BYTES, 4008 on
overflow). Left alone, Linux autotunes the first up to `net.ipv4.tcp_wmem`'s maximum (4 MiB
here) and the queue only fills after megabytes: thousands of events per stalled socket.

So, once per WebSocket (never per frame), when uvicorn's sans-I/O protocol takes the
connection over from the HTTP protocol:
- the transport's high-water mark is WS_TRANSPORT_BUFFER_BYTES (uvicorn's `send()` awaits
  `writable`, which the transport clears above it; at most one frame more is written past it);
- SO_SNDBUF is WS_SOCKET_SNDBUF (0: leave the kernel's autotuning). Linux doubles the value
  for its bookkeeping and stops autotuning a socket whose SO_SNDBUF was set.

What must stay true (tests/test_server_send.py reads the source): `connection_made` stores the
transport on `self.transport` and is what the HTTP protocol calls on upgrade; `send()` awaits
`self.writable`, which `pause_writing` clears and `resume_writing` sets.
"""

from __future__ import annotations

import socket
from typing import Any

from django.conf import settings

from .versions import installs_once

WRITTEN_FOR = {"uvicorn": "0.54.0"}
CHECKED_BY = "tests/test_server_send.py"


def bound_transport(transport: Any) -> None:
    """Apply the per-socket byte bounds to one accepted WebSocket's transport."""
    transport.set_write_buffer_limits(high=settings.WS_TRANSPORT_BUFFER_BYTES)
    sndbuf = settings.WS_SOCKET_SNDBUF
    sock = transport.get_extra_info("socket")
    if sndbuf and sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)


@installs_once(WRITTEN_FOR, CHECKED_BY)
def install() -> None:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    original = WebSocketsSansIOProtocol.connection_made

    def connection_made(self: Any, transport: Any) -> None:
        original(self, transport)
        bound_transport(self.transport)

    WebSocketsSansIOProtocol.connection_made = connection_made  # type: ignore[method-assign]
