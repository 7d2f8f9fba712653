"""The research-run domain: projects, runs, stages, artifacts and approvals.

State changes go through `runs/services.py` only (row lock, transition check, save, event), so
the REST API, the admin and the management commands all behave the same. `post_save` receivers
in `runs/signals.py` turn each saved transition into exactly one event.

`QuerySet.update()` and `bulk_create()` bypass `post_save`: they would change state without an
event. Nothing in this project uses them on these models; don't start.
"""

from __future__ import annotations

import secrets
from typing import Any, ClassVar

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from events.schemas import CHECKSUM_MAX_LENGTH, ErrorCode, GovernanceType, Priority, ReasonCode

ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
ID_LENGTH = 20


def new_id(prefix: str) -> str:
    """A random, opaque id (`run_…`): never derived from data, ~103 bits of entropy."""
    return prefix + "_" + "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))


def new_run_id() -> str:
    return new_id("run")


def new_stage_id() -> str:
    return new_id("stg")


def new_artifact_id() -> str:
    return new_id("art")


def new_governance_id() -> str:
    return new_id("gov")


def _id_field(default: Any) -> models.CharField[str, str]:
    # Named functions, not lambdas: migrations must be able to reference the default.
    return models.CharField(primary_key=True, max_length=32, editable=False, default=default)


class Role(models.TextChoices):
    OWNER = "owner"
    MEMBER = "member"
    VIEWER = "viewer"


class Project(models.Model):
    id = models.CharField(primary_key=True, max_length=32, editable=False)
    name = models.CharField(max_length=120)
    created_at = models.DateTimeField(auto_now_add=True)
    members: models.ManyToManyField[Any, Any] = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="projects"
    )

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.id:
            self.id = new_id("prj")
        super().save(*args, **kwargs)


class Membership(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="unique_membership")
        ]
        ordering = ["project_id", "user_id"]

    def __str__(self) -> str:
        return f"{self.user} ({self.role}) in {self.project_id}"


class RunStatus(models.TextChoices):
    CREATED = "created"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class StageStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class ApprovalStatus(models.TextChoices):
    PENDING = "pending"
    GRANTED = "granted"
    DENIED = "denied"


def _choices(enum: Any) -> list[tuple[str, str]]:
    return [(member.value, member.value) for member in enum]


class TrackedModel(models.Model):
    """Remembers the fields a signal receiver compares, as they were loaded or last saved."""

    TRACKED: ClassVar[tuple[str, ...]] = ()

    class Meta:
        abstract = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._remember()

    def _remember(self) -> None:
        self._saved_state = {name: getattr(self, name) for name in self.TRACKED}

    def previous(self, name: str) -> Any:
        return self._saved_state.get(name)


class Run(TrackedModel):
    TRACKED = ("status",)
    # Transient hints from runs/services.py to the event receivers (not columns).
    planned_stage_count: int | None = None
    failed_stage_id: str | None = None

    id = _id_field(new_run_id)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="runs")
    name = models.CharField(max_length=120)
    status = models.CharField(
        max_length=10, choices=RunStatus.choices, default=RunStatus.CREATED, db_index=True
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="runs_created"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    estimated_duration = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Estimated duration in milliseconds"
    )
    error_code = models.CharField(max_length=40, choices=_choices(ErrorCode), blank=True)

    class Meta:
        ordering = ["-created_at", "id"]
        indexes = [models.Index(fields=["project", "status"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"


class Stage(TrackedModel):
    TRACKED = ("status", "progress", "items_processed", "items_total", "status_message")

    id = _id_field(new_stage_id)
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="stages")
    position = models.PositiveIntegerField()
    name = models.CharField(max_length=120)
    status = models.CharField(
        max_length=10, choices=StageStatus.choices, default=StageStatus.PENDING
    )
    progress = models.PositiveSmallIntegerField(
        default=0, validators=[MinValueValidator(0), MaxValueValidator(100)]
    )
    items_processed = models.PositiveBigIntegerField(null=True, blank=True)
    items_total = models.PositiveBigIntegerField(null=True, blank=True)
    status_message = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error_code = models.CharField(max_length=40, choices=_choices(ErrorCode), blank=True)

    class Meta:
        ordering = ["run_id", "position"]
        constraints = [
            models.UniqueConstraint(fields=["run", "position"], name="unique_stage_position"),
            models.CheckConstraint(
                condition=models.Q(progress__gte=0, progress__lte=100), name="stage_progress_0_100"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.position}. {self.name} ({self.status})"


class Artifact(models.Model):
    """Metadata of something a run produced: never the content."""

    id = _id_field(new_artifact_id)
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="artifacts")
    stage = models.ForeignKey(
        Stage, on_delete=models.SET_NULL, null=True, blank=True, related_name="artifacts"
    )
    kind = models.CharField(max_length=40)
    name = models.CharField(max_length=200)
    size_bytes = models.PositiveBigIntegerField()
    content_type = models.CharField(max_length=100)
    # A digest only (events.schemas.CHECKSUM_PATTERN), checked by runs.services.add_artifact.
    checksum = models.CharField(max_length=CHECKSUM_MAX_LENGTH, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run_id", "created_at", "id"]

    def __str__(self) -> str:
        return self.name


class Approval(TrackedModel):
    """A governance request a run waits on (PHI scan, ethics review, ...)."""

    TRACKED = ("status",)
    pending_assignees: list[Any] | None = None  # transient: written to M2M after the save

    id = _id_field(new_governance_id)
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="approvals")
    governance_type = models.CharField(max_length=30, choices=_choices(GovernanceType))
    priority = models.CharField(max_length=10, choices=_choices(Priority), default="MEDIUM")
    status = models.CharField(
        max_length=10, choices=ApprovalStatus.choices, default=ApprovalStatus.PENDING
    )
    assigned_to: models.ManyToManyField[Any, Any] = models.ManyToManyField(
        settings.AUTH_USER_MODEL, related_name="approvals_assigned", blank=True
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="approvals_decided",
    )
    reason_code = models.CharField(max_length=40, choices=_choices(ReasonCode), blank=True)
    requested_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run_id", "requested_at", "id"]

    def __str__(self) -> str:
        return f"{self.governance_type} ({self.status})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        assignees = self.pending_assignees
        super().save(*args, **kwargs)
        if assignees is not None:
            self.assigned_to.set(assignees)
            self.pending_assignees = None

    def assignee_usernames(self) -> list[str]:
        """Assignees as the event names them (also before the M2M rows are written)."""
        pending = self.pending_assignees
        if pending is not None:
            return sorted(user.get_username() for user in pending)
        return sorted(self.assigned_to.values_list("username", flat=True))
