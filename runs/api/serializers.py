"""Explicit serializers: camelCase on the wire (the events' vocabulary), snake_case in Python.

Input fields are strict: a number is not a string, `true` is not 1, `"45"` is not 45, a float
is not an integer. That is what the event schemas demand too, so the API refuses up front what
the bus would refuse later, and names the field.

Resource objects use `id` and `name` for their own id and name; the events call the same
values `runId`/`runName`, `stageId`/`stageName`, `artifactName`, `governanceId`. References to
other objects use the events' names (`projectId`, `runId`, `stageId`).
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Any, get_args

from django.contrib.auth import get_user_model
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from events.schemas import (
    ArtifactKind,
    Checksum,
    ContentType,
    ErrorCode,
    GovernanceType,
    Priority,
    ReasonCode,
    iso_timestamp,
)
from runs.models import Approval, Artifact, Project, Role, Run, Stage
from runs.validators import phi_safe, phi_safe_together, single_line

MAX_COUNT = 2**53 - 1  # what a JavaScript client can hold exactly; the events' Count bound
MAX_DURATION_MS = 10 * 365 * 24 * 3600 * 1000  # the events' Milliseconds bound
MAX_STAGES = 100
MAX_ASSIGNEES = 50


def _pattern(annotated: Any) -> re.Pattern[str]:
    """The regex of an `Annotated[str, StringConstraints(pattern=...)]` event field type."""
    for meta in get_args(annotated)[1:]:
        pattern = getattr(meta, "pattern", None)
        if pattern:
            return re.compile(pattern)
    raise TypeError(f"{annotated!r} has no pattern")


ARTIFACT_KIND_RE = _pattern(ArtifactKind)
CONTENT_TYPE_RE = _pattern(ContentType)
CHECKSUM_RE = _pattern(Checksum)
CHECKSUM_RULE = (
    "must be a digest: algo:hex (md5 32, sha1 40, sha256 64, sha512 or blake2b 128 hex digits, "
    "...) or bare hex of one of those lengths"
)


# --- strict fields -------------------------------------------------------------------------


class StrictCharField(serializers.CharField):
    """A string and nothing else; too-long input is refused before any validator reads it."""

    default_error_messages = {"not_a_string": "must be a string"}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("not_a_string")
        if self.max_length is not None and len(data) > self.max_length:
            self.fail("max_length", max_length=self.max_length)
        return str(super().to_internal_value(data))

    def run_validators(self, value: Any) -> None:
        # The PHI scan and friends only see text that is already bounded and well-formed.
        if isinstance(value, str) and ("\x00" in value or _has_surrogates(value)):
            raise serializers.ValidationError("contains characters that are not allowed")
        super().run_validators(value)


def _has_surrogates(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class LabelField(StrictCharField):
    """A one-line label that reaches an event: no control characters, PHI-checked."""

    def __init__(self, *, phi_field: str, **kwargs: Any) -> None:
        kwargs.setdefault("validators", [])
        kwargs["validators"] = [single_line, phi_safe(phi_field), *kwargs["validators"]]
        super().__init__(**kwargs)


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer: not a string, not a boolean, not a float."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return data


class StrictChoiceField(serializers.ChoiceField):
    """One of an enum's values, as a string; the error lists the choices, never the input."""

    def __init__(self, enum: type[Enum] | list[str], **kwargs: Any) -> None:
        values = [m.value for m in enum] if isinstance(enum, type) else list(enum)
        kwargs.setdefault(
            "error_messages",
            {"invalid_choice": f"unknown value (expected one of {', '.join(values)})"},
        )
        super().__init__(choices=values, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str) or data not in self.choice_strings_to_values:
            self.fail("invalid_choice")
        return data


class ObjectIdField(StrictCharField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 32)
        super().__init__(**kwargs)


@extend_schema_field(OpenApiTypes.DATETIME)
class TimestampField(serializers.Field):
    """ISO-8601 UTC with milliseconds and Z, exactly as the events carry it."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("read_only", True)
        super().__init__(**kwargs)

    def to_representation(self, value: Any) -> str | None:
        return iso_timestamp(value) if value is not None else None


class BlankAsNullField(serializers.CharField):
    """Model `""` (no code) → JSON null."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("read_only", True)
        kwargs.setdefault("allow_null", True)
        super().__init__(**kwargs)

    def to_representation(self, value: Any) -> str:
        # The base class promises str; JSON null is what a client should see for "no code".
        return str(value) if value else None  # type: ignore[return-value]


# --- output --------------------------------------------------------------------------------


