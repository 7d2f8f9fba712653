"""The event catalogue: every event type, its category and its typed payload model.

GENERATED from the server's AsyncAPI document by `python -m devtools.client_models`; do not
edit by hand (a server test fails when this file is out of date).

Field names are snake_case in Python and camelCase on the wire (`payload.stage_id` is
`stageId`). Timestamps are `datetime` (aware, UTC). Unknown fields are ignored, so a newer
server's added optional fields do not break this client.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

PROTOCOL_VERSION = "1.0.0"


class Payload(BaseModel):
    """Base of every event payload model."""

    model_config = ConfigDict(
        extra="ignore", alias_generator=to_camel, populate_by_name=True, frozen=True
    )


class ErrorCode(StrEnum):
    """Why a run or stage failed. Codes, not messages: a message could carry data."""

    INTERNAL_ERROR = "INTERNAL_ERROR"
    TIMEOUT = "TIMEOUT"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    CANCELLED = "CANCELLED"
    VALIDATION_FAILED = "VALIDATION_FAILED"
    DATA_UNAVAILABLE = "DATA_UNAVAILABLE"
    DEPENDENCY_FAILED = "DEPENDENCY_FAILED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    PHI_DETECTED = "PHI_DETECTED"
    APPROVAL_DENIED = "APPROVAL_DENIED"
    STAGE_FAILED = "STAGE_FAILED"
    WORKER_LOST = "WORKER_LOST"


class GovernanceType(StrEnum):
    PHI_SCAN = "PHI_SCAN"
    ETHICS_REVIEW = "ETHICS_REVIEW"
    DATA_ACCESS = "DATA_ACCESS"
    EXPORT_REVIEW = "EXPORT_REVIEW"
    IRB_AMENDMENT = "IRB_AMENDMENT"
    MANUAL_QA = "MANUAL_QA"


class Priority(StrEnum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


class ReasonCode(StrEnum):
    """Why an approval was decided as it was."""

    MEETS_POLICY = "MEETS_POLICY"
    IRB_APPROVED = "IRB_APPROVED"
    DEIDENTIFIED = "DEIDENTIFIED"
    PHI_FOUND = "PHI_FOUND"
    POLICY_VIOLATION = "POLICY_VIOLATION"
    INSUFFICIENT_JUSTIFICATION = "INSUFFICIENT_JUSTIFICATION"
    MISSING_CONSENT = "MISSING_CONSENT"
    OTHER = "OTHER"


class RunCreated(Payload):
    run_id: Annotated[str, StringConstraints(pattern="^run_[0-9a-z]{20}$")]
    project_id: Annotated[str, StringConstraints(pattern="^prj_[0-9a-z]{20}$")]
    run_name: Annotated[
        str, StringConstraints(min_length=1, max_length=120, pattern="^[^\\r\\n\\t\\x00-\\x1f]*$")
    ]
    stage_count: Annotated[int, Field(ge=0, le=9007199254740991)]
    created_by: Annotated[str, StringConstraints(pattern="^[\\w.@+-]{1,150}$")]
    created_at: datetime


class RunStarted(Payload):
    run_id: Annotated[str, StringConstraints(pattern="^run_[0-9a-z]{20}$")]
    project_id: Annotated[str, StringConstraints(pattern="^prj_[0-9a-z]{20}$")]
    started_at: datetime
    estimated_duration: Annotated[int, Field(ge=0, le=315360000000)] | None = None


class RunCompleted(Payload):
    run_id: Annotated[str, StringConstraints(pattern="^run_[0-9a-z]{20}$")]
    project_id: Annotated[str, StringConstraints(pattern="^prj_[0-9a-z]{20}$")]
    completed_at: datetime
    duration_ms: Annotated[int, Field(ge=0, le=315360000000)]
    stages_completed: Annotated[int, Field(ge=0, le=9007199254740991)]
    artifacts_generated: Annotated[int, Field(ge=0, le=9007199254740991)]


class RunFailed(Payload):
    run_id: Annotated[str, StringConstraints(pattern="^run_[0-9a-z]{20}$")]
    project_id: Annotated[str, StringConstraints(pattern="^prj_[0-9a-z]{20}$")]
    failed_at: datetime
    error_code: ErrorCode
    failed_stage_id: Annotated[str, StringConstraints(pattern="^stg_[0-9a-z]{20}$")] | None = None


class StageStarted(Payload):
    run_id: Annotated[str, StringConstraints(pattern="^run_[0-9a-z]{20}$")]
    project_id: Annotated[str, StringConstraints(pattern="^prj_[0-9a-z]{20}$")]
    stage_id: Annotated[str, StringConstraints(pattern="^stg_[0-9a-z]{20}$")]
    stage_name: Annotated[
        str, StringConstraints(min_length=1, max_length=120, pattern="^[^\\r\\n\\t\\x00-\\x1f]*$")
    ]
    stage_index: Annotated[int, Field(ge=0, le=10000)]
    started_at: datetime


class StageProgress(Payload):
    run_id: Annotated[str, StringConstraints(pattern="^run_[0-9a-z]{20}$")]
    project_id: Annotated[str, StringConstraints(pattern="^prj_[0-9a-z]{20}$")]
    stage_id: Annotated[str, StringConstraints(pattern="^stg_[0-9a-z]{20}$")]
    stage_name: Annotated[
        str, StringConstraints(min_length=1, max_length=120, pattern="^[^\\r\\n\\t\\x00-\\x1f]*$")
    ]
    stage_index: Annotated[int, Field(ge=0, le=10000)]
    progress: Annotated[int, Field(ge=0, le=100)]
    status_message: (
        Annotated[str, StringConstraints(max_length=200, pattern="^[^\\r\\n\\t\\x00-\\x1f]*$")]
        | None
    ) = None
    items_processed: Annotated[int, Field(ge=0, le=9007199254740991)] | None = None
    items_total: Annotated[int, Field(ge=0, le=9007199254740991)] | None = None


class StageCompleted(Payload):
    run_id: Annotated[str, StringConstraints(pattern="^run_[0-9a-z]{20}$")]
    project_id: Annotated[str, StringConstraints(pattern="^prj_[0-9a-z]{20}$")]
    stage_id: Annotated[str, StringConstraints(pattern="^stg_[0-9a-z]{20}$")]
    stage_name: Annotated[
        str, StringConstraints(min_length=1, max_length=120, pattern="^[^\\r\\n\\t\\x00-\\x1f]*$")
    ]
    stage_index: Annotated[int, Field(ge=0, le=10000)]
    completed_at: datetime
    duration_ms: Annotated[int, Field(ge=0, le=315360000000)]


class StageFailed(Payload):
    run_id: Annotated[str, StringConstraints(pattern="^run_[0-9a-z]{20}$")]
    project_id: Annotated[str, StringConstraints(pattern="^prj_[0-9a-z]{20}$")]
    stage_id: Annotated[str, StringConstraints(pattern="^stg_[0-9a-z]{20}$")]
    stage_name: Annotated[
        str, StringConstraints(min_length=1, max_length=120, pattern="^[^\\r\\n\\t\\x00-\\x1f]*$")
    ]
    stage_index: Annotated[int, Field(ge=0, le=10000)]
    failed_at: datetime
    error_code: ErrorCode


class ArtifactCreated(Payload):
    run_id: Annotated[str, StringConstraints(pattern="^run_[0-9a-z]{20}$")]
    project_id: Annotated[str, StringConstraints(pattern="^prj_[0-9a-z]{20}$")]
    artifact_id: Annotated[str, StringConstraints(pattern="^art_[0-9a-z]{20}$")]
    stage_id: Annotated[str, StringConstraints(pattern="^stg_[0-9a-z]{20}$")] | None = None
    artifact_kind: Annotated[str, StringConstraints(pattern="^[a-z][a-z0-9_]{0,39}$")]
    artifact_name: Annotated[
        str, StringConstraints(min_length=1, max_length=200, pattern="^[^\\r\\n\\t\\x00-\\x1f]*$")
    ]
    size_bytes: Annotated[int, Field(ge=0, le=9007199254740991)]
    content_type: Annotated[
        str, StringConstraints(pattern="^[a-z]+/[a-z0-9][a-z0-9.+-]{0,80}(;\\s?[a-z-]+=[\\w.-]+)?$")
    ]
    created_at: datetime


class GovernanceRequired(Payload):
    run_id: Annotated[str, StringConstraints(pattern="^run_[0-9a-z]{20}$")]
    project_id: Annotated[str, StringConstraints(pattern="^prj_[0-9a-z]{20}$")]
    governance_id: Annotated[str, StringConstraints(pattern="^gov_[0-9a-z]{20}$")]
    governance_type: GovernanceType
    priority: Priority
    assigned_to: Annotated[
        list[Annotated[str, StringConstraints(pattern="^[\\w.@+-]{1,150}$")]], Field(max_length=50)
    ]
    requested_at: datetime


class ApprovalDecision(Payload):
    run_id: Annotated[str, StringConstraints(pattern="^run_[0-9a-z]{20}$")]
    project_id: Annotated[str, StringConstraints(pattern="^prj_[0-9a-z]{20}$")]
    governance_id: Annotated[str, StringConstraints(pattern="^gov_[0-9a-z]{20}$")]
    governance_type: GovernanceType
    decided_by: Annotated[str, StringConstraints(pattern="^[\\w.@+-]{1,150}$")]
    decided_at: datetime
    reason_code: ReasonCode | None = None


EVENT_CATALOGUE: dict[str, tuple[str, type[Payload]]] = {
    "run.created": ("RUN_EVENTS", RunCreated),
    "run.started": ("RUN_EVENTS", RunStarted),
    "run.completed": ("RUN_EVENTS", RunCompleted),
    "run.failed": ("RUN_EVENTS", RunFailed),
    "stage.started": ("STAGE_EVENTS", StageStarted),
    "stage.progress": ("STAGE_EVENTS", StageProgress),
    "stage.completed": ("STAGE_EVENTS", StageCompleted),
    "stage.failed": ("STAGE_EVENTS", StageFailed),
    "artifact.created": ("ARTIFACT_EVENTS", ArtifactCreated),
    "governance.required": ("GOVERNANCE_EVENTS", GovernanceRequired),
    "approval.granted": ("GOVERNANCE_EVENTS", ApprovalDecision),
    "approval.denied": ("GOVERNANCE_EVENTS", ApprovalDecision),
}
EventPayload: TypeAlias = (
    RunCreated
    | RunStarted
    | RunCompleted
    | RunFailed
    | StageStarted
    | StageProgress
    | StageCompleted
    | StageFailed
    | ArtifactCreated
    | GovernanceRequired
    | ApprovalDecision
)
EVENT_TYPES: tuple[str, ...] = tuple(EVENT_CATALOGUE)
CATEGORY_OF: dict[str, str] = {t: c for t, (c, _) in EVENT_CATALOGUE.items()}
PAYLOAD_MODELS: dict[str, type[Payload]] = {t: m for t, (_, m) in EVENT_CATALOGUE.items()}
EVENT_CATEGORIES: dict[str, tuple[str, ...]] = {
    "RUN_EVENTS": ("run.created", "run.started", "run.completed", "run.failed"),
    "STAGE_EVENTS": ("stage.started", "stage.progress", "stage.completed", "stage.failed"),
    "ARTIFACT_EVENTS": ("artifact.created",),
    "GOVERNANCE_EVENTS": ("governance.required", "approval.granted", "approval.denied"),
}
