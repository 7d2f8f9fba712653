"""The log cursor moves from the row id to `position` (see events/models.py).

Existing rows keep their cursor: position = id, so a client holding a `lastEventId` from
before the migration resumes where it was.
"""

from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("events", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="event",
            name="position",
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.RunSQL(
            "UPDATE events_event SET position = id", reverse_sql=migrations.RunSQL.noop
        ),
        migrations.AlterField(
            model_name="event",
            name="position",
            field=models.BigIntegerField(blank=True, null=True, unique=True),
        ),
        migrations.RemoveIndex(model_name="event", name="event_project_id"),
        migrations.RemoveIndex(model_name="event", name="event_run_id"),
        migrations.AlterModelOptions(name="event", options={"ordering": ["position"]}),
        migrations.AddIndex(
            model_name="event",
            index=models.Index(fields=["project_id", "position"], name="event_project_position"),
        ),
        migrations.AddIndex(
            model_name="event",
            index=models.Index(fields=["run_id", "position"], name="event_run_position"),
        ),
        migrations.AddIndex(
            model_name="event",
            index=models.Index(
                condition=models.Q(position__isnull=True),
                fields=["id"],
                name="event_unpositioned",
            ),
        ),
    ]
