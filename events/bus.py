"""The EventBus: validate → PHI guard → log → on commit → subscribers and the channel layer.

Nothing here publishes before commit (Zulip's `send_event_on_commit`): the log row is written
in the caller's transaction, and the hand-off to in-process subscribers and to the channel
layer is registered with `transaction.on_commit(..., robust=True)`. A rolled-back change
leaves no event, logged or sent.

Log positions (the envelope's `id`): on SQLite the INSERT takes `MAX(position) + 1` (writers
are serialised) and the on-commit hook hands the event on at once; on PostgreSQL the row is
inserted unpositioned, with no global lock in the caller's transaction, and the on-commit
hook gives the record to this process's stamper (`events/stamper.py`), which positions it
(`events/sequencer.py`) off the committing thread, together with whatever else committed
meanwhile, encodes the frame and hands it on. `flush()` waits for that. Each record also
carries its shard
(`events/shards.py`) and `shard_prev`, the position before it in that shard: the link a hub
that hears only that shard follows (`prev_id`, the position before, is the global link).

Three ways in: `publish()` (one event, in the caller's transaction or one of its own),
`publish_many()` (a batch, one INSERT on PostgreSQL) and `publish_with_change()`
(PostgreSQL: a domain change and its log row in one statement, the progress path's).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from asgiref.sync import async_to_sync
from django.db import connections, transaction
from django.utils import timezone

from . import metrics, phi, prepared, sequencer, stamper
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


def _record(
    event_type: str, data: dict[str, Any], at: datetime | None
) -> tuple[LoggedEvent, datetime]:
    """The record of a checked payload (not yet logged), and its creation time."""
    created_at = at or timezone.now()
    project_id = data["projectId"]
    record = LoggedEvent(
        id=0,
        prev_id=None,
        type=event_type,
        project_id=project_id,
        run_id=data.get("runId", ""),
        timestamp=iso_timestamp(created_at),
        payload=data,
        frame="",
        stage_id=data.get("stageId", ""),
        shard=shard_of(project_id),
    )
    return record, created_at


def _insert_event(
    cursor: Any, record: LoggedEvent, created_at: datetime, position: int | None
) -> int:
    """INSERT … RETURNING id, values prepared as the model's own fields would (JSON, datetimes).

    The same row `Event.objects.create()` writes, without compiling an INSERT per event: the
    ORM's save machinery was the largest cost left on the publish path.
    """
    connection = cursor.db
    params = [
        position,
        record.type,
        record.project_id,
        record.shard,
        record.run_id,
        _payload_param(record.payload, connection),
        _CREATED_AT_FIELD.get_db_prep_save(created_at, connection),
    ]
    cursor.execute(_INSERT_SQL, params)
    return int(cursor.fetchone()[0])


_INSERT_MANY_SQL = (
    f"INSERT INTO {Event._meta.db_table} "  # noqa: S608 (constants)
    "(type, project_id, shard, run_id, payload, created_at) "
    "SELECT t, p, s, r, j, c FROM unnest("
    "%s::varchar[], %s::varchar[], %s::smallint[], %s::varchar[], %s::jsonb[], "
    "%s::timestamptz[]) WITH ORDINALITY AS rows (t, p, s, r, j, c, n) ORDER BY n "
    "RETURNING id"
)


def _insert_events_pg(connection: Any, records: list[tuple[LoggedEvent, datetime]]) -> None:
    """One INSERT for a batch of unpositioned rows. Row ids come from one sequence in the
    order the rows are inserted (ORDER BY n), so the sorted ids are the batch's ids in its
    order — and the stamping positions rows in id order."""
    columns: list[list[Any]] = [[], [], [], [], [], []]
    for record, created_at in records:
        for column, value in zip(
            columns,
            (
                record.type,
                record.project_id,
                record.shard,
                record.run_id,
                orjson.dumps(record.payload).decode(),
                created_at,
            ),
            strict=True,
        ):
            column.append(value)
    rows = prepared.cursor(connection).fetch_all(_INSERT_MANY_SQL, columns)
    for (record, _created_at), pk in zip(records, sorted(int(r[0]) for r in rows), strict=True):
        record.pk = pk


@functools.cache
def _with_change_sql(change_sql: str, fill: tuple[tuple[str, str], ...]) -> str:
    """`publish_with_change`'s statement: the caller's UPDATE … RETURNING as a writable CTE,
    and the log row INSERTed from the row it changed (none if it changed none). One per
    (change, fill), so a prepared statement is reused."""
    payload = "%(rf_payload)s::jsonb"
    if fill:
        pairs = ", ".join(f"'{field}', change.{column}" for field, column in fill)
        payload += f" || jsonb_strip_nulls(jsonb_build_object({pairs}))"
    return (
        f"WITH change AS ({change_sql}), "  # noqa: S608 (the caller's constant SQL)
        f"logged AS (INSERT INTO {Event._meta.db_table} "
        "(type, project_id, shard, run_id, payload, created_at) "
        "SELECT %(rf_type)s, %(rf_project)s, %(rf_shard)s, %(rf_run)s, "
        f"{payload}, %(rf_created)s FROM change RETURNING id) "
        "SELECT change.*, logged.id FROM change CROSS JOIN logged"
    )


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
        data = self.checked(event_type, payload)
        record, created_at = _record(event_type, data, at)
        # No savepoint when nested in the caller's transaction. The row belongs to the caller's
        # change: if writing it fails, that transaction must not commit without it, so it is
        # marked for rollback rather than rolled back to a savepoint the caller could carry on
        # from (and a savepoint would be a seventh of the publish path's cost for nothing).
        with transaction.atomic(savepoint=False):
            connection = connections["default"]
            # One cursor for both statements (each Django cursor has a set-up cost).
            with connection.cursor() as cursor:
                if connection.vendor == "postgresql":
                    # No position and no lock here: the stamper positions it after commit.
                    record.pk = _insert_event(cursor, record, created_at, None)
                else:
                    # SQLite's writers are serialised (IMMEDIATE): the head cannot move under us.
                    head, shard_head = _log_heads(cursor, record.shard)
                    record.id, record.prev_id = head + 1, head
                    record.shard_prev = shard_head
                    record.pk = _insert_event(cursor, record, created_at, record.id)
                    record.frame = encode_frame(record.id, event_type, record.timestamp, data)
            transaction.on_commit(lambda: self._committed(record), robust=True)
        return record

    def publish_many(
        self, events: Sequence[tuple[str, Mapping[str, Any]]], *, at: datetime | None = None
    ) -> list[LoggedEvent]:
        """Validate and guard every `(event type, payload)` first, then log them all in the
        caller's transaction (or one of their own) and hand them on at its commit, in the
        given order: their positions follow it. All or nothing: one refused event
        (EventRejected) and none is written.

        On PostgreSQL the rows go in one INSERT (one round trip for the batch); on SQLite,
        whose writers are serialised anyway, one INSERT each."""
        checked = [self.checked(event_type, payload) for event_type, payload in events]
        records = [_record(t, data, at) for (t, _p), data in zip(events, checked, strict=True)]
        if not records:
            return []
        with transaction.atomic(savepoint=False):
            connection = connections["default"]
            if connection.vendor == "postgresql":
                _insert_events_pg(connection, records)
            else:
                with connection.cursor() as cursor:
                    head, _shard_head = _log_heads(cursor, records[0][0].shard)
                    shard_heads: dict[int, int | None] = {}
                    for offset, (record, created_at) in enumerate(records, start=1):
                        if record.shard not in shard_heads:
                            shard_heads[record.shard] = _log_heads(cursor, record.shard)[1]
                        record.id, record.prev_id = head + offset, head + offset - 1
                        record.shard_prev = shard_heads[record.shard]
                        shard_heads[record.shard] = record.id
                        record.pk = _insert_event(cursor, record, created_at, record.id)
                        record.frame = encode_frame(
                            record.id, record.type, record.timestamp, record.payload
                        )
            for record, _created_at in records:
                transaction.on_commit(functools.partial(self._committed, record), robust=True)
        return [record for record, _created_at in records]

    def publish_with_change(
        self,
        change_sql: str,
        change_params: Mapping[str, Any],
        event_type: str,
        payload: Mapping[str, Any],
        *,
        fill: Sequence[tuple[str, str]] = (),
        at: datetime | None = None,
    ) -> tuple[tuple[Any, ...], LoggedEvent] | None:
        """PostgreSQL: a change and its event's log row in one statement, so a change made
        outside any transaction is one autocommit round trip and one commit.

        `change_sql` is an `UPDATE … RETURNING …` with named placeholders (`%(name)s`,
        names not starting with `rf_`) for `change_params`; the event is logged only if it
        changed a row. `payload` is validated and guarded as `publish()` does, before
        anything is written; then each `(field, column)` of `fill` sets that payload field
        from the changed row's returned column (skipped when NULL). Fill only from columns
        that cannot carry new free text: values the same guard checked when they were
        written, or numbers.

        Returns (the changed row's returned columns, the record), or None when the change
        matched no row (nothing written). Hands the event on at commit, like `publish()`.
        """
        connection = connections["default"]
        if connection.vendor != "postgresql":
            raise RuntimeError("publish_with_change needs PostgreSQL (writable CTEs)")
        data = self.checked(event_type, payload)
        record, created_at = _record(event_type, data, at)
        params = {
            **change_params,
            "rf_type": event_type,
            "rf_project": record.project_id,
            "rf_shard": record.shard,
            "rf_run": record.run_id,
            "rf_payload": _payload_param(data, connection),
            "rf_created": created_at,
        }
        statement = _with_change_sql(change_sql, tuple(fill))
        row = prepared.cursor(connection).fetch_one(statement, params)
        if row is None:
            return None
        *changed, pk = row
        record.pk = int(pk)
        for (field, _column), value in zip(
            fill, changed[-len(fill) :] if fill else (), strict=True
        ):
            if value is not None:
                data[field] = value
        transaction.on_commit(lambda: self._committed(record), robust=True)
        return tuple(changed), record

    def checked(self, event_type: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The payload as it will be logged: validated (InvalidEvent) and guarded
        (PHIRejected), with metrics and a log line naming fields and categories only."""
        try:
            model = validate_payload(event_type, payload)
        except InvalidEvent:
            metrics.EVENTS_REJECTED.labels(
                type=event_type if event_type in CATEGORY_OF else "unknown"
            ).inc()
            raise
        data: dict[str, Any] = model.model_dump(by_alias=True, exclude_none=True)
        findings = phi.scan(data)
        if findings:
            for finding in findings:
                metrics.PHI_REJECTIONS.labels(category=finding.category).inc()
            # Field paths and categories only: the value is the thing we must not spread.
            logger.warning(
                "PHI guard refused %s: %s", event_type, ", ".join(str(f) for f in findings)
            )
            raise PHIRejected(event_type, findings)
        return data

    def flush(self, timeout: float = stamper.EXIT_FLUSH_TIMEOUT) -> bool:
        """Wait until every event this process committed so far was handed on (PostgreSQL:
        positioned first, off the committing thread; SQLite: already done at commit). For
        code that needs an event's position now, and for the exit path. False on timeout."""
        return stamper.flush(timeout)

    def _committed(self, record: LoggedEvent) -> None:
        record.committed_at = time.time()
        if record.id:
            self._deliver(record)
        else:
            # PostgreSQL: positioned by this process's stamper, which then delivers it.
            stamper.stamper(self._deliver).submit(record)

    def _deliver(self, record: LoggedEvent) -> None:
        """A committed, positioned record to the sinks, then to in-process subscribers."""
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
