"""Thin `post_save` receivers: detect the transition, call the broadcaster. Nothing else.

So the REST API, the admin, the demo runner and a plain `.save()` all emit the same events,
exactly once per transition, inside the transaction that saved the row (the bus logs it there
and hands it on at commit). `QuerySet.update()` and `bulk_create()` do not fire `post_save`
and are not used on these models.
"""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_save
from django.dispatch import receiver

from events.schemas import iso_timestamp
from runs.broadcaster import run_event_broadcaster as broadcaster

from .models import Approval, ApprovalStatus, Artifact, Run, RunStatus, Stage, StageStatus


def _ms(start: Any, end: Any) -> int:
    if start is None or end is None:
        return 0
    return max(0, int((end - start).total_seconds() * 1000))


@receiver(post_save, sender=Run, dispatch_uid="runs.run_saved")
def run_saved(sender: type[Run], instance: Run, created: bool, **kwargs: Any) -> None:
    base = {"runId": instance.pk, "projectId": instance.project_id}
    previous = None if created else instance.previous("status")
    if created:
        stage_count = getattr(instance, "planned_stage_count", None)
        broadcaster.broadcast_run_created(
            {
                **base,
                "runName": instance.name,
                "stageCount": instance.stages.count() if stage_count is None else stage_count,
                "createdBy": instance.created_by.get_username(),
                "createdAt": iso_timestamp(instance.created_at),
            }
        )
    if previous != instance.status or created:
        if instance.status == RunStatus.RUNNING:
            data: dict[str, Any] = {**base, "startedAt": iso_timestamp(instance.started_at)}
            if instance.estimated_duration is not None:
                data["estimatedDuration"] = instance.estimated_duration
            broadcaster.broadcast_run_started(data)
        elif instance.status == RunStatus.COMPLETED:
            broadcaster.broadcast_run_completed(
                {
                    **base,
                    "completedAt": iso_timestamp(instance.finished_at),
                    "durationMs": _ms(instance.started_at, instance.finished_at),
                    "stagesCompleted": instance.stages.filter(status=StageStatus.COMPLETED).count(),
                    "artifactsGenerated": instance.artifacts.count(),
                }
            )
        elif instance.status == RunStatus.FAILED:
            data = {
                **base,
                "failedAt": iso_timestamp(instance.finished_at),
                "errorCode": instance.error_code or "INTERNAL_ERROR",
            }
            failed_stage = instance.failed_stage_id
            if failed_stage:
                data["failedStageId"] = failed_stage
            broadcaster.broadcast_run_failed(data)
    instance._remember()


@receiver(post_save, sender=Stage, dispatch_uid="runs.stage_saved")
def stage_saved(sender: type[Stage], instance: Stage, created: bool, **kwargs: Any) -> None:
    if created and instance.status == StageStatus.PENDING:
        instance._remember()
        return  # there is no stage.created event: run.created carries stageCount
    run = instance.run
    base = {
        "runId": run.pk,
        "projectId": run.project_id,
        "stageId": instance.pk,
        "stageName": instance.name,
        "stageIndex": instance.position,
    }
    status_changed = created or instance.previous("status") != instance.status
    if status_changed and instance.status == StageStatus.RUNNING:
        broadcaster.broadcast_stage_started(
            {**base, "startedAt": iso_timestamp(instance.started_at)}
        )
    elif status_changed and instance.status == StageStatus.COMPLETED:
        broadcaster.broadcast_stage_completed(
            {
                **base,
                "completedAt": iso_timestamp(instance.finished_at),
                "durationMs": _ms(instance.started_at, instance.finished_at),
            }
        )
    elif status_changed and instance.status == StageStatus.FAILED:
        broadcaster.broadcast_stage_failed(
            {
                **base,
                "failedAt": iso_timestamp(instance.finished_at),
                "errorCode": instance.error_code or "INTERNAL_ERROR",
            }
        )
    elif (
        not status_changed
        and instance.status == StageStatus.RUNNING
        and any(
            instance.previous(name) != getattr(instance, name)
            for name in ("progress", "items_processed", "items_total", "status_message")
        )
    ):
        data: dict[str, Any] = {**base, "progress": instance.progress}
        if instance.status_message:
            data["statusMessage"] = instance.status_message
        if instance.items_processed is not None:
            data["itemsProcessed"] = instance.items_processed
        if instance.items_total is not None:
            data["itemsTotal"] = instance.items_total
        broadcaster.broadcast_stage_progress(data)
    instance._remember()


@receiver(post_save, sender=Artifact, dispatch_uid="runs.artifact_saved")
def artifact_saved(
    sender: type[Artifact], instance: Artifact, created: bool, **kwargs: Any
) -> None:
    if not created:
        return
    data: dict[str, Any] = {
        "runId": instance.run_id,
        "projectId": instance.run.project_id,
        "artifactId": instance.pk,
        "artifactKind": instance.kind,
        "artifactName": instance.name,
        "sizeBytes": instance.size_bytes,
        "contentType": instance.content_type,
        "createdAt": iso_timestamp(instance.created_at),
    }
    if instance.stage_id:
        data["stageId"] = instance.stage_id
    broadcaster.broadcast_artifact_created(data)


@receiver(post_save, sender=Approval, dispatch_uid="runs.approval_saved")
def approval_saved(
    sender: type[Approval], instance: Approval, created: bool, **kwargs: Any
) -> None:
    base = {
        "runId": instance.run_id,
        "projectId": instance.run.project_id,
        "governanceId": instance.pk,
        "governanceType": instance.governance_type,
    }
    if created:
        broadcaster.broadcast_governance_required(
            {
                **base,
                "priority": instance.priority,
                "assignedTo": instance.assignee_usernames(),
                "requestedAt": iso_timestamp(instance.requested_at),
            }
        )
    elif instance.previous("status") != instance.status and instance.status in (
        ApprovalStatus.GRANTED,
        ApprovalStatus.DENIED,
    ):
        data = {
            **base,
            "decidedBy": instance.decided_by.get_username() if instance.decided_by else "system",
            "decidedAt": iso_timestamp(instance.decided_at),
        }
        if instance.reason_code:
            data["reasonCode"] = instance.reason_code
        if instance.status == ApprovalStatus.GRANTED:
            broadcaster.broadcast_approval_granted(data)
        else:
            broadcaster.broadcast_approval_denied(data)
    instance._remember()
