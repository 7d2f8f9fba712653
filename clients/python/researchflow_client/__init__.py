"""ResearchFlow run events from Python: follow a run from a notebook, a worker or a shell.

    from researchflow_client import RunEvents

    async with RunEvents("ws://localhost:3001/ws", token=token, run_id=run_id) as events:
        async for event in events:
            print(event.id, event.type, event.payload)

`follow()` is the same for synchronous code. On `ResyncRequired` (the server cannot replay
what was missed), `load_run()` (or `events.load_run()`) reads the run's current state over
the REST API; then iterate on for the live events. Only the public protocol (`/ws` and the
REST API) is used; nothing of the server is imported.
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
from .snapshot import (
    ApprovalSnapshot,
    ArtifactSnapshot,
    RunSnapshot,
    StageSnapshot,
    load_run,
)
from .sync import follow

__all__ = [
    "CATEGORY_OF",
    "EVENT_CATEGORIES",
    "EVENT_TYPES",
    "PAYLOAD_MODELS",
    "AccessRevoked",
    "ApprovalSnapshot",
    "ArtifactSnapshot",
    "AuthFailed",
    "Backoff",
    "ClientError",
    "Event",
    "EventPayload",
    "InvalidURL",
    "ResyncRequired",
    "RunEvents",
    "RunSnapshot",
    "ServerUnavailable",
    "StageSnapshot",
    "follow",
    "load_run",
]
__version__ = "0.1.0"
