"""A run's REST snapshot folded into the watcher's state (no server): what the state says after
it, that it replaces what was known, and that later events still move it on.
"""

from __future__ import annotations

from typing import Any

from test_watch_model import RUN, STAGES, TS, Events, recorded

from researchflow_client.snapshot import RunSnapshot
from researchflow_client.watch.sinks import LiveView
from researchflow_client.watch.state import WatchState

PROJECT = "prj_" + "b" * 20
GOV = "gov_" + "d" * 20
ART = "art_" + "e" * 20
LATER = "2026-12-01T10:00:09.000Z"


def stage(n: int, status: str, progress: int, **extra: Any) -> dict[str, Any]:
    stage_id, name = STAGES[n]
    return {
        "id": stage_id,
        "runId": RUN,
        "stageIndex": n,
        "name": name,
        "status": status,
        "progress": progress,
        "itemsProcessed": None,
        "itemsTotal": None,
        "statusMessage": "",
        "startedAt": None if status == "pending" else TS,
        "finishedAt": LATER if status in ("completed", "failed") else None,
        "errorCode": None,
        **extra,
    }


def snapshot(status: str = "running", **extra: Any) -> RunSnapshot:
    """`GET /api/runs/<id>/` as the server sends it (camelCase, timestamps with Z)."""
    body: dict[str, Any] = {
        "id": RUN,
        "projectId": PROJECT,
        "name": "Cohort A",
        "status": status,
        "createdBy": "alice",
        "createdAt": TS,
        "startedAt": TS,
        "finishedAt": LATER if status in ("completed", "failed") else None,
        "estimatedDuration": None,
        "errorCode": None,
        "stages": [
            stage(0, "completed", 100, itemsProcessed=1000, itemsTotal=1000),
            stage(1, "running", 40, itemsProcessed=400, itemsTotal=1000, statusMessage="cleaning"),
            stage(2, "pending", 0),
        ],
        "artifacts": [
            {
                "id": ART,
                "runId": RUN,
                "stageId": STAGES[0][0],
                "kind": "report",
                "name": "summary.pdf",
                "sizeBytes": 120_551,
                "contentType": "application/pdf",
                "checksum": None,
                "createdAt": TS,
            }
        ],
        "approvals": [
            {
                "id": GOV,
                "runId": RUN,
                "governanceType": "PHI_SCAN",
                "priority": "HIGH",
                "status": "granted",
                "assignedTo": ["bob"],
                "decidedBy": "bob",
                "reasonCode": "DEIDENTIFIED",
                "requestedAt": TS,
                "decidedAt": TS,
            },
            {
                "id": "gov_" + "f" * 20,
                "runId": RUN,
                "governanceType": "EXPORT_REVIEW",
                "priority": "LOW",
                "status": "pending",
                "assignedTo": [],
                "decidedBy": None,
                "reasonCode": None,
                "requestedAt": TS,
                "decidedAt": None,
            },
        ],
        "someFieldANewerServerAdds": 1,
    }
    body.update(extra)
    return RunSnapshot.model_validate(body)


def test_it_takes_the_runs_status_name_and_stage_count_from_the_snapshot() -> None:
    state = WatchState()
    run = state.apply_snapshot(snapshot())
    assert state.run(RUN) is run
    assert (run.status, run.name, run.project_id, run.stage_count, run.finished) == (
        "running",
        "Cohort A",
        PROJECT,
        3,
        False,
    )


def test_it_takes_every_started_stages_status_and_progress() -> None:
    run = WatchState().apply_snapshot(snapshot())
    assert [
        (s.name, s.index, s.status, s.progress, s.items_processed, s.status_message)
        for s in run.ordered_stages()
    ] == [
        ("Load data", 0, "completed", 100, 1000, None),
        ("Clean", 1, "running", 40, 400, "cleaning"),
    ]  # the pending stage is not a bar: the view counts it as not started yet
    assert run.stages[STAGES[0][0]].duration_ms == 9_000


