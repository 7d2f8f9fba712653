"""PostgreSQL: the sequencer's stamping as one SQL function (`rf_stamp_events`).

Called in autocommit as one statement, it is its own transaction: the advisory lock is taken
inside it and held to its commit, and the stamping UPDATE, a later statement of a VOLATILE
plpgsql function, takes its snapshot after the lock (events/sequencer.py says why that keeps
positions visible in order). Nothing to do on SQLite.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION rf_stamp_events(own bigint[])
RETURNS TABLE (stamped_id bigint, stamped_position bigint)
LANGUAGE plpgsql VOLATILE
-- A plain index scan of the partial index marks the entries of rows stamped earlier dead as
-- it passes them (a bitmap scan does not), so the scan stays as short as the rows waiting.
SET enable_bitmapscan = off
SET enable_seqscan = off
AS $fn$
BEGIN
    PERFORM pg_advisory_xact_lock(1380336982);  -- 0x52464556, "RFEV": one stamping at a time
    -- A new statement: in READ COMMITTED its snapshot is taken now, after the lock.
    RETURN QUERY
    WITH head AS (
        SELECT COALESCE((SELECT MAX(position) FROM events_event),
                        (SELECT pruned_through FROM events_eventlogstate WHERE id = 1),
                        0) AS h
    ),
    waiting AS (
        SELECT id, row_number() OVER (ORDER BY id) AS n
        FROM events_event WHERE position IS NULL
    ),
    stamped AS (
        UPDATE events_event AS e SET position = head.h + waiting.n
        FROM head, waiting WHERE e.id = waiting.id
        RETURNING e.id, e.position
    )
    SELECT s.id, s.position FROM stamped s
    UNION ALL
    -- The caller's rows another stamping got to first. The outer query reads the snapshot
    -- from before the UPDATE: rows stamped just now show NULL here, so none comes twice.
    SELECT e.id, e.position FROM events_event e
    WHERE e.id = ANY(own) AND e.position IS NOT NULL;
END
$fn$
"""

DROP = "DROP FUNCTION IF EXISTS rf_stamp_events(bigint[])"


def create(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("events", "0002_event_position")]

    operations = [migrations.RunPython(create, drop)]
