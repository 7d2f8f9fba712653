"""gateway/servers/daphne.py: what it changes in daphne/autobahn, and that those are still there."""

from __future__ import annotations

import inspect

from autobahn.websocket import protocol
from autobahn.websocket.protocol import WebSocketProtocol

from events.gateway.servers import daphne as daphne_compat


def test_frames_are_written_without_styling_their_debug_log_arguments() -> None:
    daphne_compat.install()  # idempotent; researchflow.asgi installs it at import
    # autobahn still builds these arguments on every frame it writes (if a release stops
    # doing so, the patch is moot and can go)...
    source = inspect.getsource(WebSocketProtocol.sendData)
    assert "hltype(self.sendData)" in source and "hlval(" in source
    # ...and they are now handed over as they are, with no click.style() per frame.
    marker = object()
    assert protocol.hltype(marker) is marker
    assert protocol.hlval(331) == 331
    assert protocol.hlval("tcp:127.0.0.1:1", color="white", bold=True) == "tcp:127.0.0.1:1"


def test_daphne_may_send_the_protocol_close_codes() -> None:
    daphne_compat.install()
    from daphne.ws_protocol import WebSocketProtocol as DaphneProtocol

    assert DaphneProtocol.serverClose.__name__ == "server_close"
    assert {1001, 1008, 1009, 1011} == daphne_compat.PROTOCOL_CLOSE_CODES
