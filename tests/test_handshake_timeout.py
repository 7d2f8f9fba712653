"""gateway/servers/{uvicorn,daphne}_handshake.py lean on server internals: these fail if an
upgrade moves them."""

from __future__ import annotations

import inspect
from typing import Any

import daphne.http_protocol
from daphne.http_protocol import HTTPFactory
from twisted.web import http
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from events.gateway.management.commands.serve import uvicorn_options
from events.gateway.servers import daphne_handshake
from events.gateway.servers.uvicorn_handshake import HeadDeadlineProtocol


def test_uvicorns_httptools_protocol_still_has_the_hooks_the_deadline_uses() -> None:
    for name in ("connection_made", "on_message_begin", "on_headers_complete", "connection_lost"):
        assert name in vars(HttpToolsProtocol), name
    # The head ends in on_headers_complete, for a WebSocket upgrade too (it returns early).
    source = inspect.getsource(HttpToolsProtocol.on_headers_complete)
    assert "should_upgrade" in source
    assert "self.loop" in inspect.getsource(HttpToolsProtocol.__init__)


def test_twisted_still_calls_all_headers_received_once_per_head() -> None:
    assert "self.allHeadersReceived()" in inspect.getsource(http.HTTPChannel)
    # daphne's factory builds Twisted's channel proxy (read from the file: the method itself
    # is our wrapper once installed).
    assert "protocol = http.HTTPFactory.buildProtocol(self, addr)" in inspect.getsource(
        daphne.http_protocol
    )
    daphne_handshake.install()
    assert HTTPFactory.buildProtocol.__name__ == "build_protocol"
    assert "self._channel = " in inspect.getsource(http._GenericHTTPChannelProtocol)


def test_serve_runs_uvicorn_with_the_deadline_protocol(settings: Any) -> None:
    assert uvicorn_options(compression=False)["http"] is HeadDeadlineProtocol
