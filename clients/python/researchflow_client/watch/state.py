"""The watcher's picture of the run(s) it follows, built from the event stream alone.

Pure: no I/O, no clock, no terminal. `WatchState.apply(event)` folds one event in and returns
the `Note`s worth a line of their own (a stage done or failed, an artifact, an approval, the
run's outcome); the progress bars are drawn from the state itself.

What must stay true:
- Events arrive in id order (the server guarantees it on one socket, and the client keeps it
  across reconnects), so the last event about a thing is its current state. A `stage.progress`
  that arrives after its stage completed or failed (a coalesced frame) never moves it back.
- A watcher may start live in the middle of a run: a stage, artifact or approval event for a
  run never seen created makes that run `running`, with what the event says about it.
- An event whose payload the client could not type (a newer server) is counted and otherwise
  ignored: a watcher must not crash in the middle of a run because the server grew.
- `apply_snapshot(run)` (the run as the REST API has it, loaded on `resync.required`) replaces
  what the state knows of that run: it is newer than every event seen before it. Events that
  come after it are folded in as usual; one that is older than the snapshot (it was already
  queued on the socket) cannot move a finished stage or run back, by the rules above.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from ..catalogue import (
    ApprovalDecision,
    ArtifactCreated,
    GovernanceRequired,
    RunCompleted,
    RunCreated,
    RunFailed,
    RunStarted,
    StageCompleted,
    StageFailed,
    StageProgress,
    StageStarted,
)
from ..events import Event
from ..snapshot import RunSnapshot

RunStatus = Literal["created", "running", "completed", "failed"]
StageStatus = Literal["running", "completed", "failed"]
ApprovalStatus = Literal["required", "granted", "denied"]
# The REST API's statuses in the watcher's words; a status it does not know keeps the default.
RUN_STATUSES: dict[str, RunStatus] = {
    "created": "created",
    "running": "running",
    "completed": "completed",
    "failed": "failed",
}
STAGE_STATUSES: dict[str, StageStatus] = {
    "running": "running",
    "completed": "completed",
    "failed": "failed",
}  # `pending` stages are not shown as bars: the view counts them as not started
APPROVAL_STATUSES: dict[str, ApprovalStatus] = {
    "pending": "required",
    "granted": "granted",
    "denied": "denied",
}
NoteKind = Literal[
    "run.started",
    "run.completed",
    "run.failed",
    "stage.completed",
    "stage.failed",
    "artifact.created",
    "governance.required",
    "approval.granted",
    "approval.denied",
]


@dataclass
class StageState:
    stage_id: str
    name: str
    index: int
    status: StageStatus = "running"
    progress: int = 0  # percent, 0..100
    items_processed: int | None = None
    items_total: int | None = None
    status_message: str | None = None
    duration_ms: int | None = None
    error_code: str | None = None


@dataclass
class ArtifactState:
    artifact_id: str
    name: str
    kind: str
    size_bytes: int
    stage_id: str | None


@dataclass
class ApprovalState:
    governance_id: str
    governance_type: str
    status: ApprovalStatus
    priority: str | None = None  # unknown when the watcher saw only the decision
    decided_by: str | None = None
    reason_code: str | None = None


@dataclass
class RunState:
    run_id: str
    project_id: str
    status: RunStatus = "running"
    name: str | None = None  # unknown when the watcher started after run.created
    stage_count: int | None = None
    stages: dict[str, StageState] = field(default_factory=dict)
    artifacts: list[ArtifactState] = field(default_factory=list)
    approvals: dict[str, ApprovalState] = field(default_factory=dict)
    error_code: str | None = None
    failed_stage_id: str | None = None
    duration_ms: int | None = None
    last_event_id: int | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed")

    @property
    def label(self) -> str:
        return self.name if self.name is not None else self.run_id

    def ordered_stages(self) -> list[StageState]:
        return sorted(self.stages.values(), key=lambda stage: (stage.index, stage.stage_id))

    @property
    def stages_done(self) -> int:
        return sum(1 for stage in self.stages.values() if stage.status == "completed")

    @property
    def pending_approvals(self) -> list[ApprovalState]:
        return [a for a in self.approvals.values() if a.status == "required"]


@dataclass(frozen=True)
class Note:
    """A happening worth a line of its own. `text` is for a person, without markup."""

    event_id: int
    run_id: str
    kind: NoteKind
    text: str
    at: datetime  # the event's timestamp (aware, UTC)


def _seconds(duration_ms: int) -> str:
    return f"{duration_ms / 1000:.1f} s"


def _ms_between(start: datetime | None, end: datetime | None) -> int | None:
    if start is None or end is None:
        return None
    return max(0, round((end - start).total_seconds() * 1000))


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


class WatchState:
    """Every run seen so far, by id, in the order they were first seen."""

    def __init__(self) -> None:
        self.runs: dict[str, RunState] = {}
        self.events_seen = 0
        self.untyped_events = 0  # events whose payload this client could not type
        self.last_event_id: int | None = None

    def run(self, run_id: str) -> RunState | None:
        return self.runs.get(run_id)

    def _run(self, run_id: str, project_id: str) -> RunState:
        run = self.runs.get(run_id)
        if run is None:
            run = self.runs[run_id] = RunState(run_id, project_id)
        return run

    def apply(self, event: Event) -> list[Note]:
        """Fold one event into the state; the notes it is worth, in order."""
        self.events_seen += 1
        self.last_event_id = event.id
        payload = event.payload
        if isinstance(payload, dict):
            self.untyped_events += 1
            return []
        run = self._run(payload.run_id, payload.project_id)
        run.last_event_id = event.id

        def note(kind: NoteKind, text: str) -> list[Note]:
            return [Note(event.id, run.run_id, kind, text, event.timestamp)]

        if isinstance(payload, RunCreated):
            run.name = payload.run_name
            run.stage_count = payload.stage_count
            if not run.finished and not run.stages:
                run.status = "created"
            return []
        if isinstance(payload, RunStarted):
            if not run.finished:
                run.status = "running"
            return note("run.started", "run started")
        if isinstance(payload, RunCompleted):
            run.status = "completed"
            run.duration_ms = payload.duration_ms
            return note(
                "run.completed",
                f"run completed in {_seconds(payload.duration_ms)}: "
                f"{payload.stages_completed} stage(s), "
                f"{payload.artifacts_generated} artifact(s)",
            )
        if isinstance(payload, RunFailed):
            run.status = "failed"
            run.error_code = str(payload.error_code)
            run.failed_stage_id = payload.failed_stage_id
            where = ""
            if payload.failed_stage_id is not None:
                stage = run.stages.get(payload.failed_stage_id)
                where = f" in stage {stage.name}" if stage else ""
            return note("run.failed", f"run failed{where}: {payload.error_code}")
        if isinstance(payload, StageStarted | StageProgress | StageCompleted | StageFailed):
            if run.status == "created":
                run.status = "running"
            stage = run.stages.get(payload.stage_id)
            if stage is None:
                stage = run.stages[payload.stage_id] = StageState(
                    payload.stage_id, payload.stage_name, payload.stage_index
                )
            stage.name, stage.index = payload.stage_name, payload.stage_index
            return self._stage(stage, payload, note)
        if isinstance(payload, ArtifactCreated):
            run.artifacts.append(
                ArtifactState(
                    payload.artifact_id,
                    payload.artifact_name,
                    payload.artifact_kind,
                    payload.size_bytes,
                    payload.stage_id,
                )
            )
            return note(
                "artifact.created",
                f"artifact {payload.artifact_name} ({payload.artifact_kind}, "
                f"{_size(payload.size_bytes)})",
            )
        if isinstance(payload, GovernanceRequired):
            run.approvals[payload.governance_id] = ApprovalState(
                payload.governance_id,
                str(payload.governance_type),
                "required",
                priority=str(payload.priority),
            )
            return note(
                "governance.required",
                f"approval required: {payload.governance_type} ({payload.priority} priority)",
            )
        if isinstance(payload, ApprovalDecision):
            granted = event.type == "approval.granted"
            approval = run.approvals.get(payload.governance_id)
            if approval is None:
                approval = run.approvals[payload.governance_id] = ApprovalState(
                    payload.governance_id, str(payload.governance_type), "required"
                )
            approval.status = "granted" if granted else "denied"
            approval.decided_by = payload.decided_by
            approval.reason_code = None if payload.reason_code is None else str(payload.reason_code)
            reason = f", {approval.reason_code}" if approval.reason_code else ""
            verb = "granted" if granted else "denied"
            return note(
                "approval.granted" if granted else "approval.denied",
                f"approval {verb}: {approval.governance_type} by {payload.decided_by}{reason}",
            )
        return []  # a typed payload this watcher has no view of (none today)

    def apply_snapshot(self, snapshot: RunSnapshot) -> RunState:
        """Replace what is known of `snapshot`'s run by the snapshot (see the module's
        docstring); the run's new state. Emits no notes: nothing happened, the watcher only
        learned the present."""
        run = self.runs[snapshot.id] = RunState(
            snapshot.id,
            snapshot.project_id,
            status=RUN_STATUSES.get(snapshot.status, "running"),
            name=snapshot.name,
            stage_count=len(snapshot.stages),
            error_code=snapshot.error_code,
            last_event_id=self.runs[snapshot.id].last_event_id
            if snapshot.id in self.runs
            else None,
        )
        if run.status == "completed":
            run.duration_ms = _ms_between(snapshot.started_at, snapshot.finished_at)
        for stage in snapshot.stages:
            status = STAGE_STATUSES.get(stage.status)
            if status is None:
                continue
            run.stages[stage.id] = StageState(
                stage.id,
                stage.name,
                stage.stage_index,
                status=status,
                progress=stage.progress,
                items_processed=stage.items_processed,
                items_total=stage.items_total,
                status_message=stage.status_message or None,
                duration_ms=(
                    _ms_between(stage.started_at, stage.finished_at)
                    if status == "completed"
                    else None
                ),
                error_code=stage.error_code,
            )
            if status == "failed" and run.status == "failed" and run.failed_stage_id is None:
                run.failed_stage_id = stage.id
        run.artifacts = [
            ArtifactState(a.id, a.name, a.kind, a.size_bytes, a.stage_id)
            for a in snapshot.artifacts
        ]
        run.approvals = {
            a.id: ApprovalState(
                a.id,
                a.governance_type,
                APPROVAL_STATUSES.get(a.status, "required"),
                priority=a.priority,
                decided_by=a.decided_by,
                reason_code=a.reason_code,
            )
            for a in snapshot.approvals
        }
        return run

    @staticmethod
    def _stage(
        stage: StageState,
        payload: StageStarted | StageProgress | StageCompleted | StageFailed,
        note: Callable[[NoteKind, str], list[Note]],
    ) -> list[Note]:
        if isinstance(payload, StageStarted):
            return []
        if isinstance(payload, StageProgress):
            if stage.status != "running":
                return []  # a late, coalesced progress frame: the outcome stands
            stage.progress = payload.progress
            stage.items_processed = payload.items_processed
            stage.items_total = payload.items_total
            stage.status_message = payload.status_message
            return []
        if isinstance(payload, StageCompleted):
            stage.status = "completed"
            stage.progress = 100
            if stage.items_total is not None:
                stage.items_processed = stage.items_total
            stage.duration_ms = payload.duration_ms
            return note(
                "stage.completed",
                f"stage {stage.name} completed in {_seconds(payload.duration_ms)}",
            )
        stage.status = "failed"
        stage.error_code = str(payload.error_code)
        return note("stage.failed", f"stage {stage.name} failed: {payload.error_code}")
