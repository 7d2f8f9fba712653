"""Every legal and illegal transition in `runs.services`, and the events each one emits."""

from __future__ import annotations

from typing import Any

import pytest

from events.models import Event
from runs import services
from runs.models import ApprovalStatus, RunStatus, StageStatus
from runs.services import TransitionError

pytestmark = pytest.mark.django_db


def emitted(since: int) -> list[tuple[str, dict[str, Any]]]:
    return [
        (e.type, e.payload) for e in Event.objects.filter(position__gt=since).order_by("position")
    ]


def head() -> int:
    last = Event.objects.order_by("-position").first()
    return last.position or 0 if last else 0


@pytest.fixture
def run(world: Any) -> Any:
    return services.create_run(world.project, "Cohort A", ["Ingest", "Model"], world.alice, 5000)


def test_creating_a_run_emits_run_created_with_the_stage_count(world: Any) -> None:
    mark = head()
    run = services.create_run(world.project, "R", ["a", "b", "c"], world.alice)
    [(kind, payload)] = emitted(mark)
    assert kind == "run.created"
    assert payload["stageCount"] == 3 and payload["runName"] == "R"
    assert payload["runId"] == run.pk and run.stages.count() == 3


def test_a_whole_lifecycle_emits_every_event_once_in_order(world: Any, run: Any) -> None:
    mark = head()
    ingest, model = run.stages.order_by("position")
    services.start_run(run.pk)
    services.start_stage(ingest.pk)
    services.report_progress(ingest.pk, 50, 500, 1000, "Processing 500 of 1000 rows")
    services.complete_stage(ingest.pk)
    services.add_artifact(
        run.pk,
        kind="table",
        name="summary.csv",
        size_bytes=10,
        content_type="text/csv",
        stage_id=ingest.pk,
    )
    approval = services.request_approval(
        run.pk, governance_type="EXPORT_REVIEW", priority="LOW", assigned_to=[world.bob]
    )
    services.decide_approval(
        approval.pk, granted=True, decided_by=world.bob, reason_code="MEETS_POLICY"
    )
    services.start_stage(model.pk)
    services.complete_stage(model.pk)
    services.complete_run(run.pk)
    events = emitted(mark)
    assert [kind for kind, _ in events] == [
        "run.started",
        "stage.started",
        "stage.progress",
        "stage.completed",
        "artifact.created",
        "governance.required",
        "approval.granted",
        "stage.started",
        "stage.completed",
        "run.completed",
    ]
    payloads = dict(events)
    assert payloads["run.started"]["estimatedDuration"] == 5000
    assert payloads["stage.progress"]["itemsProcessed"] == 500
    assert payloads["governance.required"]["assignedTo"] == ["bob"]
    assert payloads["approval.granted"]["decidedBy"] == "bob"
    assert payloads["approval.granted"]["reasonCode"] == "MEETS_POLICY"
    assert payloads["artifact.created"]["stageId"] == ingest.pk
    done = payloads["run.completed"]
    assert done["stagesCompleted"] == 2 and done["artifactsGenerated"] == 1


def test_failing_a_run_fails_its_running_stage_first(run: Any) -> None:
    ingest = run.stages.get(position=0)
    services.start_run(run.pk)
    services.start_stage(ingest.pk)
    mark = head()
    services.fail_run(run.pk, "TIMEOUT")
    events = emitted(mark)
    assert [kind for kind, _ in events] == ["stage.failed", "run.failed"]
    assert events[1][1]["failedStageId"] == ingest.pk
    assert events[1][1]["errorCode"] == "TIMEOUT"


def test_a_failed_stage_then_a_failed_run(run: Any) -> None:
    ingest = run.stages.get(position=0)
    services.start_run(run.pk)
    services.start_stage(ingest.pk)
    services.fail_stage(ingest.pk, "VALIDATION_FAILED")
    mark = head()
    services.fail_run(run.pk, "STAGE_FAILED")
    [(kind, payload)] = emitted(mark)
    assert kind == "run.failed" and payload["failedStageId"] == ingest.pk


def test_denying_an_approval_emits_approval_denied(world: Any, run: Any) -> None:
    approval = services.request_approval(run.pk, governance_type="PHI_SCAN", priority="HIGH")
    mark = head()
    services.decide_approval(approval.pk, granted=False, decided_by=world.alice)
    [(kind, payload)] = emitted(mark)
    assert kind == "approval.denied" and "reasonCode" not in payload


def test_a_plain_save_emits_too(run: Any) -> None:
    mark = head()
    run.name = "Renamed"
    run.save()  # no transition: no event
    assert emitted(mark) == []


def _nothing(r: Any, s: Any, w: Any) -> None:
    return None


def _running(r: Any, s: Any, w: Any) -> None:
    services.start_run(r.pk)
    services.start_stage(s.pk)


def _approval(r: Any, s: Any, w: Any) -> None:
    a = services.request_approval(r.pk, governance_type="PHI_SCAN", priority="LOW")
    services.decide_approval(a.pk, granted=True, decided_by=w.alice)


def _approval_id(r: Any) -> str:
    return str(r.approvals.get().pk)


