"""A bound on how long a client may take to send its request head (WS_HANDSHAKE_TIMEOUT).

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

Both are written against one release of each server and check it on start
(`check_versions`), because they lean on internals: uvicorn's `HttpToolsProtocol` callbacks
(`connection_made`, `on_message_begin`, `on_headers_complete`, `connection_lost`) and daphne's
`HTTPFactory.buildProtocol` returning Twisted's channel proxy whose `_channel` calls
`allHeadersReceived()` once per request head. tests/test_handshake_timeout.py reads those
sources and fails if an upgrade moves them.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

WRITTEN_FOR = {"uvicorn": "0.54.0", "daphne": "4.2.3", "twisted": "26.10.0"}


def check_versions(*names: str) -> None:
    """Refuse to start on a server release these patches were not written for."""
    for name in names or tuple(WRITTEN_FOR):
        found = version(name)
        if found != WRITTEN_FOR[name]:
            raise RuntimeError(
                f"events/gateway/servers/handshake.py was written for {name} {WRITTEN_FOR[name]}, "
                f"found {found}: re-check the request-head deadline against it "
                "(tests/test_handshake_timeout.py) and update WRITTEN_FOR"
            )


check_versions("uvicorn")  # at import: `serve` and every uvicorn worker import this class


def handshake_timeout() -> float:
    from django.conf import settings

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


_daphne_installed = False


def install_daphne() -> None:
    """Give every daphne HTTP connection the request-head deadline (called by
    `servers.daphne.install`, which researchflow.asgi runs at start)."""
    global _daphne_installed
    if _daphne_installed:
        return
    check_versions("daphne", "twisted")
    from daphne.http_protocol import HTTPFactory

    original = HTTPFactory.buildProtocol

    def build_protocol(self: Any, addr: Any) -> Any:
        protocol = original(self, addr)
        # Imported here, under a running daphne: importing it earlier (say under uvicorn) would
        # install Twisted's default reactor before daphne installs its asyncio one.
        from twisted.internet import reactor as twisted_reactor

        reactor: Any = twisted_reactor  # typed as an interface; the running reactor here
        channel = protocol._channel
        head_received = channel.allHeadersReceived
        lost = channel.connectionLost

        def expire() -> None:
            transport = channel.transport
            if transport is not None:
                transport.abortConnection()

        timer = reactor.callLater(handshake_timeout(), expire)

        def all_headers_received() -> None:
            if timer.active():
                timer.cancel()
            head_received()

        def connection_lost(reason: Any) -> None:
            if timer.active():
                timer.cancel()
            lost(reason)

        channel.allHeadersReceived = all_headers_received
        channel.connectionLost = connection_lost
        return protocol

    HTTPFactory.buildProtocol = build_protocol
    _daphne_installed = True
