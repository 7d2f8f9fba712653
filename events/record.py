"""One logged event as the rest of the system sees it, and its wire frame, encoded once.

A leaf: the bus makes these, the gateway routes them, the log reads them back; none of that
is imported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from .schemas import CATEGORY_OF, iso_timestamp

if TYPE_CHECKING:
    from .models import Event


@dataclass(slots=True)
class LoggedEvent:
    """One committed (or about to commit) event, encoded once for every socket.

    `id` is the log position (the envelope's id). On PostgreSQL it is 0, and `frame` empty,
    until the sequencer has stamped the row after commit; `pk` is the row's storage id.
    `prev_id` is the position before (the global chain), `shard` the project's shard
    (events/shards.py) and `shard_prev` the position before this one in the same shard (None:
    the shard's first): the link a hub hearing only that shard follows.
    """

    id: int
    prev_id: int | None
    type: str
    project_id: str
    run_id: str
    timestamp: str
    payload: dict[str, Any]
    frame: str = field(repr=False)
    stage_id: str = ""  # routing needs it (progress coalescing) without decoding the frame
    committed_at: float = 0.0  # wall clock (comparable across processes), for latency metrics
    pk: int = 0  # the log row's storage id (not the cursor)
    shard: int = 0
    shard_prev: int | None = None

    @property
    def category(self) -> str:
        return CATEGORY_OF[self.type]

    def envelope(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "timestamp": self.timestamp,
            "payload": self.payload,
        }

    def to_message(self) -> dict[str, Any]:
        """The channel-layer message: the pre-encoded frame plus what routing needs."""
        return {
            "type": "rf.event",
            "id": self.id,
            "prev": self.prev_id,
            "event_type": self.type,
            "project": self.project_id,
            "run": self.run_id,
            "frame": self.frame,
            "stage": self.stage_id,
            "t": self.committed_at,
            "s": self.shard,
            "sp": self.shard_prev,
        }

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> LoggedEvent:
        return cls(
            id=message["id"],
            prev_id=message.get("prev"),
            type=message["event_type"],
            project_id=message["project"],
            run_id=message.get("run") or "",
            timestamp="",
            payload={},
            frame=message["frame"],
            stage_id=message.get("stage") or "",
            committed_at=message.get("t") or 0.0,
            shard=message.get("s") or 0,
            shard_prev=message.get("sp"),
        )

    @classmethod
    def from_row(cls, row: Event, prev_id: int | None = None) -> LoggedEvent:
        timestamp = iso_timestamp(row.created_at)
        position = row.position or 0  # readers select positioned rows only
        return cls(
            id=position,
            prev_id=prev_id,
            type=row.type,
            project_id=row.project_id,
            run_id=row.run_id,
            timestamp=timestamp,
            payload=row.payload,
            frame=encode_frame(position, row.type, timestamp, row.payload),
            stage_id=str(row.payload.get("stageId") or ""),
            pk=row.id,
            shard=row.shard,
        )


def encode_frame(event_id: int, event_type: str, timestamp: str, payload: Mapping[str, Any]) -> str:
    return orjson.dumps(
        {"id": event_id, "type": event_type, "timestamp": timestamp, "payload": payload}
    ).decode()