def test_it_takes_the_artifacts_and_the_approvals() -> None:
    run = WatchState().apply_snapshot(snapshot())
    assert [(a.artifact_id, a.name, a.kind, a.size_bytes, a.stage_id) for a in run.artifacts] == [
        (ART, "summary.pdf", "report", 120_551, STAGES[0][0])
    ]
    assert [
        (a.governance_type, a.status, a.priority, a.decided_by, a.reason_code)
        for a in run.approvals.values()
    ] == [
        ("PHI_SCAN", "granted", "HIGH", "bob", "DEIDENTIFIED"),
        ("EXPORT_REVIEW", "required", "LOW", None, None),
    ]
    assert [a.governance_type for a in run.pending_approvals] == ["EXPORT_REVIEW"]


def test_a_completed_snapshot_finishes_the_run_with_its_duration() -> None:
    done = snapshot(
        "completed",
        stages=[stage(n, "completed", 100) for n in range(3)],
    )
    run = WatchState().apply_snapshot(done)
    assert (run.status, run.finished, run.duration_ms, run.stages_done) == (
        "completed",
        True,
        9_000,
        3,
    )


def test_a_failed_snapshot_finishes_the_run_with_its_code_and_failed_stage() -> None:
    failed = snapshot(
        "failed",
        errorCode="STAGE_FAILED",
        stages=[
            stage(0, "completed", 100),
            stage(1, "failed", 40, errorCode="OUT_OF_MEMORY"),
            stage(2, "pending", 0),
        ],
    )
    run = WatchState().apply_snapshot(failed)
    assert (run.status, run.error_code, run.failed_stage_id) == (
        "failed",
        "STAGE_FAILED",
        STAGES[1][0],
    )
    clean = run.stages[STAGES[1][0]]
    assert (clean.status, clean.error_code, clean.progress) == ("failed", "OUT_OF_MEMORY", 40)


def test_it_replaces_what_events_had_said_of_the_run() -> None:
    make = Events()
    state = WatchState()
    for event in make.whole_run()[:8]:  # stage 0 at 50 %, an approval required
        state.apply(event)
    seen = state.last_event_id
    run = state.apply_snapshot(snapshot())
    assert run.stages[STAGES[0][0]].status == "completed"  # the snapshot is newer
    assert run.approvals[GOV].status == "granted"
    assert (state.last_event_id, run.last_event_id) == (seen, seen)  # no event was seen


def test_events_after_it_move_the_run_on_and_a_late_one_cannot_move_it_back() -> None:
    make = Events()
    make.next_id = 500
    state = WatchState()
    state.apply_snapshot(snapshot())
    state.apply(make.progress(0, 60))  # older than the snapshot: stage 0 completed already
    state.apply(make.progress(1, 70))
    notes = state.apply(make.completed_stage(1))
    run = state.runs[RUN]
    assert (run.stages[STAGES[0][0]].status, run.stages[STAGES[0][0]].progress) == (
        "completed",
        100,
    )
    assert (run.stages[STAGES[1][0]].status, run.stages[STAGES[1][0]].progress) == (
        "completed",
        100,
    )
    assert [note.kind for note in notes] == ["stage.completed"]
    assert run.stages_done == 2


def test_the_view_draws_a_snapshot_like_the_same_run_seen_through_events() -> None:
    console = recorded()
    state = WatchState()
    view = LiveView(console, state, run_id=RUN, caption="run on ws://test/ws")
    view.start()
    state.apply_snapshot(snapshot())
    view.warn("loaded")
    view.close()
    text = console.export_text()
    frame = text[text.rindex("Cohort A") :]
    assert "● running" in frame
    assert "1/3 Load data" in frame and "2/3 Clean" in frame
    assert "1 more stage(s) not started yet" in frame
    assert "summary.pdf" in frame
    assert "PHI_SCAN ✓ granted by bob (DEIDENTIFIED)" in frame