class MemberSerializer(serializers.Serializer):
    username = serializers.CharField(source="user.username", read_only=True)
    role = serializers.CharField(read_only=True)


class ProjectSerializer(serializers.Serializer):
    id = serializers.CharField(read_only=True)
    name = serializers.CharField(read_only=True)
    createdAt = TimestampField(source="created_at")
    role = serializers.SerializerMethodField(help_text="Your role in this project")

    def get_role(self, project: Project) -> str | None:
        request = self.context.get("request")
        if request is not None and request.user.is_staff:
            return Role.OWNER.value  # staff act as owners everywhere
        return getattr(project, "my_role", None)


class ProjectDetailSerializer(ProjectSerializer):
    members = MemberSerializer(source="memberships", many=True, read_only=True)


class StageSerializer(serializers.Serializer):
    id = serializers.CharField(read_only=True)
    runId = serializers.CharField(source="run_id", read_only=True)
    stageIndex = serializers.IntegerField(source="position", read_only=True)
    name = serializers.CharField(read_only=True)
    status = serializers.CharField(read_only=True)
    progress = serializers.IntegerField(read_only=True)
    itemsProcessed = serializers.IntegerField(
        source="items_processed", read_only=True, allow_null=True
    )
    itemsTotal = serializers.IntegerField(source="items_total", read_only=True, allow_null=True)
    statusMessage = serializers.CharField(source="status_message", read_only=True)
    startedAt = TimestampField(source="started_at", allow_null=True)
    finishedAt = TimestampField(source="finished_at", allow_null=True)
    errorCode = BlankAsNullField(source="error_code")


class ArtifactSerializer(serializers.Serializer):
    id = serializers.CharField(read_only=True)
    runId = serializers.CharField(source="run_id", read_only=True)
    stageId = serializers.CharField(source="stage_id", read_only=True, allow_null=True)
    kind = serializers.CharField(read_only=True)
    name = serializers.CharField(read_only=True)
    sizeBytes = serializers.IntegerField(source="size_bytes", read_only=True)
    contentType = serializers.CharField(source="content_type", read_only=True)
    checksum = BlankAsNullField()
    createdAt = TimestampField(source="created_at")


class ApprovalSerializer(serializers.Serializer):
    id = serializers.CharField(read_only=True)
    runId = serializers.CharField(source="run_id", read_only=True)
    governanceType = serializers.CharField(source="governance_type", read_only=True)
    priority = serializers.CharField(read_only=True)
    status = serializers.CharField(read_only=True)
    assignedTo = serializers.SerializerMethodField()
    decidedBy = serializers.SerializerMethodField()
    reasonCode = BlankAsNullField(source="reason_code")
    requestedAt = TimestampField(source="requested_at")
    decidedAt = TimestampField(source="decided_at", allow_null=True)

    def get_assignedTo(self, approval: Approval) -> list[str]:
        # Reads the prefetch cache when there is one (run detail), one query otherwise.
        return sorted(user.get_username() for user in approval.assigned_to.all())

    def get_decidedBy(self, approval: Approval) -> str | None:
        return approval.decided_by.get_username() if approval.decided_by else None


class InboxApprovalSerializer(ApprovalSerializer):
    """A pending approval in the approvals inbox: the approval, and where it waits."""

    projectId = serializers.CharField(source="run.project_id", read_only=True)
    projectName = serializers.CharField(source="run.project.name", read_only=True)
    runName = serializers.CharField(source="run.name", read_only=True)
    runStatus = serializers.CharField(source="run.status", read_only=True)
    assignedToMe = serializers.BooleanField(
        source="assigned_to_me", read_only=True, help_text="You are one of its assignees"
    )


class RunSerializer(serializers.Serializer):
    id = serializers.CharField(read_only=True)
    projectId = serializers.CharField(source="project_id", read_only=True)
    name = serializers.CharField(read_only=True)
    status = serializers.CharField(read_only=True)
    createdBy = serializers.CharField(source="created_by.username", read_only=True)
    createdAt = TimestampField(source="created_at")
    startedAt = TimestampField(source="started_at", allow_null=True)
    finishedAt = TimestampField(source="finished_at", allow_null=True)
    estimatedDuration = serializers.IntegerField(
        source="estimated_duration", read_only=True, allow_null=True
    )
    errorCode = BlankAsNullField(source="error_code")


class RunDetailSerializer(RunSerializer):
    stages = StageSerializer(many=True, read_only=True)
    artifacts = ArtifactSerializer(many=True, read_only=True)
    approvals = ApprovalSerializer(many=True, read_only=True)


# --- input ---------------------------------------------------------------------------------


