"""End a WebSocket whose client stopped reading: a 4008 close it will read, and a time bound.

A client that stops reading fills the kernel's send buffer and then the transport's (both
bounded: uvicorn_send_buffer.py); the transport pauses, and uvicorn's sans-I/O `send()` awaits
`self.writable` before every message. For a frame that is the back-pressure the writer relies
on. Left as uvicorn ships it, three things go wrong for a client that never reads again:
- the slow-consumer close (4008, writer.py) is a `send()` too, so it waits behind the full pipe
  for the client to read: it may never be written, and the app never gets its disconnect (the
  consumer and its queue stay);
- the keepalive, which writes its frames past `writable`, fails the connection with 1011 first
  and calls `transport.close()`, which waits for the buffer to drain: the connection, its
  buffers and the consumer stay for as long as the client does (the kernel probes a zero window
  without end);
- a close nobody answers is followed, after `close_timeout`, by the same waiting
  `transport.close()`.

So, once this is installed:
1. A `websocket.close` on an open connection whose transport is paused is written at once,
   behind what is already buffered (the buffer goes past its high-water mark by one close frame,
   once), and the app gets its `websocket.disconnect` at once, as uvicorn does for any close it
   writes. A client that reads again reads everything it was sent, then the close code.
2. A keepalive timeout closes with 4008 (reason `slow consumer`), delivered as in 1, instead of
   uvicorn's 1011 ("internal error", which it is not). The pong is missing because the client
   has not read what was sent to it, the ping at least, within WS_PING_TIMEOUT: it stopped
   reading (a slow consumer: reconnect and resume), or it is gone (no code reaches it). Either
   way it is the stalled client's close, at any event rate: a client that stops reading is
   closed within ~WS_PING_INTERVAL + WS_PING_TIMEOUT, or sooner when its queue overflows.
3. Every close the server writes is followed by WS_CLOSE_TIMEOUT (10 s, as uvicorn's own
   `close_timeout`) to finish the closing handshake; after that a connection still open is
   reset (SO_LINGER 0, abort): what its buffers held is dropped, in the process and in the
   kernel. A client that reads only after that finds the frames its own kernel held, then a
   reset (1006) instead of the close code. Both mean the same to a client: reconnect and
   resume from the last id it read.

What must stay true (tests/test_ws_stalled_peer.py reads the source): `send()` awaits
`self.writable` first; its close branch writes `conn.send_close` output, sets `close_sent`,
queues the disconnect and sets `close_timer`; `keepalive_timeout` fails the connection and calls
`transport.close()`; `connection_lost` sets `disconnected` and cancels `close_timer`.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from typing import Any

from django.conf import settings

from ..writer import CLOSE_SLOW_CONSUMER
from .versions import installs_once

WRITTEN_FOR = {"uvicorn": "0.54.0"}
CHECKED_BY = "tests/test_ws_stalled_peer.py"

SLOW_CONSUMER_REASON = "slow consumer"
_LINGER_RESET = struct.pack("ii", 1, 0)  # l_onoff=1, l_linger=0: close() sends RST


def _is_open(protocol: Any) -> bool:
    """Accepted, not closing: where uvicorn's `send()` takes its close branch."""
    return bool(
        protocol.handshake_complete
        and protocol.initial_response is None
        and not protocol.close_sent
        and not protocol.disconnected
        and not protocol.transport.is_closing()
    )


def _reset(protocol: Any) -> None:
    """The closing handshake did not finish in time: drop the connection and what it holds."""
    protocol.close_timer = None
    if protocol.disconnected:
        return
    sock = protocol.transport.get_extra_info("socket")
    if sock is not None:
        # Already gone: abort() below still releases the transport.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    protocol.transport.abort()


def _bound_closing(protocol: Any) -> None:
    """Replace uvicorn's close timer (a `transport.close()` that waits for the buffer to drain)
    by a reset after WS_CLOSE_TIMEOUT."""
    if protocol.close_timer is not None:
        protocol.close_timer.cancel()
    protocol.close_timer = protocol.loop.call_later(settings.WS_CLOSE_TIMEOUT, _reset, protocol)


def _write_close(protocol: Any, code: int, reason: str) -> None:
    """uvicorn's close branch of `send()`, without waiting for `writable`."""
    protocol.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
    protocol.conn.send_close(code, reason)
    protocol.transport.write(b"".join(protocol.conn.data_to_send()))
    protocol.close_sent = True
    if protocol.read_paused:
        protocol.read_paused = False
        protocol.transport.resume_reading()
    _bound_closing(protocol)


@installs_once(WRITTEN_FOR, CHECKED_BY)
def install() -> None:
    from uvicorn.protocols.utils import ClientDisconnected
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    from websockets.exceptions import InvalidState

    original_send = WebSocketsSansIOProtocol.send
    original_keepalive_timeout = WebSocketsSansIOProtocol.keepalive_timeout

    async def send(self: Any, message: Any) -> None:
        if message["type"] != "websocket.close" or not _is_open(self):
            await original_send(self, message)
            return
        if self.writable.is_set():
            await original_send(self, message)  # written now: the wait does not suspend
            if self.close_sent:
                _bound_closing(self)
            return
        try:
            _write_close(self, message.get("code", 1000), message.get("reason", "") or "")
        except InvalidState:
            raise ClientDisconnected() from None

    def keepalive_timeout(self: Any) -> None:
        if not _is_open(self):
            original_keepalive_timeout(self)  # returns: nothing left to close
            return
        self.pong_timer = None
        self.pending_ping_payload = None
        self.stop_keepalive()
        _write_close(self, CLOSE_SLOW_CONSUMER, SLOW_CONSUMER_REASON)

    WebSocketsSansIOProtocol.send = send  # type: ignore[method-assign]
    WebSocketsSansIOProtocol.keepalive_timeout = keepalive_timeout  # type: ignore[method-assign]
