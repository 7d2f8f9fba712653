"""Event schemas: one pydantic model per event type, the Python twin of the seed's Zod schemas.

Layer 1 of the PHI guard is here, and it fails closed: unknown fields are forbidden, ids are
opaque random ids, timestamps are typed, codes are enums, and free text exists only where the
seed has it (`runName`, `stageName`, `statusMessage`, `artifactName`), bounded in length.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    ValidationError,
)
from pydantic.alias_generators import to_camel


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


RUN_EVENTS = "RUN_EVENTS"
STAGE_EVENTS = "STAGE_EVENTS"
ARTIFACT_EVENTS = "ARTIFACT_EVENTS"
GOVERNANCE_EVENTS = "GOVERNANCE_EVENTS"

ID_PREFIXES = {"run": "run", "project": "prj", "stage": "stg", "artifact": "art", "gov": "gov"}
_ID = r"_[0-9a-z]{20}"
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")

RunId = Annotated[str, StringConstraints(pattern=rf"^run{_ID}$")]
ProjectId = Annotated[str, StringConstraints(pattern=rf"^prj{_ID}$")]
StageId = Annotated[str, StringConstraints(pattern=rf"^stg{_ID}$")]
ArtifactId = Annotated[str, StringConstraints(pattern=rf"^art{_ID}$")]
GovernanceId = Annotated[str, StringConstraints(pattern=rf"^gov{_ID}$")]
# A staff identifier: a Django username (letters, digits and @.+-_), e.g. "admin@example.com".
StaffId = Annotated[str, StringConstraints(pattern=r"^[\w.@+-]{1,150}$")]


def _real_moment(value: str) -> str:
    # The pattern already fixed the shape; this refuses impossible dates (2026-02-30).
    # fromisoformat is ~30x cheaper than strptime, and this runs on every event.
    datetime.fromisoformat(value[:-1])
    return value


Timestamp = Annotated[
    str, StringConstraints(pattern=TIMESTAMP_RE.pattern), AfterValidator(_real_moment)
]
# Free text, only where the seed has it. Single line, bounded: a paragraph is never a status.
ShortText = Annotated[
    str, StringConstraints(min_length=1, max_length=120, pattern=r"^[^\r\n\t\x00-\x1f]*$")
]
StatusText = Annotated[str, StringConstraints(max_length=200, pattern=r"^[^\r\n\t\x00-\x1f]*$")]
ArtifactKind = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
ContentType = Annotated[
    str, StringConstraints(pattern=r"^[a-z]+/[a-z0-9][a-z0-9.+-]{0,80}(;\s?[a-z-]+=[\w.-]+)?$")
]
# An artifact checksum is a digest and nothing else (a free-text "checksum" is a place to hide
# PHI): `algo:hex` with the algorithm's own length, or bare hex of a known digest length.
_DIGEST_ALGOS: dict[int, str] = {
    32: "md5",
    40: "sha1",
    56: "sha224|sha3-224",
    64: "sha256|sha3-256|blake2s|blake2b-256",
    96: "sha384|sha3-384",
    128: "sha512|sha3-512|blake2b|blake2b-512",
}
CHECKSUM_PATTERN = (
    "^(?:"
    + "|".join(f"(?:(?:{algos}):)?[0-9a-fA-F]{{{n}}}" for n, algos in _DIGEST_ALGOS.items())
    + ")$"
)
CHECKSUM_MAX_LENGTH = 160  # "blake2b-512:" + 128 hex digits, with room
CHECKSUM_RE = re.compile(CHECKSUM_PATTERN)
Checksum = Annotated[str, StringConstraints(pattern=CHECKSUM_PATTERN)]
Count = Annotated[int, Strict(), Field(ge=0, le=2**53 - 1)]
Milliseconds = Annotated[int, Strict(), Field(ge=0, le=10 * 365 * 24 * 3600 * 1000)]


def iso_timestamp(moment: datetime | None = None) -> str:
    """ISO-8601 UTC with milliseconds and `Z`, the only timestamp form on the wire."""
    moment = moment or datetime.now(UTC)
    if moment.tzinfo is None:
        raise ValueError("naive datetimes are ambiguous; pass an aware datetime")
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class Payload(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=False,
        frozen=True,
        use_enum_values=True,
    )


class RunCreated(Payload):
    run_id: RunId
    project_id: ProjectId
    run_name: ShortText
    stage_count: Count
    created_by: StaffId
    created_at: Timestamp


class RunStarted(Payload):
    run_id: RunId
    project_id: ProjectId
    started_at: Timestamp
    estimated_duration: Milliseconds | None = None


class RunCompleted(Payload):
    run_id: RunId
    project_id: ProjectId
    completed_at: Timestamp
    duration_ms: Milliseconds
    stages_completed: Count
    artifacts_generated: Count


class RunFailed(Payload):
    run_id: RunId
    project_id: ProjectId
    failed_at: Timestamp
    error_code: ErrorCode
    failed_stage_id: StageId | None = None


class StagePayload(Payload):
    run_id: RunId
    project_id: ProjectId
    stage_id: StageId
    stage_name: ShortText
    stage_index: Annotated[int, Strict(), Field(ge=0, le=10_000)]


class StageStarted(StagePayload):
    started_at: Timestamp


class StageProgress(StagePayload):
    progress: Annotated[int, Strict(), Field(ge=0, le=100)]
    status_message: StatusText | None = None
    items_processed: Count | None = None
    items_total: Count | None = None


class StageCompleted(StagePayload):
    completed_at: Timestamp
    duration_ms: Milliseconds


class StageFailed(StagePayload):
    failed_at: Timestamp
    error_code: ErrorCode


class ArtifactCreated(Payload):
    run_id: RunId
    project_id: ProjectId
    artifact_id: ArtifactId
    stage_id: StageId | None = None
    artifact_kind: ArtifactKind
    artifact_name: Annotated[
        str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\r\n\t\x00-\x1f]*$")
    ]
    size_bytes: Count
    content_type: ContentType
    created_at: Timestamp


class GovernanceRequired(Payload):
    run_id: RunId
    project_id: ProjectId
    governance_id: GovernanceId
    governance_type: GovernanceType
    priority: Priority
    assigned_to: Annotated[list[StaffId], Field(max_length=50)]
    requested_at: Timestamp


class ApprovalDecision(Payload):
    run_id: RunId
    project_id: ProjectId
    governance_id: GovernanceId
    governance_type: GovernanceType
    decided_by: StaffId
    decided_at: Timestamp
    reason_code: ReasonCode | None = None


# The event catalogue, in one place: every event type, its category and its payload model.
# Everything else (the bus, the gateway, the socket protocol's models, the API, the AsyncAPI
# document, docs/protocol.md) derives from it; the JS client's copy is checked against it
# (tests/test_catalogue.py).
EVENT_CATALOGUE: dict[str, tuple[str, type[Payload]]] = {
    "run.created": (RUN_EVENTS, RunCreated),
    "run.started": (RUN_EVENTS, RunStarted),
    "run.completed": (RUN_EVENTS, RunCompleted),
    "run.failed": (RUN_EVENTS, RunFailed),
    "stage.started": (STAGE_EVENTS, StageStarted),
    "stage.progress": (STAGE_EVENTS, StageProgress),
    "stage.completed": (STAGE_EVENTS, StageCompleted),
    "stage.failed": (STAGE_EVENTS, StageFailed),
    "artifact.created": (ARTIFACT_EVENTS, ArtifactCreated),
    "governance.required": (GOVERNANCE_EVENTS, GovernanceRequired),
    "approval.granted": (GOVERNANCE_EVENTS, ApprovalDecision),
    "approval.denied": (GOVERNANCE_EVENTS, ApprovalDecision),
}
EVENT_TYPES: tuple[str, ...] = tuple(EVENT_CATALOGUE)
CATEGORY_OF: dict[str, str] = {t: category for t, (category, _) in EVENT_CATALOGUE.items()}
PAYLOAD_MODELS: dict[str, type[Payload]] = {t: model for t, (_, model) in EVENT_CATALOGUE.items()}
EVENT_CATEGORIES: dict[str, tuple[str, ...]] = {
    category: tuple(t for t in EVENT_TYPES if CATEGORY_OF[t] == category)
    for category in dict.fromkeys(CATEGORY_OF.values())
}

# The catalogue's names as types, for models that take an event type or category name (the
# envelope, the socket protocol's messages). Built from the catalogue, so mypy sees plain str.
if TYPE_CHECKING:
    EventTypeName: TypeAlias = str
    EventCategoryName: TypeAlias = str
else:
    EventTypeName = Literal[EVENT_TYPES]
    EventCategoryName = Literal[tuple(EVENT_CATEGORIES)]


class EventRejected(ValueError):
    """An event the bus refuses to publish. The message names fields, never values."""


class InvalidEvent(EventRejected):
    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("invalid event: " + "; ".join(errors))


class EventEnvelope(BaseModel):
    """The wire envelope: the seed's {type, timestamp, payload} plus the log position `id`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[int, Field(ge=1)] | None = None
    type: EventTypeName
    timestamp: Timestamp
    payload: Payload