class TokenRequestSerializer(serializers.Serializer):
    username = StrictCharField(max_length=150)
    password = StrictCharField(max_length=4096, trim_whitespace=False)


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(read_only=True)


class ProjectCreateSerializer(serializers.Serializer):
    # A project name reaches no event, but it is stored and shown (dashboard, admin, API):
    # it is PHI-checked like every label.
    name = LabelField(
        phi_field="project name", max_length=Project._meta.get_field("name").max_length
    )


class MemberInputSerializer(serializers.Serializer):
    username = StrictCharField(max_length=150)
    role = StrictChoiceField([r.value for r in Role])

    def validate_username(self, value: str) -> Any:
        user = get_user_model().objects.filter(username=value, is_active=True).first()
        if user is None:
            raise serializers.ValidationError("no active user with this username")
        return user


class RunCreateSerializer(serializers.Serializer):
    projectId = ObjectIdField()
    name = LabelField(phi_field="name", max_length=Run._meta.get_field("name").max_length)
    stages = serializers.ListField(
        child=LabelField(
            phi_field="stage name", max_length=Stage._meta.get_field("name").max_length
        ),
        min_length=1,
        max_length=MAX_STAGES,
        help_text=f"Stage names in order, 1 to {MAX_STAGES}",
    )
    estimatedDuration = StrictIntegerField(
        min_value=0,
        max_value=MAX_DURATION_MS,
        required=False,
        allow_null=True,
        help_text="Milliseconds",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # Each name passed alone; the dashboard shows them side by side.
        phi_safe_together({"name": attrs["name"], "stages": attrs["stages"]})
        return attrs


class RunFailSerializer(serializers.Serializer):
    errorCode = StrictChoiceField(ErrorCode)
    failedStageId = ObjectIdField(required=False, allow_null=True)


class StageFailSerializer(serializers.Serializer):
    errorCode = StrictChoiceField(ErrorCode)


class ProgressSerializer(serializers.Serializer):
    progress = StrictIntegerField(min_value=0, max_value=100)
    itemsProcessed = StrictIntegerField(
        min_value=0, max_value=MAX_COUNT, required=False, allow_null=True
    )
    itemsTotal = StrictIntegerField(
        min_value=0, max_value=MAX_COUNT, required=False, allow_null=True
    )
    statusMessage = LabelField(
        phi_field="statusMessage",
        max_length=Stage._meta.get_field("status_message").max_length,
        required=False,
        allow_blank=True,
        allow_null=True,
    )


class ArtifactCreateSerializer(serializers.Serializer):
    kind = StrictCharField(
        max_length=Artifact._meta.get_field("kind").max_length,
        validators=[phi_safe("kind")],
        help_text="lower-case identifier, e.g. `dataset`, `report`, `figure`",
    )
    name = LabelField(phi_field="name", max_length=Artifact._meta.get_field("name").max_length)
    sizeBytes = StrictIntegerField(min_value=0, max_value=MAX_COUNT)
    contentType = StrictCharField(
        max_length=Artifact._meta.get_field("content_type").max_length,
        validators=[phi_safe("contentType")],
    )
    checksum = StrictCharField(
        max_length=Artifact._meta.get_field("checksum").max_length,
        required=False,
        allow_blank=True,
        help_text="A digest: `sha256:<64 hex>`, `md5:<32 hex>`, ... or bare hex of such a length",
    )
    stageId = ObjectIdField(required=False, allow_null=True)

    def validate_kind(self, value: str) -> str:
        if not ARTIFACT_KIND_RE.match(value):
            raise serializers.ValidationError(
                "must start with a lower-case letter, then letters, digits or _ (max 40)"
            )
        return value

    def validate_contentType(self, value: str) -> str:
        if not CONTENT_TYPE_RE.match(value):
            raise serializers.ValidationError("must be a lower-case MIME type, e.g. text/csv")
        return value

    def validate_checksum(self, value: str) -> str:
        if value and not CHECKSUM_RE.match(value):
            raise serializers.ValidationError(CHECKSUM_RULE)
        return value


class ApprovalCreateSerializer(serializers.Serializer):
    governanceType = StrictChoiceField(GovernanceType)
    priority = StrictChoiceField(Priority, required=False, default=Priority.MEDIUM.value)
    assignedTo = serializers.ListField(
        child=StrictCharField(max_length=150),
        required=False,
        default=list,
        max_length=MAX_ASSIGNEES,
        help_text="Usernames of project owners or members (or staff) who should decide",
    )


class DecisionSerializer(serializers.Serializer):
    reasonCode = StrictChoiceField(ReasonCode, required=False, allow_null=True)
