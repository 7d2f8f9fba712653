"""Let daphne send the RFC 6455 close codes the protocol uses (1001, 1008, 1009, 1011).

autobahn's `sendClose()` accepts only 1000 and 3000–4999 (the IANA ranges for applications),
so under daphne a consumer's `close(code=1009)` raised inside daphne and the client got no
close frame at all. These four codes are the ones an endpoint is meant to send for going away,
policy violations, oversized messages and server errors; `sendCloseFrame()` sends them with the
same state handling, minus the range check. uvicorn needs no help.

What must stay true (tests/test_server_compat.py reads it): daphne's `serverClose(code)` is
how an ASGI `websocket.close` reaches autobahn, and autobahn's `sendCloseFrame(code=,
isReply=)` writes a close frame without checking the code's range.
"""

from __future__ import annotations

from typing import Any

from .versions import installs_once

WRITTEN_FOR = {"daphne": "4.2.3", "autobahn": "26.10.2"}
CHECKED_BY = "tests/test_server_compat.py"

PROTOCOL_CLOSE_CODES = frozenset({1001, 1008, 1009, 1011})


@installs_once(WRITTEN_FOR, CHECKED_BY)
def install() -> None:
    from daphne.ws_protocol import WebSocketProtocol

    original = WebSocketProtocol.serverClose

    def server_close(self: Any, code: int | None = None) -> None:
        if code in PROTOCOL_CLOSE_CODES:
            self.sendCloseFrame(code=code, isReply=False)
            return
        original(self, code)

    WebSocketProtocol.serverClose = server_close
