"""`Event`: one event as the client yields it, parsed and validated from a server frame.

Decision (forward compatibility): an event whose type this client's catalogue does not know
(a newer server), or whose payload does not match the catalogue's model, is still yielded,
with `payload` the frame's plain `dict` (and a warning naming the type and the failing field,
never a value). Crashing a watcher in the middle of a run because the server grew is worse
than an untyped payload; `Event.typed` tells the two apart.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from .catalogue import CATEGORY_OF, PAYLOAD_MODELS, EventPayload

logger = logging.getLogger("researchflow_client")
_warned: set[tuple[str, str]] = set()  # (type, reason) already warned about, once per process


class MalformedFrame(ValueError):
    """A server frame that is not an event envelope (no integer id, no type...)."""


@dataclass(frozen=True, slots=True)
class Event:
    """One event: `id` (its position in the server's log, strictly increasing), `type`
    (e.g. `stage.progress`), `timestamp` (aware UTC) and `payload` (the catalogue's model for
    `type`, e.g. `StageProgress`; a `dict` for a type or shape this client does not know)."""

    id: int
    type: str
    timestamp: datetime
    payload: EventPayload | dict[str, Any]
    raw: dict[str, Any] = field(repr=False, compare=False)  # the frame exactly as received

    @property
    def category(self) -> str | None:
        """`RUN_EVENTS`, `STAGE_EVENTS`, ... (None for a type this client does not know)."""
        return CATEGORY_OF.get(self.type)

    @property
    def typed(self) -> bool:
        """Whether `payload` is the catalogue's model (not a plain dict)."""
        return not isinstance(self.payload, dict)

    def to_dict(self) -> dict[str, Any]:
        """The wire form `{id, type, timestamp, payload}` (e.g. for one JSON line per event)."""
        return dict(self.raw)


def parse_event(frame: dict[str, Any]) -> Event:
    """An `Event` from a decoded server frame; raises MalformedFrame for a broken envelope."""
    event_id = frame.get("id")
    if not isinstance(event_id, int) or isinstance(event_id, bool) or event_id < 1:
        raise MalformedFrame("id: expected a positive integer")
    event_type = frame.get("type")
    if not isinstance(event_type, str):
        raise MalformedFrame("type: expected a string")
    raw_timestamp = frame.get("timestamp")
    try:
        timestamp = datetime.fromisoformat(str(raw_timestamp))
    except ValueError:
        raise MalformedFrame("timestamp: expected ISO-8601") from None
    payload = frame.get("payload")
    if not isinstance(payload, dict):
        raise MalformedFrame("payload: expected an object")
    return Event(event_id, event_type, timestamp, _typed_payload(event_type, payload), frame)


def _typed_payload(event_type: str, payload: dict[str, Any]) -> EventPayload | dict[str, Any]:
    model = PAYLOAD_MODELS.get(event_type)
    if model is None:
        _warn_once(event_type, "unknown event type", "a newer server? upgrade researchflow-client")
        return payload
    try:
        return model.model_validate(payload)  # type: ignore[return-value]
    except ValidationError as exc:
        # Field names and rules only: a value could be free text the caller must not log.
        first = exc.errors(include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "payload"
        _warn_once(event_type, f"{where}: {first['msg']}", "delivered with a dict payload")
        return payload


def _warn_once(event_type: str, reason: str, hint: str) -> None:
    if (event_type, reason) in _warned:
        return
    _warned.add((event_type, reason))
    logger.warning(
        "event %s does not match the client's catalogue (%s); %s", event_type, reason, hint
    )
