"""Events carry their shard (events/shards.py), and the stamping links each event to the one
before it in its shard.

Existing rows get `shard_of(project_id)` under the configured K. The PostgreSQL stamping
function (`rf_stamp_events`, first in 0003) now also returns each stamped row's `shard_prev`:
the position before it in the same shard (docs/ordering.md).
"""

from __future__ import annotations

import importlib
from typing import Any

from django.db import migrations, models

from events.shards import shard_of

_0003 = importlib.import_module("events.migrations.0003_stamp_function")

CREATE = """
CREATE FUNCTION rf_stamp_events(own bigint[])
RETURNS TABLE (stamped_id bigint, stamped_position bigint, stamped_shard_prev bigint)
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
        RETURNING e.id, e.position, e.shard
    )
    -- shard_prev: the previous position in the same shard. Within this stamping, the row
    -- before in position order; for a shard's first row here, the shard's head before it.
    -- The outer query reads the snapshot from before the UPDATE, where the rows stamped just
    -- now have no position, so that MAX is the head before this stamping (an index lookup on
    -- (shard, position)).
    SELECT s.id, s.position,
           COALESCE(LAG(s.position) OVER (PARTITION BY s.shard ORDER BY s.position),
                    (SELECT MAX(x.position) FROM events_event x WHERE x.shard = s.shard))
    FROM stamped s
    UNION ALL
    -- The caller's rows another stamping got to first (rows stamped just now show NULL here,
    -- so none comes twice), each with the position before it in its shard.
    SELECT e.id, e.position,
           (SELECT MAX(x.position) FROM events_event x
             WHERE x.shard = e.shard AND x.position < e.position)
    FROM events_event e
    WHERE e.id = ANY(own) AND e.position IS NOT NULL;
END
$fn$
"""

DROP = "DROP FUNCTION IF EXISTS rf_stamp_events(bigint[])"


def backfill(apps: Any, schema_editor: Any) -> None:
    Event = apps.get_model("events", "Event")
    db = schema_editor.connection.alias
    projects = Event.objects.using(db).values_list("project_id", flat=True).distinct()
    for project_id in list(projects):
        Event.objects.using(db).filter(project_id=project_id).update(shard=shard_of(project_id))


def create(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        # The result type changes: CREATE OR REPLACE cannot do that.
        schema_editor.execute(DROP)
        schema_editor.execute(CREATE)


def restore(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)
        schema_editor.execute(_0003.CREATE)


class Migration(migrations.Migration):
    dependencies = [("events", "0003_stamp_function")]

    operations = [
        migrations.AddField(
            model_name="event",
            name="shard",
            field=models.PositiveSmallIntegerField(default=0, db_default=0),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name="event",
            index=models.Index(fields=["shard", "position"], name="event_shard_position"),
        ),
        migrations.RunPython(create, restore),
    ]
