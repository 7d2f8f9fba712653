"""Log positions on PostgreSQL: stamped after commit, in one short transaction of its own.

Writers insert their event rows with `position` NULL and take no global lock in their own
transaction, so event-emitting changes run side by side. Right after a writer commits (the
bus's on-commit hook), `stamp()` runs::

    BEGIN; SELECT pg_advisory_xact_lock(K);
    UPDATE events_event SET position = head + row_number() OVER (ORDER BY id)
     WHERE position IS NULL ...;  COMMIT

What must stay true, and why it does:

- **Positions become visible in position order.** Every stamping holds the advisory lock to
  its COMMIT, and PostgreSQL makes a commit visible before it releases the transaction's
  locks. The next stamping takes the lock only after that, and its UPDATE takes its snapshot
  after the lock (READ COMMITTED: one snapshot per statement), so it sees the previous
  stamping's head and stamps above it. A reader that has seen position N therefore sees every
  position below N too: none can appear later.
- **Gapless.** `head + row_number()` over the rows stamped together; `prev = position - 1`
  is the hub's chain. The head survives a fully pruned log through `pruned_through`.
- **No deadlock.** The stamping transaction locks only event rows nobody else locks, and
  nobody holds the advisory lock while waiting for anything but it. It runs outside every
  caller's transaction (it refuses to run inside one).
- **Cheap when idle.** A stamping that finds nothing writes nothing: no xid, no WAL flush.

One round trip: the four statements go as one simple-protocol query (no parameters: the
table names are constants and the writer's own row ids are integers formatted here).
Rows whose writer died between commit and stamping are stamped by the next stamping anyone
runs, the hubs' periodic log check included (events/gateway/hub.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import connections

from .models import Event, EventLogState

# Arbitrary constant for pg_advisory_xact_lock: one stamping at a time, per database.
LOG_LOCK_KEY = 0x52464556  # "RFEV"

_EVENTS = Event._meta.db_table
_STATE = EventLogState._meta.db_table

# The newest position: an index lookup, or what retention pruned through when the log is empty
# (positions are never reused).
HEAD_SQL = (
    f"COALESCE((SELECT MAX(position) FROM {_EVENTS}), "  # noqa: S608 (constants)
    f"(SELECT pruned_through FROM {_STATE} WHERE id = 1), 0)"
)

_STAMP = (
    "BEGIN; "  # noqa: S608 (constants; see the module docstring)
    # A plain index scan of the partial index: it marks the entries of rows stamped earlier
    # dead as it passes them (a bitmap scan does not), so the scan stays as short as the
    # number of rows waiting instead of growing with the log until the next VACUUM.
    "SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off; "
    f"SELECT pg_advisory_xact_lock({LOG_LOCK_KEY}); "
    f"WITH head AS (SELECT {HEAD_SQL} AS h), "
    "waiting AS ("
    f" SELECT id, row_number() OVER (ORDER BY id) AS n FROM {_EVENTS} WHERE position IS NULL"
    "), "
    "stamped AS ("
    f" UPDATE {_EVENTS} AS e SET position = head.h + waiting.n FROM head, waiting"
    " WHERE e.id = waiting.id RETURNING e.id, e.position"
    ") "
    "SELECT id, position FROM stamped{own}; "
    "COMMIT"
)
# The writer's own rows that another stamping got to first. A data-modifying CTE's outer query
# reads the snapshot from before the UPDATE, so rows stamped just now show NULL here and come
# only from `stamped`: no row is returned twice.
_OWN = (
    f" UNION ALL SELECT id, position FROM {_EVENTS} WHERE id IN ({{ids}}) AND position IS NOT NULL"  # noqa: S608
)


def stamp(own: Iterable[int] = (), using: str = "default") -> dict[int, int]:
    """Give every committed unpositioned row its position; return {row id: position} for the
    rows stamped here and for the `own` rows (by row id) another stamping already did.

    PostgreSQL only (an empty answer elsewhere). Must run outside any transaction: it commits
    its own, and a caller's row locks must never be held while it waits for the lock.
    """
    connection = connections[using]
    if connection.vendor != "postgresql":
        return {}
    if connection.in_atomic_block:
        raise RuntimeError("sequencer.stamp() runs its own transaction: call it after commit")
    ids = ",".join(str(int(pk)) for pk in own)
    sql = _STAMP.format(own=_OWN.format(ids=ids) if ids else "")
    connection.ensure_connection()
    with connection.cursor() as cursor:
        try:
            cursor.execute(sql)
            return _stamped_rows(cursor)
        except BaseException:
            _end_failed_block(connection)
            raise


def _stamped_rows(cursor: Any) -> dict[int, int]:
    """The id/position result among the batch's results (BEGIN, lock, stamp, COMMIT)."""
    found: dict[int, int] = {}
    while True:
        description = cursor.description
        if description is not None and len(description) == 2:
            found.update((int(pk), int(pos)) for pk, pos in cursor.fetchall())
        if not cursor.nextset():
            return found


def _end_failed_block(connection: Any) -> None:
    """An error inside the BEGIN … COMMIT batch leaves the session in an aborted transaction
    block the connection's autocommit mode does not end: end it, or every later query fails."""
    import psycopg

    raw = connection.connection
    if raw is None:
        return
    try:
        if raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            raw.execute("ROLLBACK")
    except Exception:
        connection.close()
