"""The EventBus and the broadcaster: validate → guard → log → on commit → subscribers."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction

from events.bus import EventBus, PHIRejected, event_bus
from events.models import Event
from events.schemas import EventRejected, InvalidEvent
from runs import services
from runs.broadcaster import run_event_broadcaster

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(world: Any) -> Any:
    return services.create_run(world.project, "Cohort A", ["Ingest", "Model"], world.alice)


@pytest.fixture
def received() -> Any:
    got: list[tuple[str, dict[str, Any]]] = []
    unsubscribes = []

    def listen(topic: str) -> None:
        unsubscribes.append(event_bus.subscribe(topic, lambda e: got.append((topic, e))))

    yield got, listen
    for unsubscribe in unsubscribes:
        unsubscribe()


def test_the_seeds_integration_example_reaches_a_jobs_subscriber(
    world: Any, received: Any, django_capture_on_commit_callbacks: Any
) -> None:
    got, listen = received
    listen("jobs")
    with django_capture_on_commit_callbacks(execute=True):
        run = services.create_run(world.project, "Test Run", ["a", "b", "c"], world.alice)
    assert [(topic, e["type"]) for topic, e in got] == [("jobs", "run.created")]
    payload = got[0][1]["payload"]
    assert payload == {
        "runId": run.pk,
        "projectId": world.project.pk,
        "runName": "Test Run",
        "stageCount": 3,
        "createdBy": "alice",
        "createdAt": payload["createdAt"],
    }


def test_it_routes_by_type_category_and_jobs(
    run: Any, received: Any, django_capture_on_commit_callbacks: Any
) -> None:
    got, listen = received
    for topic in ("run.started", "RUN_EVENTS", "STAGE_EVENTS", "jobs", "artifact.created"):
        listen(topic)
    with django_capture_on_commit_callbacks(execute=True):
        services.start_run(run.pk)
    assert sorted(topic for topic, e in got) == ["RUN_EVENTS", "jobs", "run.started"]


def test_it_calls_handlers_only_after_commit(run: Any, received: Any) -> None:
    got, listen = received
    listen("jobs")
    with transaction.atomic():
        services.start_run(run.pk)
        assert got == []  # inside the transaction: logged, not yet handed on
        assert Event.objects.filter(type="run.started").count() == 1


def test_a_rolled_back_change_leaves_no_event(
    run: Any, received: Any, django_capture_on_commit_callbacks: Any
) -> None:
    got, listen = received
    listen("jobs")
    before = Event.objects.count()
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        services.start_run(run.pk)
        raise RuntimeError("boom")
    assert callbacks == []
    assert Event.objects.count() == before
    assert got == []


def test_a_failing_handler_does_not_break_publishing(
    run: Any, received: Any, django_capture_on_commit_callbacks: Any
) -> None:
    got, listen = received

    def broken(_event: dict[str, Any]) -> None:
        raise ValueError("handler bug")

    unsubscribe = event_bus.subscribe("jobs", broken)
    listen("jobs")
    try:
        with django_capture_on_commit_callbacks(execute=True):
            services.start_run(run.pk)
    finally:
        unsubscribe()
    assert [e["type"] for _, e in got] == ["run.started"]


def test_async_handlers_are_awaited(run: Any, django_capture_on_commit_callbacks: Any) -> None:
    seen: list[str] = []

    async def handler(event: dict[str, Any]) -> None:
        seen.append(event["type"])

    unsubscribe = event_bus.subscribe("RUN_EVENTS", handler)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            services.start_run(run.pk)
    finally:
        unsubscribe()
    assert seen == ["run.started"]


def test_unsubscribe_stops_delivery(run: Any, django_capture_on_commit_callbacks: Any) -> None:
    seen: list[str] = []
    unsubscribe = event_bus.subscribe("jobs", lambda e: seen.append(e["type"]))
    unsubscribe()
    with django_capture_on_commit_callbacks(execute=True):
        services.start_run(run.pk)
    assert seen == []


def test_it_refuses_unknown_topics() -> None:
    with pytest.raises(ValueError):
        EventBus().subscribe("everything", lambda e: None)


def test_it_refuses_an_invalid_event_and_logs_nothing(run: Any) -> None:
    before = Event.objects.count()
    with pytest.raises(InvalidEvent) as caught:
        event_bus.publish("stage.progress", {"runId": run.pk, "progress": 150})
    assert "payload.progress" in str(caught.value)
    assert Event.objects.count() == before


def test_it_refuses_phi_naming_field_and_category_never_the_value(run: Any) -> None:
    stage = run.stages.first()
    with pytest.raises(PHIRejected) as caught:
        run_event_broadcaster.broadcast_stage_progress(
            {
                "runId": run.pk,
                "stageId": stage.pk,
                "progress": 10,
                "statusMessage": "Loaded chart for patient John Doe, SSN 219-09-9999",
            }
        )
    assert isinstance(caught.value, EventRejected)
    message = str(caught.value)
    assert "statusMessage" in message
    assert "John" not in message and "219-09-9999" not in message
    categories = {f.category for f in caught.value.findings}
    assert "SSN" in categories
    assert not Event.objects.filter(type="stage.progress").exists()


def test_it_refuses_an_ssn_split_across_stage_name_and_status_message(run: Any) -> None:
    # Each field alone is clean; a subscriber shows them side by side.
    stage = run.stages.first()
    with pytest.raises(PHIRejected) as caught:
        run_event_broadcaster.broadcast_stage_progress(
            {
                "runId": run.pk,
                "stageId": stage.pk,
                "stageName": "Batch SSN 123",
                "progress": 10,
                "statusMessage": "45-6789",
            }
        )
    assert "stageName+statusMessage: SSN" in str(caught.value)
    assert "6789" not in str(caught.value)
    assert not Event.objects.filter(type="stage.progress").exists()


def test_it_refuses_bidi_controls_in_event_text(run: Any) -> None:
    stage = run.stages.first()
    with pytest.raises(PHIRejected) as caught:
        run_event_broadcaster.broadcast_stage_progress(
            {"runId": run.pk, "stageId": stage.pk, "progress": 10, "statusMessage": "ok \u202e"}
        )
    assert "statusMessage: BIDI_CONTROL" in str(caught.value)


def test_a_refused_event_rolls_back_the_change_that_caused_it(world: Any) -> None:
    # A plain .save() with PHI in a free-text field: the guard refuses the event, and since
    # the receiver runs inside the save's transaction, the change is not kept either.
    run = services.create_run(world.project, "Safe", ["a"], world.alice)
    services.start_run(run.pk)
    stage = run.stages.get()
    services.start_stage(stage.pk)
    with pytest.raises(PHIRejected):
        services.report_progress(stage.pk, 10, status_message="Call Mr. Smith at 617-555-0199")
    stage.refresh_from_db()
    assert stage.progress == 0 and stage.status_message == ""


def test_the_broadcaster_fills_in_what_the_database_and_clock_know(
    run: Any, django_capture_on_commit_callbacks: Any
) -> None:
    stage = run.stages.get(position=1)
    # The seed's example, with our ids: no projectId, no stageIndex, no timestamps.
    record = run_event_broadcaster.broadcast_stage_progress(
        {
            "runId": run.pk,
            "stageId": stage.pk,
            "stageName": "Data Ingestion",
            "progress": 45,
            "statusMessage": "Processing 450 of 1000 rows",
            "itemsProcessed": 450,
            "itemsTotal": 1000,
        }
    )
    assert record.payload["projectId"] == run.project_id
    assert record.payload["stageIndex"] == 1
    started = run_event_broadcaster.broadcast_run_started(
        {"runId": run.pk, "estimatedDuration": 300000}
    )
    assert started.payload["startedAt"].endswith("Z")
    assert started.payload["projectId"] == run.project_id


def test_the_broadcasters_governance_example_works(world: Any, run: Any) -> None:
    approval = services.request_approval(
        run.pk, governance_type="PHI_SCAN", priority="HIGH", assigned_to=[world.bob]
    )
    record = run_event_broadcaster.broadcast_governance_required(
        {
            "runId": run.pk,
            "governanceId": approval.pk,
            "governanceType": "PHI_SCAN",
            "priority": "HIGH",
            "assignedTo": ["admin@example.com"],
        }
    )
    assert record.type == "governance.required"
    assert record.frame.startswith('{"id":')


async def test_the_async_twins_work(world: Any, transactional_db: Any) -> None:
    from channels.db import database_sync_to_async

    run = await database_sync_to_async(services.create_run)(
        world.project, "Async", ["a"], world.alice
    )
    record = await run_event_broadcaster.abroadcast_run_started({"runId": run.pk})
    assert record.type == "run.started"


def test_events_ids_follow_commit_order(world: Any) -> None:
    ids = []
    for name in ("a", "b", "c"):
        services.create_run(world.project, name, ["x"], world.alice)
        ids.append(Event.objects.latest("position").position)
    assert ids == sorted(ids)