def _describe(error: Any, prefix: str) -> str:
    loc = ".".join(str(part) for part in error["loc"])
    # Input values are deliberately left out: they may be the very PHI we are refusing.
    return f"{prefix}{loc}: {error['msg']}" if loc else f"{prefix.rstrip('.')}: {error['msg']}"


def validate_payload(event_type: str, payload: Any) -> Payload:
    """Validate one payload; raises InvalidEvent naming each bad field."""
    model = PAYLOAD_MODELS.get(event_type)
    if model is None:
        raise InvalidEvent([f"type: unknown event type (expected one of {', '.join(EVENT_TYPES)})"])
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise InvalidEvent(
            [_describe(e, "payload.") for e in exc.errors(include_input=False)]
        ) from None


def parse_event(obj: Any) -> EventEnvelope:
    """Parse a whole envelope (the seed's event object); raises InvalidEvent naming each field."""
    if not isinstance(obj, dict):
        raise InvalidEvent(["event: expected an object"])
    errors: list[str] = []
    extra = sorted(set(obj) - {"id", "type", "timestamp", "payload"})
    errors += [f"{name}: extra field not permitted" for name in extra]
    event_type = obj.get("type")
    if not isinstance(event_type, str) or event_type not in PAYLOAD_MODELS:
        errors.append("type: unknown event type")
    timestamp = obj.get("timestamp")
    if not isinstance(timestamp, str) or not TIMESTAMP_RE.match(timestamp):
        errors.append("timestamp: expected ISO-8601 UTC with milliseconds and Z")
    event_id = obj.get("id")
    if event_id is not None and (
        not isinstance(event_id, int) or isinstance(event_id, bool) or event_id < 1
    ):
        errors.append("id: expected a positive integer")
    payload: Payload | None = None
    if "payload" not in obj:
        errors.append("payload: field required")
    elif isinstance(event_type, str) and event_type in PAYLOAD_MODELS:
        try:
            payload = validate_payload(event_type, obj["payload"])
        except InvalidEvent as exc:
            errors += exc.errors
    if errors or payload is None:
        raise InvalidEvent(errors)
    return EventEnvelope.model_construct(
        id=event_id, type=event_type, timestamp=timestamp, payload=payload
    )


def is_valid_event(obj: Any) -> bool:
    """The seed's `isValidWebSocketEvent`."""
    try:
        parse_event(obj)
    except InvalidEvent:
        return False
    return True


def payload_json_schema(event_type: str) -> dict[str, Any]:
    return PAYLOAD_MODELS[event_type].model_json_schema(by_alias=True)
