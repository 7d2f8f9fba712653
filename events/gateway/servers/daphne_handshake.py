"""A bound on how long a client may take to send its request head (WS_HANDSHAKE_TIMEOUT):
daphne's half. The rule and why are in uvicorn_handshake.py.

What must stay true (tests/test_handshake_timeout.py reads the source): daphne's
`HTTPFactory.buildProtocol` returns Twisted's channel proxy, whose `_channel` (an
`HTTPChannel`) calls `allHeadersReceived()` once per request head and `connectionLost()` when
the connection ends.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from .versions import installs_once

WRITTEN_FOR = {"daphne": "4.2.3", "twisted": "26.10.0"}
CHECKED_BY = "tests/test_handshake_timeout.py"


@installs_once(WRITTEN_FOR, CHECKED_BY)
def install() -> None:
    """Give every daphne HTTP connection the request-head deadline."""
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

        timer = reactor.callLater(float(settings.WS_HANDSHAKE_TIMEOUT), expire)

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
