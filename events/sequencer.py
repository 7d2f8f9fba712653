"""Log positions on PostgreSQL: stamped after commit, in one short transaction of its own.

Writers insert their event rows with `position` NULL and take no global lock in their own
transaction, so event-emitting changes run side by side. Right after a writer commits (the
bus's on-commit hook), `stamp()` runs::

    SELECT … FROM rf_stamp_events(own)   -- autocommit: its own transaction
      = pg_advisory_xact_lock(K);
        UPDATE events_event SET position = head + row_number() OVER (ORDER BY id)
         WHERE position IS NULL …  RETURNING …

What must stay true, and why it does:

- **Positions become visible in position order.** Every stamping holds the advisory lock to
  its COMMIT, and PostgreSQL makes a commit visible before it releases the transaction's
  locks. The next stamping takes the lock only after that, and its UPDATE takes its snapshot
  after the lock (READ COMMITTED: one snapshot per statement), so it sees the previous
  stamping's head and stamps above it. A reader that has seen position N therefore sees every
  position below N too: none can appear later.
- **Gapless.** `head + row_number()` over the rows stamped together. The head survives a
  fully pruned log through `pruned_through`.
- **Each shard a chain.** The stamping also returns each row's `shard_prev`, the position
  before it in its shard (events/shards.py): the shard's head under the same lock and
  snapshot, then the rows before it in this stamping. So a shard's positions are linked the
  way the global ones are gapless, and the hubs follow each shard they hear as a chain.
- **No deadlock.** The stamping transaction locks only event rows nobody else locks, and
  nobody holds the advisory lock while waiting for anything but it. It runs outside every
  caller's transaction (it refuses to run inside one).
- **Cheap when idle.** A stamping that finds nothing writes nothing: no xid, no WAL flush.

One round trip and one statement: the lock and the UPDATE run inside a plpgsql function
(events/migrations/0003_stamp_function.py), called in autocommit. Its UPDATE is a later
statement of a VOLATILE function, so in READ COMMITTED it takes its snapshot after the lock,
as the UPDATE of a separate BEGIN … COMMIT block did; the implicit transaction of the call
holds the lock to its commit. (A single CTE that took the lock in a sub-select would not do:
a statement's snapshot is taken before any of it runs, so it could miss the previous head.)
Rows whose writer died between commit and stamping are stamped by the next stamping anyone
runs, the hubs' periodic log check included (events/gateway/hub.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connections

from . import prepared
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

# The stamping, one SQL function (events/migrations/0004_event_shard.py, first in 0003):
# `pg_advisory_xact_lock(LOG_LOCK_KEY)`, then one UPDATE … RETURNING of every unpositioned row,
# plus the caller's own rows another stamping already did. One statement in autocommit, so it
# is its own transaction: the lock is held to its commit.
_STAMP = (
    "SELECT stamped_id, stamped_position, stamped_shard_prev FROM rf_stamp_events(%s::bigint[])"
)


def stamp(own: Iterable[int] = (), using: str = "default") -> dict[int, tuple[int, int | None]]:
    """Give every committed unpositioned row its position; return {row id: (position,
    shard_prev)} for the rows stamped here and for the `own` rows (by row id) another stamping
    already did. `shard_prev` is the position before it in its shard (None: the first).

    PostgreSQL only (an empty answer elsewhere). Must run outside any transaction: it commits
    its own, and a caller's row locks must never be held while it waits for the lock.
    """
    connection = connections[using]
    if connection.vendor != "postgresql":
        return {}
    if connection.in_atomic_block:
        raise RuntimeError("sequencer.stamp() runs its own transaction: call it after commit")
    ids = [int(pk) for pk in own]
    return {
        int(pk): (int(pos), None if prev is None else int(prev))
        for pk, pos, prev in prepared.cursor(connection).fetch_all(_STAMP, [ids])
    }
