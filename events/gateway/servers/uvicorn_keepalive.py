"""Let uvicorn's WebSocket protocol forget the handshake once it is done.

uvicorn's sans-I/O protocol (`ws="websockets-sansio"`, what `manage.py serve` runs) keeps the
handshake's `Request` and `Response` (websockets objects, each with a `Headers` multidict) on
the protocol for the socket's lifetime. It reads them only until the handshake response is
written, just before `start_keepalive()`; the ASGI scope has its own copy of the request
headers. So once `start_keepalive()` has run, both references are dropped. That frees the
response (~1 KiB per idle socket, docs/benchmarks.md section 3); the request stays alive all
the same, held by a local variable of websockets' parser generator (`ServerProtocol.parse`).

What must stay true (tests/test_ws_memory.py reads the source): `request` is read only in
`handle_connect`, `response` only there and in `send()` before `start_keepalive()`.
"""

from __future__ import annotations

from typing import Any

from .versions import installs_once

WRITTEN_FOR = {"uvicorn": "0.54.0"}
CHECKED_BY = "tests/test_ws_memory.py"


@installs_once(WRITTEN_FOR, CHECKED_BY)
def install() -> None:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    original = WebSocketsSansIOProtocol.start_keepalive

    def start_keepalive(self: Any) -> None:
        original(self)
        if self.handshake_complete:
            self.request = None
            self.response = None

    WebSocketsSansIOProtocol.start_keepalive = start_keepalive  # type: ignore[method-assign]
