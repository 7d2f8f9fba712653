"""The one place run state changes (Zulip's `do_*` actions, healthchecks' `Check.ping()`).

Each transition locks the rows it reads, checks the move is legal, saves, and lets the
`post_save` receivers log the event, all in one transaction: a refused or rolled-back
transition leaves neither a change nor an event. The REST API, the admin and the management
commands call these functions and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.db import transaction
from django.utils import timezone

from events import phi
from events.schemas import CHECKSUM_RE, ErrorCode, GovernanceType, Priority, ReasonCode

from .models import (
    Approval,
    ApprovalStatus,
    Artifact,
    Membership,
    Project,
    Role,
    Run,
    RunStatus,
    Stage,
    StageStatus,
)

User = Any  # django.contrib.auth user instances; kept loose for custom user models


class TransitionError(Exception):
    """An illegal state change (HTTP 409). The message says why, in words a person can act on."""


def _locked_run(run_id: str) -> Run:
    # select_for_update() is a row lock on PostgreSQL; SQLite runs IMMEDIATE transactions,
    # which serialise writers, so the read-check-write below is race-free on both.
    return Run.objects.select_for_update().select_related("project", "created_by").get(pk=run_id)


def _locked_stage(stage_id: str) -> Stage:
    run_id = Stage.objects.values_list("run_id", flat=True).get(pk=stage_id)
    run = _locked_run(run_id)
    stage = Stage.objects.select_for_update().get(pk=stage_id)
    stage.run = run
    return stage


def _require_choice(value: str, enum: Any, field: str) -> str:
    allowed = {member.value for member in enum}
    if value not in allowed:
        raise ValueError(f"{field}: unknown value (expected one of {', '.join(sorted(allowed))})")
    return value


# --- projects ------------------------------------------------------------------------------


@transaction.atomic
def create_project(name: str, owner: User) -> Project:
    project = Project(name=name)
    project.save()
    Membership.objects.create(project=project, user=owner, role=Role.OWNER)
    return project


@transaction.atomic
def set_member(project: Project, user: User, role: str) -> Membership:
    _require_choice(role, Role, "role")
    membership, created = Membership.objects.select_for_update().get_or_create(
        project=project, user=user, defaults={"role": role}
    )
    if not created and membership.role != role:
        if membership.role == Role.OWNER and not _has_other_owner(project, user):
            raise TransitionError("a project must keep at least one owner")
        membership.role = role
        membership.save(update_fields=["role"])
    return membership


@transaction.atomic
def remove_member(project: Project, user: User) -> None:
    membership = Membership.objects.select_for_update().filter(project=project, user=user).first()
    if membership is None:
        raise Membership.DoesNotExist("not a member")
    if membership.role == Role.OWNER and not _has_other_owner(project, user):
        raise TransitionError("a project must keep at least one owner")
    membership.delete()


def _has_other_owner(project: Project, user: User) -> bool:
    return Membership.objects.filter(project=project, role=Role.OWNER).exclude(user=user).exists()


# --- runs ----------------------------------------------------------------------------------


@transaction.atomic
def create_run(
    project: Project,
    name: str,
    stage_names: Sequence[str],
    created_by: User,
    estimated_duration: int | None = None,
) -> Run:
    if estimated_duration is not None and estimated_duration < 0:
        raise ValueError("estimatedDuration: must be >= 0")
    run = Run(
        project=project, name=name, created_by=created_by, estimated_duration=estimated_duration
    )
    # The run.created event is logged from post_save, before the stages exist: tell it how
    # many there will be (they are created in this same transaction).
    run.planned_stage_count = len(stage_names)
    run.save()
    for position, stage_name in enumerate(stage_names):
        Stage(run=run, position=position, name=stage_name).save()
    return run


@transaction.atomic
def start_run(run_id: str) -> Run:
    run = _locked_run(run_id)
    if run.status != RunStatus.CREATED:
        raise TransitionError(f"run is {run.status}; only a created run can start")
    run.status = RunStatus.RUNNING
    run.started_at = timezone.now()
    run.save()
    return run


@transaction.atomic
def complete_run(run_id: str) -> Run:
    run = _locked_run(run_id)
    if run.status != RunStatus.RUNNING:
        raise TransitionError(f"run is {run.status}; only a running run can complete")
    unfinished = run.stages.exclude(status=StageStatus.COMPLETED).count()
    if unfinished:
        raise TransitionError(f"{unfinished} stage(s) have not completed; complete or fail them")
    run.status = RunStatus.COMPLETED
    run.finished_at = timezone.now()
    run.save()
    return run


@transaction.atomic
def fail_run(run_id: str, error_code: str, failed_stage_id: str | None = None) -> Run:
    _require_choice(error_code, ErrorCode, "errorCode")
    run = _locked_run(run_id)
    if run.status not in (RunStatus.CREATED, RunStatus.RUNNING):
        raise TransitionError(f"run is {run.status}; a finished run cannot fail")
    if failed_stage_id is not None and not run.stages.filter(pk=failed_stage_id).exists():
        raise ValueError("failedStageId: not a stage of this run")
    now = timezone.now()
    # A run that fails takes its running stages with it, each with its own stage.failed event.
    for stage in run.stages.select_for_update().filter(status=StageStatus.RUNNING):
        stage.run = run
        stage.status = StageStatus.FAILED
        stage.error_code = error_code
        stage.finished_at = now
        stage.save()
        failed_stage_id = failed_stage_id or stage.pk
    if failed_stage_id is None:
        failed_stage_id = (
            run.stages.filter(status=StageStatus.FAILED).values_list("pk", flat=True).first()
        )
    run.status = RunStatus.FAILED
    run.error_code = error_code
    run.finished_at = now
    run.failed_stage_id = failed_stage_id
    run.save()
    return run


# --- stages --------------------------------------------------------------------------------


def _require_running_run(stage: Stage) -> None:
    if stage.run.status != RunStatus.RUNNING:
        raise TransitionError(f"run is {stage.run.status}; its stages move only while it runs")


@transaction.atomic
def start_stage(stage_id: str) -> Stage:
    stage = _locked_stage(stage_id)
    _require_running_run(stage)
    if stage.status != StageStatus.PENDING:
        raise TransitionError(f"stage is {stage.status}; only a pending stage can start")
    stage.status = StageStatus.RUNNING
    stage.started_at = timezone.now()
    stage.save()
    return stage


@transaction.atomic
def report_progress(
    stage_id: str,
    progress: int,
    items_processed: int | None = None,
    items_total: int | None = None,
    status_message: str | None = None,
) -> Stage:
    if isinstance(progress, bool) or not isinstance(progress, int) or not 0 <= progress <= 100:
        raise ValueError("progress: must be an integer from 0 to 100")
    for field, value in (("itemsProcessed", items_processed), ("itemsTotal", items_total)):
        if value is not None and (isinstance(value, bool) or value < 0):
            raise ValueError(f"{field}: must be >= 0")
    stage = _locked_stage(stage_id)
    _require_running_run(stage)
    if stage.status != StageStatus.RUNNING:
        raise TransitionError(f"stage is {stage.status}; progress is reported only while running")
    if progress < stage.progress:
        raise TransitionError(f"progress cannot go back (from {stage.progress} to {progress})")
    if items_processed is not None and (stage.items_processed or 0) > items_processed:
        raise TransitionError("itemsProcessed cannot go back")
    total = items_total if items_total is not None else stage.items_total
    processed = items_processed if items_processed is not None else stage.items_processed
    if total is not None and processed is not None and processed > total:
        raise ValueError("itemsProcessed: cannot exceed itemsTotal")
    stage.progress = progress
    stage.items_processed = processed
    stage.items_total = total
    if status_message:
        # Each label passed the guard alone; a reader sees run name, stage name and status
        # side by side, so they are checked together (the event itself carries only the last
        # two, which the bus checks together too).
        categories = phi.scan_texts([stage.run.name, stage.name, status_message])
        if categories:
            raise ValueError(
                "statusMessage: read together with the run and stage names, contains possible "
                f"PHI ({', '.join(categories)}); remove patient identifiers"
            )
    if status_message is not None:
        stage.status_message = status_message
    stage.save()
    return stage


@transaction.atomic
def complete_stage(stage_id: str) -> Stage:
    stage = _locked_stage(stage_id)
    _require_running_run(stage)
    if stage.status != StageStatus.RUNNING:
        raise TransitionError(f"stage is {stage.status}; only a running stage can complete")
    stage.status = StageStatus.COMPLETED
    stage.progress = 100
    if stage.items_total is not None:
        stage.items_processed = stage.items_total
    stage.finished_at = timezone.now()
    stage.save()
    return stage


@transaction.atomic
def fail_stage(stage_id: str, error_code: str) -> Stage:
    _require_choice(error_code, ErrorCode, "errorCode")
    stage = _locked_stage(stage_id)
    _require_running_run(stage)
    if stage.status not in (StageStatus.PENDING, StageStatus.RUNNING):
        raise TransitionError(f"stage is {stage.status}; a finished stage cannot fail")
    stage.status = StageStatus.FAILED
    stage.error_code = error_code
    stage.finished_at = timezone.now()
    stage.save()
    return stage


# --- artifacts and approvals ---------------------------------------------------------------


@transaction.atomic
def add_artifact(
    run_id: str,
    *,
    kind: str,
    name: str,
    size_bytes: int,
    content_type: str,
    checksum: str = "",
    stage_id: str | None = None,
) -> Artifact:
    if isinstance(size_bytes, bool) or size_bytes < 0:
        raise ValueError("sizeBytes: must be >= 0")
    if checksum and not CHECKSUM_RE.match(checksum):
        raise ValueError("checksum: must be a digest (algo:hex, or hex of a digest's length)")
    run = _locked_run(run_id)
    if run.status != RunStatus.RUNNING:
        raise TransitionError(f"run is {run.status}; artifacts are added while it runs")
    stage = None
    if stage_id is not None:
        stage = run.stages.filter(pk=stage_id).first()
        if stage is None:
            raise ValueError("stageId: not a stage of this run")
    artifact = Artifact(
        run=run,
        stage=stage,
        kind=kind,
        name=name,
        size_bytes=size_bytes,
        content_type=content_type,
        checksum=checksum,
    )
    artifact.save()
    return artifact


@transaction.atomic
def request_approval(
    run_id: str, *, governance_type: str, priority: str, assigned_to: Iterable[User] = ()
) -> Approval:
    _require_choice(governance_type, GovernanceType, "governanceType")
    _require_choice(priority, Priority, "priority")
    run = _locked_run(run_id)
    if run.status not in (RunStatus.CREATED, RunStatus.RUNNING):
        raise TransitionError(f"run is {run.status}; a finished run needs no approval")
    approval = Approval(run=run, governance_type=governance_type, priority=priority)
    # governance.required names the assignees; M2M rows can only be written after the save
    # that fires the event, so the model writes them and the receiver reads this list.
    approval.pending_assignees = list(assigned_to)
    approval.save()
    return approval


@transaction.atomic
def decide_approval(
    approval_id: str, *, granted: bool, decided_by: User, reason_code: str | None = None
) -> Approval:
    if reason_code:
        _require_choice(reason_code, ReasonCode, "reasonCode")
    run_id = Approval.objects.values_list("run_id", flat=True).get(pk=approval_id)
    run = _locked_run(run_id)
    approval = Approval.objects.select_for_update().get(pk=approval_id)
    approval.run = run
    if approval.status != ApprovalStatus.PENDING:
        raise TransitionError(f"approval was already {approval.status}")
    approval.status = ApprovalStatus.GRANTED if granted else ApprovalStatus.DENIED
    approval.decided_by = decided_by
    approval.reason_code = reason_code or ""
    approval.decided_at = timezone.now()
    approval.save()
    return approval


def membership_role(project: Project | str, user: Any) -> str | None:
    """The user's role in the project, or None. Staff are treated as owners everywhere."""
    if not getattr(user, "is_authenticated", False) or not getattr(user, "is_active", False):
        return None
    if getattr(user, "is_staff", False):
        return Role.OWNER
    project_id = project if isinstance(project, str) else project.pk
    return (
        Membership.objects.filter(project_id=project_id, user=user)
        .values_list("role", flat=True)
        .first()
    )
