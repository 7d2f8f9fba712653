"""The bus's log write: the payload goes into the INSERT as orjson text, reads back as the
JSON field would have stored it, and a failed write dooms the caller's transaction."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction

from events.bus import _payload_param, event_bus
from events.models import Event
from runs import services

ROOT = Path(__file__).resolve().parent.parent


def progress_payload(run: Any, stage: Any, message: str) -> dict[str, Any]:
    return {
        "runId": run.pk,
        "projectId": run.project_id,
        "stageId": stage.pk,
        "stageName": stage.name,
        "stageIndex": stage.position,
        "progress": 40,
        "statusMessage": message,
        "itemsProcessed": 2**53 - 1,  # the largest count a payload may carry
        "itemsTotal": 2**53 - 1,
    }


@pytest.mark.django_db
def test_the_log_row_reads_back_as_the_json_field_would_have_stored_it(world: Any) -> None:
    run = services.create_run(world.project, "Cohort", ["Größe"], world.alice)
    stage = run.stages.get()
    # Non-ASCII: stdlib json.dumps writes \u escapes, orjson raw UTF-8; both must read back equal.
    data = progress_payload(run, stage, 'Größe prüfen – 東京 ✓ "quoted" \\ back')
    with transaction.atomic():
        record = event_bus.publish("stage.progress", data)
    via_orm = Event.objects.create(
        type="stage.progress",
        project_id=run.project_id,
        run_id=run.pk,
        payload=record.payload,
        created_at=Event.objects.get(id=record.pk).created_at,
    )
    logged = Event.objects.get(id=record.pk)
    assert logged.payload == record.payload == via_orm.payload
    assert logged.payload["statusMessage"] == data["statusMessage"]
    # The database's own JSON functions read it too (the API filters on payload keys).
    assert list(
        Event.objects.filter(payload__statusMessage=data["statusMessage"])
        .order_by("id")
        .values_list("id", flat=True)
    ) == [record.pk, via_orm.id]
    with connection.cursor() as cursor:
        cursor.execute("SELECT payload FROM events_event WHERE id = %s", [record.pk])
        assert json.loads(cursor.fetchone()[0]) == record.payload


@pytest.mark.django_db
def test_what_orjson_refuses_takes_the_json_fields_own_encoder() -> None:
    # Unreachable through validation (counts stop at 2**53 - 1), but never an error here.
    assert _payload_param({"n": 2**70}, connection) == '{"n": 1180591620717411303424}'
    assert _payload_param({"n": 1}, connection) == '{"n":1}'


@pytest.mark.django_db
def test_a_failed_log_write_dooms_the_callers_change(world: Any, monkeypatch: Any) -> None:
    """No savepoint around the log row: a caller that swallows the error cannot commit its
    change without the event (with a savepoint it could)."""
    from django.contrib.auth.models import User
    from django.db import DatabaseError

    from events import bus

    run = services.create_run(world.project, "Cohort", ["a"], world.alice)
    stage = run.stages.get()

    def failing_insert(*args: Any, **kwargs: Any) -> int:
        raise DatabaseError("disk I/O error")

    monkeypatch.setattr(bus, "_insert_event", failing_insert)
    with transaction.atomic():
        User.objects.create_user("the-change")
        with pytest.raises(DatabaseError):
            event_bus.publish("stage.progress", progress_payload(run, stage, "ok"))
        assert transaction.get_rollback()  # the caller's transaction can only roll back
    assert not User.objects.filter(username="the-change").exists()


# --- PostgreSQL: jsonb takes the orjson text -----------------------------------------------


@pytest.mark.postgres
@pytest.mark.e2e
def test_postgres_stores_the_orjson_payload_as_the_json_field_would() -> None:
    from devtools.servers import PostgresServer

    try:
        server = PostgresServer()
    except RuntimeError as exc:  # binaries not installed
        pytest.skip(str(exc))
    import tempfile

    with server, tempfile.TemporaryDirectory(prefix="rf-pgtest-") as var:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "researchflow.settings",
            "DATABASE_URL": server.url,
            "DEBUG": "1",
            "RESEARCHFLOW_VAR_DIR": var,
            "REDIS_URL": "",
        }

        def run(*args: str) -> str:
            done = subprocess.run(
                [sys.executable, *args],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr[-3000:]
            return done.stdout

        run("manage.py", "migrate", "--noinput")
        script = (
            "import django, json; django.setup(); "
            "from tests.test_bus_log_write import _postgres_scenario; "
            "print(json.dumps(_postgres_scenario()))"
        )
        result = json.loads(run("-c", script).strip().splitlines()[-1])
    assert result == {"vendor": "postgresql", "equal": True, "filtered": True, "typeof": "object"}


def _postgres_scenario() -> dict[str, Any]:
    """In a subprocess whose Django points at the cluster (DATABASE_URL)."""
    from django.contrib.auth.models import User

    from events.models import Event as LogEvent
    from runs import services as run_services

    alice = User.objects.create_user("alice-pg", "a@example.org", "x")
    project = run_services.create_project("PG project", owner=alice)
    run = run_services.create_run(project, "Cohort", ["Größe"], alice)
    stage = run.stages.get()
    data = progress_payload(run, stage, 'Größe prüfen – 東京 ✓ "quoted" \\ back')
    from events.bus import event_bus as bus

    with transaction.atomic():
        record = bus.publish("stage.progress", data)
    logged = LogEvent.objects.get(id=record.pk)
    via_orm = LogEvent.objects.create(
        type="stage.progress",
        project_id=run.project_id,
        run_id=run.pk,
        payload=record.payload,
        created_at=logged.created_at,
    )
    via_orm.refresh_from_db()
    filtered = list(
        LogEvent.objects.filter(payload__statusMessage=data["statusMessage"])
        .order_by("id")
        .values_list("id", flat=True)
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT jsonb_typeof(payload) FROM events_event WHERE id = %s", [record.pk])
        typeof = cursor.fetchone()[0]
    return {
        "vendor": connection.vendor,
        "equal": logged.payload == record.payload == via_orm.payload,
        "filtered": filtered == [record.pk, via_orm.id],
        "typeof": typeof,
    }
