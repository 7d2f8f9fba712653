"""The EventBus: validate → PHI guard → log → on commit → subscribers and the channel layer.

Nothing here publishes before commit (Zulip's `send_event_on_commit`): the log row is written
in the caller's transaction, and the hand-off to in-process subscribers and to the channel
layer is registered with `transaction.on_commit(..., robust=True)`. A rolled-back change
leaves no event, logged or sent.

Log positions (the envelope's `id`): on SQLite the INSERT takes `MAX(position) + 1` (writers
are serialised); on PostgreSQL the row is inserted unpositioned, with no global lock in the
caller's transaction, and the on-commit hook stamps it first (`events/sequencer.py`), then
encodes the frame with its position and hands it on. Each record also carries its shard
(`events/shards.py`) and `shard_prev`, the position before it in that shard: the link a hub
that hears only that shard follows (`prev_id`, the position before, is the global link).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

import orjson
from asgiref.sync import async_to_sync
from django.db import connections, transaction
from django.utils import timezone

from . import metrics, phi, sequencer
from .models import Event
from .record import LoggedEvent, encode_frame
from .schemas import (
    CATEGORY_OF,
    EVENT_CATEGORIES,
    EventRejected,
    InvalidEvent,
    iso_timestamp,
    validate_payload,
)
from .shards import shard_of

logger = logging.getLogger(__name__)

# The topic that receives every event. The seed names it "jobs" (its integration test
# subscribes to 'jobs' and receives run.created); it has nothing to do with `runs/jobs.py`.
EVERY_EVENT_TOPIC = "jobs"

Handler = Callable[[dict[str, Any]], Any] | Callable[[dict[str, Any]], Awaitable[Any]]
Sink = Callable[[LoggedEvent], None]


class PHIRejected(EventRejected):
    """The PHI guard found identifiers. Names fields and categories, never the value."""

    def __init__(self, event_type: str, findings: list[phi.Finding]) -> None:
        self.event_type = event_type
        self.findings = findings
        super().__init__(
            f"{event_type} refused by the PHI guard: " + ", ".join(str(f) for f in findings)
        )


def _log_heads(cursor: Any, shard: int) -> tuple[int, int | None]:
    """The newest log position, and the newest in `shard` (None: none yet), SQLite's path. Raw
    SQL: the ORM's aggregate() compiles a query each call and was a third of the publish path's
    cost; both MAXes are index lookups, in one statement."""
    cursor.execute(_HEADS_SQL, [shard])
    head, shard_head = cursor.fetchone()
    return int(head), None if shard_head is None else int(shard_head)


def _insert_event(
    cursor: Any,
    event_type: str,
    project_id: str,
    shard: int,
    run_id: str,
    payload: dict[str, Any],
    created_at: datetime,
    position: int | None,
) -> int:
    """INSERT … RETURNING id, values prepared as the model's own fields would (JSON, datetimes).

    The same row `Event.objects.create()` writes, without compiling an INSERT per event: the
    ORM's save machinery was the largest cost left on the publish path.
    """
    connection = cursor.db
    params = [
        position,
        event_type,
        project_id,
        shard,
        run_id,
        _payload_param(payload, connection),
        _CREATED_AT_FIELD.get_db_prep_save(created_at, connection),
    ]
    cursor.execute(_INSERT_SQL, params)
    return int(cursor.fetchone()[0])


def _payload_param(payload: dict[str, Any], connection: Any) -> Any:
    """The payload as the JSONField would store it, encoded by orjson.

    JSONField goes through stdlib `json.dumps` (a third of the INSERT's cost). orjson writes
    the same JSON document (UTF-8 rather than \\u escapes, which decode to the same text;
    validated payloads hold only str, bounded int and lists), so reading the row back gives
    an equal dict on both backends. Anything orjson refuses takes the field's own path.
    """
    try:
        text = orjson.dumps(payload).decode()
    except orjson.JSONEncodeError:
        return _PAYLOAD_FIELD.get_db_prep_save(payload, connection)
    if connection.vendor == "postgresql":
        # The same Jsonb wrapper the field uses (a jsonb-typed parameter), with our text.
        from django.db.backends.postgresql.psycopg_any import Jsonb

        return Jsonb(payload, dumps=lambda _obj: text)
    return text


_PAYLOAD_FIELD = Event._meta.get_field("payload")
_CREATED_AT_FIELD = Event._meta.get_field("created_at")
_INSERT_SQL = (
    f"INSERT INTO {Event._meta.db_table} "  # noqa: S608
    "(position, type, project_id, shard, run_id, payload, created_at) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id"
)
_HEADS_SQL = (
    f"SELECT {sequencer.HEAD_SQL}, "  # noqa: S608 (constants)
    f"(SELECT MAX(position) FROM {Event._meta.db_table} WHERE shard = %s)"
)


def _unpositioned(connection: Any) -> list[LoggedEvent]:
    """The records this connection logged on PostgreSQL that wait for their position.

    Only the current transaction's records matter. With no on-commit hook registered yet,
    whatever is listed came from transactions (or savepoints) that rolled back: forget it.
    """
    pending: list[LoggedEvent] | None = getattr(connection, "_rf_unpositioned", None)
    if pending is None:
        pending = []
        connection._rf_unpositioned = pending
    elif not connection.run_on_commit:
        pending.clear()
    return pending


def _assign_positions(record: LoggedEvent) -> None:
    """After commit, on PostgreSQL: stamp, then give every record of the committed transaction
    its position and frame (the first hook of a commit does it for all; the rest find theirs
    set). A listed row that is not found was rolled back with a savepoint."""
    connection = connections["default"]
    pending = list(getattr(connection, "_rf_unpositioned", ()) or ())
    if not any(item is record for item in pending):
        pending.append(record)
    positions = sequencer.stamp([r.pk for r in pending])
    for item in pending:
        stamped = positions.get(item.pk)
        if stamped is not None:
            position, item.shard_prev = stamped
            item.id, item.prev_id = position, position - 1
            item.frame = encode_frame(position, item.type, item.timestamp, item.payload)
    connection._rf_unpositioned = []  # type: ignore[attr-defined]
    if not record.id:
        # Not stamped (it cannot be missing: its hook ran, so it committed). The hubs' log
        # check stamps and delivers it; nothing to hand on from here.
        raise RuntimeError("event log row committed but not positioned; the log check will")


class EventBus:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = {}
        self._sinks: tuple[Sink, ...] = ()  # read without the lock: replaced, never mutated
        self._lock = threading.Lock()

    # --- publishing ----------------------------------------------------------------------

    def publish(
        self, event_type: str, payload: Mapping[str, Any], *, at: datetime | None = None
    ) -> LoggedEvent:
        """Validate, guard and log one event; hand it on when the transaction commits.

        Raises InvalidEvent (schema) or PHIRejected (guard), both EventRejected, before
        anything is written. Call it inside the transaction that makes the change.
        """
        try:
            model = validate_payload(event_type, payload)
        except InvalidEvent:
            metrics.EVENTS_REJECTED.labels(
                type=event_type if event_type in CATEGORY_OF else "unknown"
            ).inc()
            raise
        data = model.model_dump(by_alias=True, exclude_none=True)
        findings = phi.scan(data)
        if findings:
            for finding in findings:
                metrics.PHI_REJECTIONS.labels(category=finding.category).inc()
            # Field paths and categories only: the value is the thing we must not spread.
            logger.warning(
                "PHI guard refused %s: %s", event_type, ", ".join(str(f) for f in findings)
            )
            raise PHIRejected(event_type, findings)
        created_at = at or timezone.now()
        project_id, run_id = data["projectId"], data.get("runId", "")
        shard = shard_of(project_id)
        # No savepoint when nested in the caller's transaction. The row belongs to the caller's
        # change: if writing it fails, that transaction must not commit without it, so it is
        # marked for rollback rather than rolled back to a savepoint the caller could carry on
        # from (and a savepoint would be a seventh of the publish path's cost for nothing).
        with transaction.atomic(savepoint=False):
            connection = connections["default"]
            timestamp = iso_timestamp(created_at)
            record = LoggedEvent(
                id=0,
                prev_id=None,
                type=event_type,
                project_id=project_id,
                run_id=run_id,
                timestamp=timestamp,
                payload=data,
                frame="",
                stage_id=data.get("stageId", ""),
                shard=shard,
            )
            # One cursor for both statements (each Django cursor has a set-up cost).
            with connection.cursor() as cursor:
                if connection.vendor == "postgresql":
                    # No position and no lock here: the sequencer stamps it after commit.
                    unpositioned = _unpositioned(connection)
                    record.pk = _insert_event(
                        cursor, event_type, project_id, shard, run_id, data, created_at, None
                    )
                    unpositioned.append(record)
                else:
                    # SQLite's writers are serialised (IMMEDIATE): the head cannot move under us.
                    head, shard_head = _log_heads(cursor, shard)
                    record.pk = _insert_event(
                        cursor, event_type, project_id, shard, run_id, data, created_at, head + 1
                    )
                    record.id, record.prev_id = head + 1, head
                    record.shard_prev = shard_head
                    record.frame = encode_frame(record.id, event_type, timestamp, data)
            transaction.on_commit(lambda: self._committed(record), robust=True)
        return record

    def _committed(self, record: LoggedEvent) -> None:
        if not record.id:
            _assign_positions(record)
        record.committed_at = time.time()
        metrics.EVENTS_PUBLISHED.labels(type=record.type).inc()
        for sink in self._sinks:
            try:
                sink(record)
            except Exception:
                logger.exception("event sink %r failed on %s", sink, record.type)
        self._notify(record)

    # --- sinks: where committed events go besides in-process subscribers ------------------

    def add_sink(self, sink: Sink) -> None:
        """Hand every committed event to `sink(record)`, in commit order, before the in-process
        subscribers. The realtime gateway registers its hand-off here (its AppConfig.ready), so
        the bus never imports the gateway. A failing sink is logged; the others still run."""
        with self._lock:
            if sink not in self._sinks:
                self._sinks = (*self._sinks, sink)

    # --- in-process subscribers ----------------------------------------------------------

    def subscribe(self, topic: str, handler: Handler) -> Callable[[], None]:
        """Call `handler(envelope)` after commit for every event of `topic`.

        `topic` is an event type, a category (`STAGE_EVENTS`) or "jobs" (every event). Sync
        and async handlers both work; a failing handler is logged and never breaks publishing.
        Returns the unsubscribe function.
        """
        if (
            topic != EVERY_EVENT_TOPIC
            and topic not in CATEGORY_OF
            and topic not in EVENT_CATEGORIES
        ):
            raise ValueError(f"unknown topic {topic!r}: an event type, a category or 'jobs'")
        with self._lock:
            self._handlers.setdefault(topic, []).append(handler)

        def unsubscribe() -> None:
            with self._lock:
                handlers = self._handlers.get(topic, [])
                if handler in handlers:
                    handlers.remove(handler)

        return unsubscribe

    def _notify(self, record: LoggedEvent) -> None:
        with self._lock:
            targets = [
                handler
                for topic in (record.type, record.category, EVERY_EVENT_TOPIC)
                for handler in self._handlers.get(topic, ())
            ]
        if not targets:
            return
        envelope = record.envelope()
        for handler in targets:
            try:
                if inspect.iscoroutinefunction(handler):
                    _run_async_handler(handler, envelope)
                else:
                    result = handler(envelope)
                    if inspect.isawaitable(result):
                        _run_async_handler(lambda _e, r=result: r, envelope)
            except Exception:
                logger.exception("event subscriber %r failed on %s", handler, record.type)


def _run_async_handler(handler: Callable[..., Any], envelope: dict[str, Any]) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        async_to_sync(_await_handler)(handler, envelope)
        return
    # Called on an event loop's thread (rare: on_commit inside async code): don't block it.
    task = asyncio.ensure_future(_await_handler(handler, envelope))
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


_BACKGROUND: set[asyncio.Future[Any]] = set()


async def _await_handler(handler: Callable[..., Any], envelope: dict[str, Any]) -> None:
    try:
        result = handler(envelope)
        if inspect.isawaitable(result):
            await result
    except Exception:
        logger.exception("event subscriber %r failed", handler)


event_bus = EventBus()
