"""The stamping function's statements are planned once per session (a generic plan) rather
than on every call: PostgreSQL's default re-plans them each time, and planning cost more than
the stamping's own UPDATE (docs/benchmarks.md §11)."""

from __future__ import annotations

from typing import Any

from django.db import migrations

FORWARD = "ALTER FUNCTION rf_stamp_events(bigint[]) SET plan_cache_mode = force_generic_plan"
BACKWARD = "ALTER FUNCTION rf_stamp_events(bigint[]) RESET plan_cache_mode"


def forward(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD)


def backward(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD)


class Migration(migrations.Migration):
    dependencies = [("events", "0004_event_shard")]

    operations = [migrations.RunPython(forward, backward)]
