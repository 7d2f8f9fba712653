"""End a daphne WebSocket whose client stopped reading: a 4008 close it will read, and a time
bound (uvicorn_stalled_peer.py is uvicorn's half; the rules are the same).

With daphne_send_buffer.py, a client that stops reading fills the kernel's send buffer and the
transport's, then daphne's `send()` waits and the gateway's queue fills (4008 on overflow).
As daphne and autobahn ship it, three things then go wrong:
- a keepalive ping the client never answers (it did not read it) drops the connection
  (`onAutoPingTimeout`: an abort) with no close code at all, and a burst of progress, which
  the gateway coalesces, may never overflow the queue: a stalled client got no 4008;
- a close the server writes is answered within autobahn's `closeHandshakeTimeout`, 1 s, or
  the connection is aborted: a client that reads again a little later finds a reset, not
  its 4008;
- the app hears of the close only when the connection is finally dropped, so the consumer
  stays in the hub meanwhile.

So, once this is installed:
1. A keepalive timeout on an open connection writes a 4008 close (reason `slow consumer`)
   behind what is already buffered, as uvicorn's patch does, instead of aborting.
2. Every close the server writes (that one, the gateway's 4008 and any other) is followed by
   WS_CLOSE_TIMEOUT to finish the closing handshake, then the connection is aborted; Twisted
   aborts with SO_LINGER 0 (a reset), which drops what the transport and the kernel held.
3. The app gets its `websocket.disconnect` as soon as the server's close is written (as
   uvicorn does for a close it writes), and daphne then mutes the socket: nothing the client
   sends afterwards reaches the app.

What must stay true (tests/test_ws_stalled_daphne.py reads the source): autobahn's
`onAutoPingTimeout` drops the connection with `abort=True`; `sendCloseFrame` sets
STATE_CLOSING and, when the close is ours, arms `closeHandshakeTimeout`, read from the protocol
at that moment; daphne's `handle_reply` closes through `serverClose`, puts the disconnect on
`application_queue` in `onClose` unless `muted`, and `connectionMade` runs once per socket.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from ..writer import CLOSE_SLOW_CONSUMER
from .versions import installs_once

WRITTEN_FOR = {"daphne": "4.2.3", "autobahn": "26.10.2"}
CHECKED_BY = "tests/test_ws_stalled_daphne.py"

SLOW_CONSUMER_REASON = "slow consumer"


def _disconnect_now(protocol: Any, code: int) -> None:
    """The server's close is written: the app leaves now, not when the connection drops."""
    if protocol.muted or not hasattr(protocol, "application_queue"):
        return
    protocol.muted = True
    protocol.application_queue.put_nowait({"type": "websocket.disconnect", "code": code})


@installs_once(WRITTEN_FOR, CHECKED_BY)
def install() -> None:
    from daphne.ws_protocol import WebSocketProtocol

    original_made = WebSocketProtocol.connectionMade
    original_close = WebSocketProtocol.serverClose
    original_ping_timeout = WebSocketProtocol.onAutoPingTimeout

    def connection_made(self: Any) -> None:
        original_made(self)
        # Copied from the factory by connectionMade; read when a close is written.
        self.closeHandshakeTimeout = settings.WS_CLOSE_TIMEOUT

    def server_close(self: Any, code: int | None = None) -> None:
        was_open = self.state == self.STATE_OPEN
        original_close(self, code)
        if was_open and self.state == self.STATE_CLOSING:
            _disconnect_now(self, 1000 if code is None else code)

    def on_auto_ping_timeout(self: Any) -> None:
        self.autoPingTimeoutCall = None
        if self.state != self.STATE_OPEN:
            original_ping_timeout(self)
            return
        self.sendCloseFrame(
            code=CLOSE_SLOW_CONSUMER, reasonUtf8=SLOW_CONSUMER_REASON.encode(), isReply=False
        )
        _disconnect_now(self, CLOSE_SLOW_CONSUMER)

    WebSocketProtocol.connectionMade = connection_made
    WebSocketProtocol.serverClose = server_close
    WebSocketProtocol.onAutoPingTimeout = on_auto_ping_timeout
