"""The seed's twelve broadcast functions (`broadcaster.ts`) in Python naming.

Each takes the seed's data dict (camelCase keys, as in the seed's examples), fills in what the
caller omitted that the database or the clock knows (`projectId` from the run, `stageIndex`
and `stageName` from the stage, timestamps, durations and counts), and publishes through the
EventBus: validated, PHI-guarded, logged, handed on at commit.

    run_event_broadcaster.broadcast_stage_progress({"runId": ..., "stageId": ..., "progress": 45})
    await run_event_broadcaster.abroadcast_stage_progress({...})   # from async code

The model signals call these with complete data, so the usual path does no extra queries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from events.bus import EventBus, event_bus
from events.record import LoggedEvent
from events.schemas import iso_timestamp

from .models import Approval, Run, Stage, StageStatus

Data = Mapping[str, Any]


def _ms_between(start: datetime | None, end_iso: str) -> int:
    end = parse_datetime(end_iso.replace("Z", "+00:00"))
    if start is None or end is None:
        return 0
    return max(0, int((end - start).total_seconds() * 1000))


class RunEventBroadcaster:
    def __init__(self, bus: EventBus | None = None) -> None:
        self.bus = bus or event_bus

    # --- filling in ----------------------------------------------------------------------

    def _with_run(self, data: Data) -> dict[str, Any]:
        out = dict(data)
        if "projectId" not in out and isinstance(out.get("runId"), str):
            project = Run.objects.filter(pk=out["runId"]).values_list("project_id", flat=True)
            if found := project.first():
                out["projectId"] = found
        return out

    def _with_stage(self, data: Data) -> dict[str, Any]:
        out = dict(data)
        missing = {"runId", "projectId", "stageName", "stageIndex"} - set(out)
        if missing and isinstance(out.get("stageId"), str):
            row = (
                Stage.objects.filter(pk=out["stageId"])
                .values("run_id", "run__project_id", "name", "position")
                .first()
            )
            if row:
                out.setdefault("runId", row["run_id"])
                out.setdefault("projectId", row["run__project_id"])
                out.setdefault("stageName", row["name"])
                out.setdefault("stageIndex", row["position"])
        return self._with_run(out)

    @staticmethod
    def _stamp(out: dict[str, Any], field: str) -> str:
        value = out.get(field)
        if isinstance(value, datetime):
            value = iso_timestamp(value)
        if value is None:
            value = iso_timestamp(timezone.now())
        out[field] = value
        return str(value)

    def _publish(self, event_type: str, payload: dict[str, Any]) -> LoggedEvent:
        return self.bus.publish(event_type, payload)

    # --- run events ----------------------------------------------------------------------

    def broadcast_run_created(self, data: Data) -> LoggedEvent:
        out = self._with_run(data)
        self._stamp(out, "createdAt")
        if "stageCount" not in out and isinstance(out.get("runId"), str):
            out["stageCount"] = Stage.objects.filter(run_id=out["runId"]).count()
        return self._publish("run.created", out)

    def broadcast_run_started(self, data: Data) -> LoggedEvent:
        out = self._with_run(data)
        self._stamp(out, "startedAt")
        return self._publish("run.started", out)

    def broadcast_run_completed(self, data: Data) -> LoggedEvent:
        out = self._with_run(data)
        completed_at = self._stamp(out, "completedAt")
        if {"durationMs", "stagesCompleted", "artifactsGenerated"} - set(out) and isinstance(
            out.get("runId"), str
        ):
            run = Run.objects.filter(pk=out["runId"]).first()
            if run is not None:
                out.setdefault("durationMs", _ms_between(run.started_at, completed_at))
                out.setdefault(
                    "stagesCompleted", run.stages.filter(status=StageStatus.COMPLETED).count()
                )
                out.setdefault("artifactsGenerated", run.artifacts.count())
        return self._publish("run.completed", out)

    def broadcast_run_failed(self, data: Data) -> LoggedEvent:
        out = self._with_run(data)
        self._stamp(out, "failedAt")
        return self._publish("run.failed", out)

    # --- stage events --------------------------------------------------------------------

    def broadcast_stage_started(self, data: Data) -> LoggedEvent:
        out = self._with_stage(data)
        self._stamp(out, "startedAt")
        return self._publish("stage.started", out)

    def broadcast_stage_progress(self, data: Data) -> LoggedEvent:
        return self._publish("stage.progress", self._with_stage(data))

    def broadcast_stage_completed(self, data: Data) -> LoggedEvent:
        out = self._with_stage(data)
        completed_at = self._stamp(out, "completedAt")
        if "durationMs" not in out and isinstance(out.get("stageId"), str):
            started = (
                Stage.objects.filter(pk=out["stageId"]).values_list("started_at", flat=True).first()
            )
            out["durationMs"] = _ms_between(started, completed_at)
        return self._publish("stage.completed", out)

    def broadcast_stage_failed(self, data: Data) -> LoggedEvent:
        out = self._with_stage(data)
        self._stamp(out, "failedAt")
        return self._publish("stage.failed", out)

    # --- artifact and governance events --------------------------------------------------

    def broadcast_artifact_created(self, data: Data) -> LoggedEvent:
        out = self._with_run(data)
        self._stamp(out, "createdAt")
        return self._publish("artifact.created", out)

    def broadcast_governance_required(self, data: Data) -> LoggedEvent:
        out = self._with_run(data)
        self._stamp(out, "requestedAt")
        return self._publish("governance.required", out)

    def _decision(self, event_type: str, data: Data) -> LoggedEvent:
        out = self._with_run(data)
        if "governanceType" not in out and isinstance(out.get("governanceId"), str):
            found = (
                Approval.objects.filter(pk=out["governanceId"])
                .values_list("governance_type", flat=True)
                .first()
            )
            if found:
                out["governanceType"] = found
        self._stamp(out, "decidedAt")
        return self._publish(event_type, out)

    def broadcast_approval_granted(self, data: Data) -> LoggedEvent:
        return self._decision("approval.granted", data)

    def broadcast_approval_denied(self, data: Data) -> LoggedEvent:
        return self._decision("approval.denied", data)

    # --- async twins ---------------------------------------------------------------------

    def __getattr__(self, name: str) -> Callable[..., Any]:
        """`abroadcast_x` runs `broadcast_x` in a worker thread (it touches the database)."""
        if name.startswith("abroadcast_"):
            sync_fn = getattr(self, name[1:])
            return sync_to_async(sync_fn, thread_sensitive=True)
        raise AttributeError(name)


run_event_broadcaster = RunEventBroadcaster()

# Module-level names, as `import { broadcastRunStarted }` would give in the seed.
broadcast_run_created = run_event_broadcaster.broadcast_run_created
broadcast_run_started = run_event_broadcaster.broadcast_run_started
broadcast_run_completed = run_event_broadcaster.broadcast_run_completed
broadcast_run_failed = run_event_broadcaster.broadcast_run_failed
broadcast_stage_started = run_event_broadcaster.broadcast_stage_started
broadcast_stage_progress = run_event_broadcaster.broadcast_stage_progress
broadcast_stage_completed = run_event_broadcaster.broadcast_stage_completed
broadcast_stage_failed = run_event_broadcaster.broadcast_stage_failed
broadcast_artifact_created = run_event_broadcaster.broadcast_artifact_created
broadcast_governance_required = run_event_broadcaster.broadcast_governance_required
broadcast_approval_granted = run_event_broadcaster.broadcast_approval_granted
broadcast_approval_denied = run_event_broadcaster.broadcast_approval_denied
