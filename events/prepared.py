"""Server-side prepared statements on Django's PostgreSQL connection, for the hot statements
of the event path (the change-and-log statement, the stamping): parsed and planned once per
connection instead of on every call.

A leaf of the core: the bus and the sequencer use it; it knows only Django and psycopg.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Params = Sequence[Any] | Mapping[str, Any]


class PreparedCursor:
    """A server-side-binding psycopg cursor on Django's connection, for the hot statements:
    each is parsed and planned once per connection (psycopg's prepared-statement cache)
    instead of on every call. Django's own cursors bind on the client and cannot prepare.

    Django's error translation, connection set-up and broken-transaction check still apply;
    what is lost is the debug query log (`connection.queries`) for these statements."""

    __slots__ = ("_cursor", "_generic", "_raw", "_wrapper")

    def __init__(self, wrapper: Any) -> None:
        from psycopg import Cursor

        self._wrapper = wrapper
        self._raw = wrapper.connection
        self._cursor = Cursor(self._raw)
        # Django turns psycopg's statement preparation off (prepare_threshold None), which
        # also disables an explicit prepare=True. Only this cursor asks for it: Django's own
        # client-binding cursors never prepare, so a threshold no statement reaches keeps
        # everything else as it was.
        if self._raw.prepare_threshold is None:
            self._raw.prepare_threshold = 2**31 - 1
        self._generic = False

    def fetch_one(self, sql: str, params: Params) -> tuple[Any, ...] | None:
        self._execute(sql, params)
        with self._wrapper.wrap_database_errors:
            return self._cursor.fetchone()

    def fetch_all(self, sql: str, params: Params) -> list[tuple[Any, ...]]:
        self._execute(sql, params)
        with self._wrapper.wrap_database_errors:
            return self._cursor.fetchall()

    def _execute(self, sql: str, params: Params) -> None:
        wrapper = self._wrapper
        if wrapper.in_atomic_block:
            wrapper.validate_no_broken_transaction()
        with wrapper.wrap_database_errors:
            if not self._generic and not wrapper.in_atomic_block:
                # A prepared statement is planned once only with a generic plan: PostgreSQL's
                # default keeps re-planning these (custom plans look cheaper once the NULL
                # tests of parameters fold away), which cost more than executing them.
                # Session-wide, it concerns only server-side prepared statements (this
                # cursor's; Django binds on the client) and SQL functions' plans. Set outside
                # a transaction only, so no rollback can undo it.
                self._cursor.execute("SET plan_cache_mode = force_generic_plan")
                self._generic = True
            self._cursor.execute(sql, params, prepare=True)


def cursor(wrapper: Any) -> PreparedCursor:
    """This connection's prepared cursor (a new one when Django reconnected)."""
    wrapper.ensure_connection()
    current: PreparedCursor | None = getattr(wrapper, "_rf_prepared", None)
    if current is None or current._raw is not wrapper.connection:
        current = PreparedCursor(wrapper)
        wrapper._rf_prepared = current
    return current
