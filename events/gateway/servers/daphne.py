"""Let daphne send the RFC 6455 close codes the protocol uses (1001, 1008, 1009, 1011).

autobahn's `sendClose()` accepts only 1000 and 3000–4999 (the IANA ranges for applications),
so under daphne a consumer's `close(code=1009)` raised inside daphne and the client got no
close frame at all. These four codes are the ones an endpoint is meant to send for going away,
policy violations, oversized messages and server errors; `sendCloseFrame()` sends them with the
same state handling, minus the range check. uvicorn needs no help.
"""

from __future__ import annotations

from typing import Any

from .handshake import install_daphne

PROTOCOL_CLOSE_CODES = frozenset({1001, 1008, 1009, 1011})
_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    try:
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:  # daphne not installed: nothing to fix
        return
    original = WebSocketProtocol.serverClose

    def server_close(self: Any, code: int | None = None) -> None:
        if code in PROTOCOL_CLOSE_CODES:
            self.sendCloseFrame(code=code, isReply=False)
            return
        original(self, code)

    WebSocketProtocol.serverClose = server_close
    _skip_frame_log_highlighting()
    install_daphne()  # the request-head deadline (WS_HANDSHAKE_TIMEOUT)
    _installed = True


def _skip_frame_log_highlighting() -> None:
    """autobahn logs every frame it writes at debug level, and builds the message's arguments
    first: `hltype(self.sendData)`, `hlval(self.peer)`, `hlval(len(data))`, each a
    click.style() call, even though its logger drops debug messages unseen. That was ~10 % of
    daphne's CPU while fanning out (docs/benchmarks.md, fan-out). The arguments are handed over
    unstyled instead: a debug log, if ever enabled, shows the same values without colour."""
    from autobahn.websocket import protocol

    protocol.hltype = _unstyled  # type: ignore[assignment]
    protocol.hlval = _unstyled  # type: ignore[assignment]


def _unstyled(value: Any, *_args: Any, **_kwargs: Any) -> Any:
    return value
