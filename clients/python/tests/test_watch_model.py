"""The watcher's state model and its rich view, from event objects alone (no server, no
terminal): what a run looks like after each kind of event, and the final frame a person sees.
"""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from researchflow_client.events import Event, parse_event
from researchflow_client.watch.sinks import JsonLines, LiveView
from researchflow_client.watch.state import WatchState

RUN = "run_" + "a" * 20
OTHER_RUN = "run_" + "c" * 20
PROJECT = "prj_" + "b" * 20
STAGES = [("stg_" + str(n) * 20, name) for n, name in enumerate(["Load data", "Clean", "Model"])]
TS = "2026-12-01T10:00:00.000Z"


class Events:
    """Wire frames for one run, numbered like the log."""

    def __init__(self, run_id: str = RUN) -> None:
        self.run_id = run_id
        self.next_id = 1

    def __call__(self, event_type: str, **payload: Any) -> Event:
        frame = {
            "id": self.next_id,
            "type": event_type,
            "timestamp": TS,
            "payload": {"runId": self.run_id, "projectId": PROJECT, **payload},
        }
        self.next_id += 1
        return parse_event(frame)

    def created(self, stages: int = len(STAGES)) -> Event:
        return self(
            "run.created",
            runName="Cohort A",
            stageCount=stages,
            createdBy="alice",
            createdAt=TS,
        )

    def stage(self, event_type: str, n: int, **extra: Any) -> Event:
        stage_id, name = STAGES[n]
        return self(event_type, stageId=stage_id, stageName=name, stageIndex=n, **extra)

    def progress(self, n: int, percent: int, total: int | None = 1000) -> Event:
        items = {} if total is None else {"itemsProcessed": total * percent // 100}
        if total is not None:
            items["itemsTotal"] = total
        return self.stage(
            "stage.progress", n, progress=percent, statusMessage=f"at {percent}%", **items
        )

    def completed_stage(self, n: int) -> Event:
        return self.stage("stage.completed", n, completedAt=TS, durationMs=1500)

    def whole_run(self, outcome: str = "completed") -> list[Event]:
        gov = "gov_" + "d" * 20
        events = [
            self.created(),
            self("run.started", startedAt=TS),
            self(
                "governance.required",
                governanceId=gov,
                governanceType="PHI_SCAN",
                priority="HIGH",
                assignedTo=["bob"],
                requestedAt=TS,
            ),
        ]
        for n in range(len(STAGES)):
            events.append(self.stage("stage.started", n, startedAt=TS))
            events += [self.progress(n, p) for p in (0, 50)]
            if outcome == "failed" and n == 1:
                events.append(self.stage("stage.failed", n, failedAt=TS, errorCode="OUT_OF_MEMORY"))
                events.append(
                    self(
                        "run.failed",
                        failedAt=TS,
                        errorCode="STAGE_FAILED",
                        failedStageId=STAGES[n][0],
                    )
                )
                return events
            events.append(self.progress(n, 100))
            events.append(self.completed_stage(n))
            if n == 0:
                events.append(
                    self(
                        "approval.granted",
                        governanceId=gov,
                        governanceType="PHI_SCAN",
                        decidedBy="bob",
                        decidedAt=TS,
                        reasonCode="DEIDENTIFIED",
                    )
                )
        events.append(
            self(
                "artifact.created",
                artifactId="art_" + "e" * 20,
                artifactKind="report",
                artifactName="summary.pdf",
                sizeBytes=120_551,
                contentType="application/pdf",
                createdAt=TS,
            )
        )
        events.append(
            self(
                "run.completed",
                completedAt=TS,
                durationMs=9_000,
                stagesCompleted=3,
                artifactsGenerated=1,
            )
        )
        return events


def fold(events: list[Event]) -> tuple[WatchState, list[str]]:
    state = WatchState()
    notes = [note.kind for event in events for note in state.apply(event)]
    return state, notes


# --- the state model -----------------------------------------------------------------------


def test_it_follows_a_run_to_its_completion() -> None:
    state, notes = fold(Events().whole_run())
    run = state.run(RUN)
    assert run is not None
    assert (run.status, run.name, run.stage_count, run.duration_ms) == (
        "completed",
        "Cohort A",
        3,
        9_000,
    )
    assert [(s.name, s.status, s.progress) for s in run.ordered_stages()] == [
        ("Load data", "completed", 100),
        ("Clean", "completed", 100),
        ("Model", "completed", 100),
    ]
    assert [a.name for a in run.artifacts] == ["summary.pdf"]
    assert [(a.governance_type, a.status, a.priority) for a in run.approvals.values()] == [
        ("PHI_SCAN", "granted", "HIGH")
    ]
    assert notes == [
        "run.started",
        "governance.required",
        "stage.completed",
        "approval.granted",
        "stage.completed",
        "stage.completed",
        "artifact.created",
        "run.completed",
    ]


def test_it_records_the_failed_stage_and_the_runs_error_code() -> None:
    state, notes = fold(Events().whole_run("failed"))
    run = state.run(RUN)
    assert run is not None
    assert (run.status, run.error_code, run.failed_stage_id) == (
        "failed",
        "STAGE_FAILED",
        STAGES[1][0],
    )
    failed = run.stages[STAGES[1][0]]
    assert (failed.status, failed.error_code, failed.progress) == ("failed", "OUT_OF_MEMORY", 50)
    assert notes[-2:] == ["stage.failed", "run.failed"]


def test_it_keeps_a_stages_progress_numbers_and_status_message() -> None:
    make = Events()
    state, _ = fold([make.created(), make.stage("stage.started", 0, startedAt=TS)])
    state.apply(make.progress(0, 45))
    stage = state.runs[RUN].stages[STAGES[0][0]]
    assert (stage.progress, stage.items_processed, stage.items_total, stage.status_message) == (
        45,
        450,
        1000,
        "at 45%",
    )
    assert state.runs[RUN].status == "running"


def test_it_never_moves_a_finished_stage_back_on_a_late_progress_frame() -> None:
    make = Events()
    state, _ = fold([make.created(), make.progress(0, 90), make.completed_stage(0)])
    state.apply(make.progress(0, 95))
    stage = state.runs[RUN].stages[STAGES[0][0]]
    assert (stage.status, stage.progress) == ("completed", 100)


def test_it_picks_up_a_run_it_first_sees_in_the_middle() -> None:
    make = Events()
    make.next_id = 40
    state, _ = fold([make.progress(2, 30)])
    run = state.run(RUN)
    assert run is not None
    assert (run.status, run.name, run.label) == ("running", None, RUN)
    assert [s.name for s in run.ordered_stages()] == ["Model"]


def test_it_keeps_runs_of_a_project_apart() -> None:
    first, second = Events(RUN), Events(OTHER_RUN)
    second.next_id = 100
    state, _ = fold([first.created(), second.created(), *first.whole_run()[1:]])
    assert state.runs[RUN].status == "completed"
    assert state.runs[OTHER_RUN].status == "created"


def test_it_counts_but_ignores_an_event_it_cannot_type() -> None:
    frame = {"id": 7, "type": "run.paused", "timestamp": TS, "payload": {"runId": RUN}}
    state, notes = fold([parse_event(frame)])
    assert (state.untyped_events, state.events_seen, state.runs, notes) == (1, 1, {}, [])


# --- the rich view -------------------------------------------------------------------------


def recorded(width: int = 120) -> Console:
    return Console(record=True, file=io.StringIO(), width=width, color_system=None)


def watch_through(events: list[Event], console: Console, run_id: str | None = RUN) -> str:
    state = WatchState()
    view = LiveView(console, state, run_id=run_id, caption=f"run {RUN} on ws://test/ws")
    view.start()
    for event in events:
        view.event(event, state.apply(event))
    view.close()
    return console.export_text()


def test_its_final_frame_shows_every_stage_and_the_outcome() -> None:
    text = watch_through(Events().whole_run(), recorded())
    frame = text[text.rindex("Cohort A") :]  # the live area's last frame, after the notes
    assert "✓ completed" in frame
    for n, (_, name) in enumerate(STAGES):
        assert f"{n + 1}/3 {name}" in frame
    assert frame.count("100%") == 3
    assert "summary.pdf" in frame
    assert "PHI_SCAN ✓ granted by bob (DEIDENTIFIED)" in frame


def test_its_final_frame_shows_a_failure_with_its_code_and_where() -> None:
    text = watch_through(Events().whole_run("failed"), recorded())
    frame = text[text.rindex("Cohort A") :]
    assert "✗ failed: STAGE_FAILED" in frame
    assert "✗ OUT_OF_MEMORY" in frame
    assert " 50%" in frame
    assert "1 more stage(s) not started yet" not in frame  # a failed run waits for nothing
    assert "run failed in stage Clean: STAGE_FAILED" in text  # the note line


def test_it_prints_artifacts_and_approvals_as_lines_as_they_happen() -> None:
    text = watch_through(Events().whole_run(), recorded())
    notes = text[: text.rindex("Cohort A")]
    lines = [line.split("  ", 1)[1] for line in notes.splitlines() if line.strip()]
    assert "approval required: PHI_SCAN (HIGH priority)" in lines
    assert "approval granted: PHI_SCAN by bob, DEIDENTIFIED" in lines
    assert "artifact summary.pdf (report, 120.6 KB)" in lines
    assert lines[-1].startswith("run completed in 9.0 s")


def test_it_shows_the_stages_not_started_yet_of_a_running_run() -> None:
    make = Events()
    events = [make.created(), make("run.started", startedAt=TS), make.progress(0, 20)]
    frame = watch_through(events, recorded())
    assert "● running" in frame
    assert "2 more stage(s) not started yet" in frame
    assert "200/1000" in frame


def test_on_an_80_column_terminal_every_stage_row_keeps_all_its_columns() -> None:
    make = Events()
    events = [*make.whole_run("failed")[:-2], make.progress(1, 70)]
    text = watch_through(events, recorded(80))
    rows = [line for line in text.splitlines() if "━" in line]
    assert len(rows) == 2
    for row, (number, name, percent, items) in zip(
        rows,
        [("1/3", "Load data", "100%", "1000/1000"), ("2/3", "Clean", "70%", "700/1000")],
        strict=True,
    ):
        assert row.split()[:2] == [number, name.split()[0]]
        assert f"{percent} {items}" in " ".join(row.split())
        assert len(row.rstrip()) <= 80


def test_on_a_project_it_names_the_run_on_each_note() -> None:
    text = watch_through(Events().whole_run(), recorded(), run_id=None)
    assert "Cohort A: artifact summary.pdf" in text


# --- JSON lines ----------------------------------------------------------------------------


def test_json_lines_are_the_events_as_received_one_per_line() -> None:
    import json

    events = Events().whole_run()
    out, err = io.StringIO(), io.StringIO()
    sink = JsonLines(out, err)
    for event in events:
        sink.event(event, [])
    sink.warn("a warning")
    lines = out.getvalue().splitlines()
    assert [json.loads(line) for line in lines] == [event.raw for event in events]
    assert err.getvalue() == "researchflow watch: a warning\n"
