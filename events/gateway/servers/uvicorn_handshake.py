"""A bound on how long a client may take to send its request head (WS_HANDSHAKE_TIMEOUT):
uvicorn's half (daphne's is daphne_handshake.py).

Neither server bounds it. uvicorn's keep-alive timer only runs between requests and every byte
received cancels it; daphne (Twisted's HTTPChannel) restarts its 60 s idle timer on every byte.
A client trickling a header byte every few seconds, or connecting and saying nothing (under
uvicorn), held a connection for as long as it liked: 40 of each were still open after 90 s.

The rule here, for both servers: a request head (request line and headers, the whole WebSocket
handshake request) must be complete within WS_HANDSHAKE_TIMEOUT of the connection opening, or
of its first byte for later requests on a keep-alive connection (uvicorn); otherwise the
connection is closed without an answer, as nginx does at `client_header_timeout`. What comes
after the head is bounded elsewhere: the application accepts or refuses the socket at once,
an unauthenticated socket is closed at WS_AUTH_TIMEOUT, an idle keep-alive connection at
uvicorn's `timeout_keep_alive`.

What must stay true (tests/test_handshake_timeout.py reads the source): uvicorn's
`HttpToolsProtocol` calls `connection_made`, `on_message_begin`, `on_headers_complete` (for a
WebSocket upgrade too) and `connection_lost`, and has `self.loop`. Nothing is patched: `serve`
passes `HeadDeadlineProtocol` as uvicorn's `http` protocol class; `install()` only checks the
release.
"""

from __future__ import annotations

import asyncio

from django.conf import settings
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .versions import require

WRITTEN_FOR = {"uvicorn": "0.54.0"}
CHECKED_BY = "tests/test_handshake_timeout.py"


def install() -> None:
    require(__name__, WRITTEN_FOR, CHECKED_BY)


def handshake_timeout() -> float:
    return float(settings.WS_HANDSHAKE_TIMEOUT)


class HeadDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the request-head deadline. `serve` passes it as
    uvicorn's `http` protocol class (serve.uvicorn_options)."""

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:  # a later request on a keep-alive connection
            self._arm_head_deadline()

    def on_headers_complete(self) -> None:
        self._cancel_head_deadline()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._head_timer = self.loop.call_later(handshake_timeout(), self._head_expired)

    def _cancel_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()