# (label, legal set-up, the illegal step)
ILLEGAL = [
    ("complete a run that never started", _nothing, lambda r, s, w: services.complete_run(r.pk)),
    (
        "start a run twice",
        lambda r, s, w: services.start_run(r.pk),
        lambda r, s, w: services.start_run(r.pk),
    ),
    ("start a stage of a created run", _nothing, lambda r, s, w: services.start_stage(s.pk)),
    (
        "progress going back",
        lambda r, s, w: (_running(r, s, w), services.report_progress(s.pk, 50)),
        lambda r, s, w: services.report_progress(s.pk, 40),
    ),
    (
        "progress of a pending stage",
        lambda r, s, w: services.start_run(r.pk),
        lambda r, s, w: services.report_progress(s.pk, 10),
    ),
    (
        "complete a run with unfinished stages",
        lambda r, s, w: services.start_run(r.pk),
        lambda r, s, w: services.complete_run(r.pk),
    ),
    (
        "move a stage of a finished run",
        lambda r, s, w: services.fail_run(r.pk, "CANCELLED"),
        lambda r, s, w: services.start_stage(s.pk),
    ),
    (
        "fail a finished run",
        lambda r, s, w: services.fail_run(r.pk, "CANCELLED"),
        lambda r, s, w: services.fail_run(r.pk, "TIMEOUT"),
    ),
    (
        "decide an approval twice",
        _approval,
        lambda r, s, w: services.decide_approval(_approval_id(r), granted=False, decided_by=w.bob),
    ),
    (
        "an artifact of a run that is not running",
        _nothing,
        lambda r, s, w: services.add_artifact(
            r.pk, kind="table", name="x.csv", size_bytes=1, content_type="text/csv"
        ),
    ),
    (
        "complete a completed stage",
        lambda r, s, w: (_running(r, s, w), services.complete_stage(s.pk)),
        lambda r, s, w: services.complete_stage(s.pk),
    ),
    (
        "approval for a finished run",
        lambda r, s, w: services.fail_run(r.pk, "CANCELLED"),
        lambda r, s, w: services.request_approval(r.pk, governance_type="PHI_SCAN", priority="LOW"),
    ),
]


def _snapshot(run: Any) -> Any:
    run.refresh_from_db()
    return (
        run.status,
        run.finished_at,
        [(s.status, s.progress) for s in run.stages.order_by("position")],
        [(a.status, a.decided_by_id) for a in run.approvals.all()],
        run.artifacts.count(),
    )


@pytest.mark.parametrize(("label", "setup", "illegal"), ILLEGAL, ids=[x[0] for x in ILLEGAL])
def test_an_illegal_transition_is_refused_and_changes_nothing(
    world: Any, run: Any, label: str, setup: Any, illegal: Any
) -> None:
    stage = run.stages.get(position=0)
    setup(run, stage, world)
    before, mark = _snapshot(run), head()
    with pytest.raises(TransitionError) as caught:
        illegal(run, stage, world)
    assert str(caught.value)
    assert emitted(mark) == []
    assert _snapshot(run) == before


@pytest.mark.parametrize(
    ("label", "action", "field"),
    [
        ("progress over 100", lambda s: services.report_progress(s.pk, 101), "progress"),
        ("negative progress", lambda s: services.report_progress(s.pk, -1), "progress"),
        ("progress as text", lambda s: services.report_progress(s.pk, "5"), "progress"),  # type: ignore[arg-type]
        (
            "processed over total",
            lambda s: services.report_progress(s.pk, 5, 11, 10),
            "itemsProcessed",
        ),
        ("unknown error code", lambda s: services.fail_stage(s.pk, "EXPLODED"), "errorCode"),
    ],
)
def test_bad_values_are_refused_naming_the_field(
    run: Any, label: str, action: Any, field: str
) -> None:
    stage = run.stages.get(position=0)
    services.start_run(run.pk)
    services.start_stage(stage.pk)
    mark = head()
    with pytest.raises(ValueError, match=f"^{field}:"):
        action(stage)
    stage.refresh_from_db()
    assert stage.progress == 0 and stage.status == StageStatus.RUNNING
    assert emitted(mark) == []


def test_the_state_after_a_refusal_is_unchanged(world: Any, run: Any) -> None:
    with pytest.raises(TransitionError):
        services.complete_run(run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.CREATED and run.finished_at is None


def test_an_approval_keeps_its_first_decision(world: Any, run: Any) -> None:
    approval = services.request_approval(run.pk, governance_type="PHI_SCAN", priority="LOW")
    services.decide_approval(approval.pk, granted=True, decided_by=world.alice)
    with pytest.raises(TransitionError):
        services.decide_approval(approval.pk, granted=False, decided_by=world.bob)
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.GRANTED and approval.decided_by == world.alice


def test_a_project_keeps_an_owner(world: Any) -> None:
    with pytest.raises(TransitionError):
        services.remove_member(world.project, world.alice)
    with pytest.raises(TransitionError):
        services.set_member(world.project, world.alice, "viewer")


@pytest.mark.django_db(transaction=True)
def test_concurrent_transitions_on_one_run_are_serialised(world: Any) -> None:
    import threading

    from django.db import connection

    run = services.create_run(world.project, "Raced", ["a"], world.alice)
    mark = head()
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def contender() -> None:
        barrier.wait()
        try:
            services.start_run(run.pk)
            outcomes.append("started")
        except TransitionError:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=contender) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["refused", "refused", "refused", "started"]
    assert [kind for kind, _ in emitted(mark)] == ["run.started"]


def test_it_returns_the_stage_from_report_progress_as_the_orm_loads_it(run: Any) -> None:
    services.start_run(run.pk)
    stage = run.stages.get(position=0)
    services.start_stage(stage.pk)
    returned = services.report_progress(stage.pk, 30, 3, 10, "Reading")
    loaded = type(stage).objects.get(pk=stage.pk)
    fields = [f.attname for f in type(stage)._meta.concrete_fields]
    assert {f: getattr(returned, f) for f in fields} == {f: getattr(loaded, f) for f in fields}
    assert returned.started_at is not None and returned.started_at.tzinfo is not None
