"""Skip styling the arguments of autobahn's per-frame debug log (daphne's WebSocket side).

autobahn logs every frame it writes at debug level, and builds the message's arguments first:
`hltype(self.sendData)`, `hlval(self.peer)`, `hlval(len(data))`, each a click.style() call,
even though its logger drops debug messages unseen. That was ~10 % of daphne's CPU while
fanning out (docs/benchmarks.md, fan-out). The arguments are handed over unstyled instead: a
debug log, if ever enabled, shows the same values without colour.

What must stay true (tests/test_server_compat.py reads it): `WebSocketProtocol.sendData` looks
up `hltype`/`hlval` as globals of `autobahn.websocket.protocol` at call time, so replacing the
module attributes reaches it.
"""

from __future__ import annotations

from typing import Any

from .versions import require

WRITTEN_FOR = {"autobahn": "26.10.2"}
CHECKED_BY = "tests/test_server_compat.py"


def install() -> None:
    require(__name__, WRITTEN_FOR, CHECKED_BY)
    from autobahn.websocket import protocol

    protocol.hltype = unstyled  # type: ignore[assignment]
    protocol.hlval = unstyled  # type: ignore[assignment]


def unstyled(value: Any, *_args: Any, **_kwargs: Any) -> Any:
    return value
