"""ResearchFlow run events from Python: follow a run from a notebook, a worker or a shell.

    from researchflow_client import RunEvents

    async with RunEvents("ws://localhost:3001/ws", token=token, run_id=run_id) as events:
        async for event in events:
            print(event.id, event.type, event.payload)

`follow()` is the same for synchronous code. Only the public `/ws` protocol is used; nothing of
the server is imported.
"""

from __future__ import annotations

from .backoff import Backoff
from .catalogue import CATEGORY_OF, EVENT_CATEGORIES, EVENT_TYPES, PAYLOAD_MODELS, EventPayload
from .client import RunEvents
from .errors import (
    AccessRevoked,
    AuthFailed,
    ClientError,
    InvalidURL,
    ResyncRequired,
    ServerUnavailable,
)
from .events import Event
from .sync import follow

__all__ = [
    "CATEGORY_OF",
    "EVENT_CATEGORIES",
    "EVENT_TYPES",
    "PAYLOAD_MODELS",
    "AccessRevoked",
    "AuthFailed",
    "Backoff",
    "ClientError",
    "Event",
    "EventPayload",
    "InvalidURL",
    "ResyncRequired",
    "RunEvents",
    "ServerUnavailable",
    "follow",
]
__version__ = "0.1.0"
