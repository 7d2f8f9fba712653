"""Let uvicorn's WebSocket protocol forget the handshake once it is done; filter uvicorn's logs.

uvicorn's sans-I/O protocol (`ws="websockets-sansio"`, what `manage.py serve` runs) keeps the
handshake's `Request` and `Response` (websockets objects, each with a `Headers` multidict) on
the protocol for the socket's lifetime. It reads them only until the handshake response is
written, just before `start_keepalive()`; the ASGI scope has its own copy of the request
headers. So once `start_keepalive()` has run, both references are dropped. That frees the
response (~1 KiB per idle socket, docs/benchmarks.md section 3); the request stays alive all
the same, held by a local variable of websockets' parser generator (`ServerProtocol.parse`).

Checked against uvicorn 0.54: `request` is read only in `handle_connect`, `response` only there
and in `send()` before `handshake_complete` is set. If a later uvicorn reads either afterwards,
tests/test_ws_memory.py (which reads the source) fails rather than the server.
"""

from __future__ import annotations

from typing import Any

from researchflow.log_hygiene import RequestTextFilter

_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    _filter_server_logs()
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import (
            WebSocketsSansIOProtocol,
        )
    except ImportError:  # uvicorn (or websockets) not installed: nothing to trim
        return
    original = WebSocketsSansIOProtocol.start_keepalive

    def start_keepalive(self: Any) -> None:
        original(self)
        if self.handshake_complete:
            self.request = None
            self.response = None

    WebSocketsSansIOProtocol.start_keepalive = start_keepalive  # type: ignore[method-assign]
    _installed = True


def _filter_server_logs() -> None:
    """uvicorn's access and WebSocket lines carry the request path, and it logs a client's
    invalid UTF-8 frame with a traceback: researchflow.log_hygiene's filter rewrites those on
    uvicorn's own handlers (which `uvicorn.run` configured before the app, and so Django's
    LOGGING, was loaded), leaving their format and levels as they are."""
    import logging

    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RequestTextFilter) for f in handler.filters):
                handler.addFilter(RequestTextFilter())
