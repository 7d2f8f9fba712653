"""PostgreSQL's write path, for real: the lean progress statement (the change and its log row
in one statement), batches in one transaction, and the stamper that positions committed
events off the committing thread.

Each check runs in a subprocess (`python -m tests.test_postgres_write_path <scenario>`)
against a throw-away cluster, as tests/test_postgres.py does.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from devtools.servers import PostgresServer
from tests import test_postgres

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

pg = test_postgres.pg  # the throw-away cluster fixture, one per module that uses it


def scenario(server: PostgresServer, name: str) -> dict[str, Any]:
    return test_postgres.scenario(
        server, name, timeout=120, module="tests.test_postgres_write_path"
    )


def test_a_progress_report_is_one_statement_and_its_event_says_what_the_row_holds(
    pg: PostgresServer,
) -> None:
    result = scenario(pg, "lean")
    first, omitted = result["events"][0], result["events"][1]
    assert first["type"] == "stage.progress"
    assert first["payload"] == {
        **result["names"],
        "progress": 10,
        "itemsProcessed": 100,
        "itemsTotal": 1000,
        "statusMessage": "Reading rows",
    }
    # Fields a report leaves out are the stored ones, from the row the statement changed.
    assert omitted["payload"]["progress"] == 20
    assert omitted["payload"]["itemsProcessed"] == 100
    assert omitted["payload"]["statusMessage"] == "Reading rows"
    # The log row holds the same payload, positioned, and the ids are the log's.
    assert result["logged"] == [e["payload"] for e in result["events"]]
    assert [e["id"] for e in result["events"]] == result["positions"]
    # The general path ran only where the lean statement could not decide.
    assert result["general_calls"] == {
        "report": 0,
        "noop": 1,
        "backwards": 1,
        "renamed": 1,
        "after_rename": 0,
    }
    # One statement to the server per lean report (the stamping runs on its own thread).
    assert result["statements_per_report"] == 1


def test_what_the_lean_statement_refuses_changes_nothing_and_logs_nothing(
    pg: PostgresServer,
) -> None:
    result = scenario(pg, "lean")
    assert result["noop_logged"] == 0
    assert result["backwards"] == "TransitionError"
    assert result["phi"] == "PHIRejected"
    assert result["phi_message_kept"] == "Reading rows"  # the refused text was never stored
    assert result["rolled_back_logged"] == 0
    assert result["rolled_back_progress"] == 30  # the caller's rollback undid the report
    assert result["not_running"] == "TransitionError"
    # A rename since this process cached the names: the event carries the new name.
    assert result["renamed_stage_name"] == "Renamed stage"
    assert result["unknown_stage"] == "DoesNotExist"


def test_a_batch_is_one_transaction_in_the_given_order_and_all_or_nothing(
    pg: PostgresServer,
) -> None:
    result = scenario(pg, "many")
    assert result["reports_positions_consecutive"] is True
    assert result["reports_stage_order"] == result["asked_stage_order"]
    assert result["publish_many_types"] == ["run.started", "stage.progress", "run.started"]
    assert result["publish_many_consecutive"] is True
    assert result["illegal_batch"] == "TransitionError"
    assert result["illegal_batch_logged"] == 0
    assert result["illegal_batch_progress"] == result["progress_before_illegal"]
    assert result["refused_publish_many"] == "PHIRejected"
    assert result["refused_publish_many_logged"] == 0
    assert result["delivered_in_position_order"] is True


# --- the scenarios (run in a subprocess with Django pointed at the cluster) ---------------------


def _world(stages: int = 3) -> tuple[Any, Any, list[Any]]:
    from django.contrib.auth.models import User

    from runs import services

    user, _ = User.objects.get_or_create(username="pg-writer")
    project = services.create_project("Write path", owner=user)
    run = services.create_run(project, "Cohort W", [f"Stage {n}" for n in range(stages)], user)
    services.start_run(run.pk)
    found = list(run.stages.order_by("position"))
    for stage in found:
        services.start_stage(stage.pk)
    return user, run, found


def _collect() -> list[dict[str, Any]]:
    from events.bus import event_bus

    seen: list[dict[str, Any]] = []
    event_bus.subscribe("stage.progress", seen.append)
    return seen


def _count_general(services: Any) -> dict[str, int]:
    calls = {"n": 0}
    general = services._report_progress

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        return general(*args, **kwargs)

    services._report_progress = counting
    return calls


def _error(call: Any) -> str:
    try:
        call()
    except Exception as exc:
        return type(exc).__name__
    return "ok"


def scenario_lean() -> dict[str, Any]:
    from django.db import transaction

    from events.bus import event_bus
    from events.models import Event
    from runs import services
    from runs.models import Stage

    _user, run, (stage, other, _third) = _world()
    seen = _collect()
    calls = _count_general(services)
    general: dict[str, int] = {}

    def step(name: str, call: Any) -> Any:
        before = calls["n"]
        outcome = call()
        general[name] = calls["n"] - before
        return outcome

    services.report_progress(stage.pk, 5)  # warm: the names cached, the statement prepared
    event_bus.flush(10)
    seen.clear()
    calls["n"] = 0
    statements = _statements_sent(
        lambda: step(
            "report", lambda: services.report_progress(stage.pk, 10, 100, 1000, "Reading rows")
        )
    )
    services.report_progress(stage.pk, 20)  # the omitted fields keep their stored values
    before = Event.objects.count()
    step("noop", lambda: services.report_progress(stage.pk, 20))
    noop_logged = Event.objects.count() - before
    backwards = step("backwards", lambda: _error(lambda: services.report_progress(stage.pk, 3)))
    phi = _error(
        lambda: services.report_progress(
            stage.pk, 25, status_message="Patient John Smith, MRN 48213377"
        )
    )
    services.report_progress(stage.pk, 30)
    before = Event.objects.count()
    try:
        with transaction.atomic():
            services.report_progress(stage.pk, 40)
            raise RuntimeError("the caller rolls back")
    except RuntimeError:
        pass
    rolled_back_logged = Event.objects.count() - before
    services.report_progress(other.pk, 45)  # this process caches the stage's names
    Stage.objects.filter(pk=other.pk).update(name="Renamed stage")
    step("renamed", lambda: services.report_progress(other.pk, 50))
    step("after_rename", lambda: services.report_progress(other.pk, 60))
    services.fail_run(run.pk, "TIMEOUT")
    not_running = _error(lambda: services.report_progress(other.pk, 70))
    unknown = _error(lambda: services.report_progress("stg_" + "z" * 20, 10))
    assert event_bus.flush(10)
    events = [e for e in seen if e["payload"]["stageId"] == stage.pk]
    rows = Event.objects.filter(type="stage.progress", payload__stageId=stage.pk)
    stage.refresh_from_db()
    renamed = [e for e in seen if e["payload"]["stageId"] == other.pk]
    return {
        "names": {
            "runId": run.pk,
            "projectId": run.project_id,
            "stageId": stage.pk,
            "stageName": stage.name,
            "stageIndex": stage.position,
        },
        "events": events,
        "logged": [row.payload for row in rows.filter(position__gt=events[0]["id"] - 1)],
        "positions": [row.position for row in rows.filter(position__gt=events[0]["id"] - 1)],
        "general_calls": general,
        "statements_per_report": statements,
        "noop_logged": noop_logged,
        "backwards": backwards,
        "phi": phi,
        "phi_message_kept": stage.status_message,
        "rolled_back_logged": rolled_back_logged,
        "rolled_back_progress": stage.progress,
        "not_running": not_running,
        "renamed_stage_name": renamed[-1]["payload"]["stageName"] if renamed else None,
        "unknown_stage": unknown,
    }


def _statements_sent(call: Any) -> int:
    """How many statements this thread sends to the server during `call()` (psycopg's
    `Cursor.execute`, which Django's client-binding cursors inherit; the stamper's thread is
    not counted)."""
    import threading

    import psycopg

    me = threading.get_ident()
    sent = {"n": 0}
    original = psycopg.Cursor.execute

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() == me:
            sent["n"] += 1
        return original(self, *args, **kwargs)

    psycopg.Cursor.execute = counting  # type: ignore[method-assign]
    try:
        call()
    finally:
        psycopg.Cursor.execute = original  # type: ignore[method-assign]
    return sent["n"]


def scenario_many() -> dict[str, Any]:
    from events.bus import event_bus
    from events.models import Event
    from events.schemas import iso_timestamp
    from runs import jobs
    from runs.models import Stage

    _user, run, stages = _world(4)
    seen = _collect()
    order = [stages[2], stages[0], stages[3], stages[1]]
    done = jobs.publish_job_progress_many(
        [{"stageId": s.pk, "progress": 10 + n, "itemsProcessed": n} for n, s in enumerate(order)]
    )
    assert event_bus.flush(10)
    assert [s.pk for s in done] == [s.pk for s in order]
    batch = sorted(
        Event.objects.filter(type="stage.progress", run_id=run.pk).values_list(
            "position", "payload"
        ),
    )
    positions = [p for p, _payload in batch]

    def started() -> tuple[str, dict[str, Any]]:
        return (
            "run.started",
            {"runId": run.pk, "projectId": run.project_id, "startedAt": iso_timestamp()},
        )

    def progress(**extra: Any) -> tuple[str, dict[str, Any]]:
        payload = {
            "runId": run.pk,
            "projectId": run.project_id,
            "stageId": stages[0].pk,
            "stageName": "Stage 0",
            "stageIndex": 0,
            "progress": 99,
        }
        return "stage.progress", {**payload, **extra}

    published = event_bus.publish_many([started(), progress(), started()])
    assert event_bus.flush(10)
    before_illegal = Stage.objects.get(pk=stages[1].pk).progress
    count = Event.objects.count()
    illegal = _error(
        lambda: jobs.publish_job_progress_many(
            [{"stageId": stages[1].pk, "progress": 90}, {"stageId": stages[0].pk, "progress": 1}]
        )
    )
    illegal_logged = Event.objects.count() - count
    count = Event.objects.count()
    refused = _error(
        lambda: event_bus.publish_many(
            [started(), progress(statusMessage="patient email jane.doe@example.com")]
        )
    )
    refused_logged = Event.objects.count() - count
    ids = [e["id"] for e in seen]
    return {
        "reports_positions_consecutive": positions == list(range(positions[0], positions[0] + 4)),
        "reports_stage_order": [payload["stageId"] for _p, payload in batch],
        "asked_stage_order": [s.pk for s in order],
        "publish_many_types": [r.type for r in published],
        "publish_many_consecutive": [r.id for r in published]
        == list(range(published[0].id, published[0].id + 3)),
        "illegal_batch": illegal,
        "illegal_batch_logged": illegal_logged,
        "illegal_batch_progress": Stage.objects.get(pk=stages[1].pk).progress,
        "progress_before_illegal": before_illegal,
        "refused_publish_many": refused,
        "refused_publish_many_logged": refused_logged,
        "delivered_in_position_order": ids == sorted(ids),
    }


def main(argv: list[str]) -> None:
    import django

    django.setup()
    scenarios = {"lean": scenario_lean, "many": scenario_many}
    print(json.dumps(scenarios[argv[0]](), default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
