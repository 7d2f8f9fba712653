"""The event log: retention, the prune watermark, and the SQLite settings it relies on."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from events.models import Event, EventLogState
from runs import services

pytestmark = pytest.mark.django_db


def test_prune_events_deletes_only_what_is_older_than_the_retention(world: Any) -> None:
    services.create_run(world.project, "old", ["a"], world.alice)
    services.create_run(world.project, "new", ["a"], world.alice)
    old, new = Event.objects.order_by("id")
    Event.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=8))
    out = StringIO()
    call_command("prune_events", stdout=out)
    assert list(Event.objects.values_list("id", flat=True)) == [new.id]
    assert EventLogState.pruned_through_id() == old.id
    assert f"through #{old.id}" in out.getvalue()


def test_prune_events_honours_days(world: Any) -> None:
    services.create_run(world.project, "r", ["a"], world.alice)
    Event.objects.update(created_at=timezone.now() - timedelta(days=3))
    call_command("prune_events", days=7, stdout=StringIO())
    assert Event.objects.count() == 1
    call_command("prune_events", days=2, stdout=StringIO())
    assert Event.objects.count() == 0


def test_prune_events_with_nothing_to_do_keeps_the_watermark(world: Any) -> None:
    services.create_run(world.project, "r", ["a"], world.alice)
    call_command("prune_events", stdout=StringIO())
    assert EventLogState.pruned_through_id() == 0
    assert Event.objects.count() == 1


def test_the_watermark_never_moves_back(world: Any) -> None:
    services.create_run(world.project, "r", ["a"], world.alice)
    EventLogState.objects.create(pk=1, pruned_through=10_000)
    Event.objects.update(created_at=timezone.now() - timedelta(days=30))
    call_command("prune_events", stdout=StringIO())
    assert EventLogState.pruned_through_id() == 10_000


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout() -> None:
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"
        cursor.execute("PRAGMA busy_timeout")
        assert cursor.fetchone()[0] >= 5000


def test_it_takes_the_sequencers_lock_key_in_the_stamp_function() -> None:
    """The PostgreSQL stamping function (a migration, frozen SQL) and anything else that
    takes the log's advisory lock must agree on its key."""
    import importlib

    from events import sequencer

    migration = importlib.import_module("events.migrations.0003_stamp_function")
    assert f"pg_advisory_xact_lock({sequencer.LOG_LOCK_KEY})" in migration.CREATE
