"""The `/ws` protocol's messages as pydantic models: the one description of what a client may
send and what the server sends back.

The consumer validates every client message here (`envelope`, then `client_payload`); the
AsyncAPI document (`events/asyncapi.py`) and the message tables of docs/protocol.md
(`devtools/protocol_doc.py`) are generated from the same models. Events themselves are the
catalogue's payload models (`events/schemas.py`).

What must stay true:
- A refused message gets an `error` frame whose code and message name the field and the rule
  (`_refusal` maps pydantic's errors to them one by one). Values a client sent are never
  echoed, except unknown field names, cut to 40 characters, as the frames always did.
- Client integers are JSON integers: strict mode refuses `1.0`, `1e19`, `true` and `"5"` (the
  JSON parser already tells `1` from `1.0`).
- Server messages are not built from these models on the way out (a model per outbound frame
  costs more than the frame); tests check that the frames the consumer sends validate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from .limits import MAX_EVENT_ID, MAX_LIST_ITEMS
from .schemas import CATEGORY_OF, EVENT_CATEGORIES, EventCategoryName, EventTypeName

PROTOCOL_VERSION = "1.0"

# `details.code` of an `error` frame, and when it is sent (docs/protocol.md lists them).
ERROR_CODES: dict[str, str] = {
    "invalid_json": "the frame is not valid JSON (`details.position`)",
    "binary_not_supported": "a binary frame",
    "invalid_message": "a malformed message or field value (the message names the rule)",
    "unknown_type": "an unknown message `type`",
    "unknown_event_type": "an unknown event type (`details.allowed` lists the known ones)",
    "unknown_category": "an unknown event category (`details.allowed` lists the known ones)",
    "not_subscribed": "`unsubscribe` from something not subscribed to",
    "not_authenticated": "`resume` before `auth`",
    "rate_limited": "over the inbound rate; the message was ignored",
    "too_many_connections": "the user holds too many sockets; the socket closes with 4429",
    "internal_error": "the server could not handle the message",
}
if TYPE_CHECKING:
    ErrorCodeName: TypeAlias = str
else:
    ErrorCodeName = Literal[tuple(ERROR_CODES)]


class ProtocolError(Exception):
    """A client message refused: `code` and `message` go into the `error` frame, `details`
    next to the code. Nothing in them may quote a value the client sent."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


# --- client → server ---------------------------------------------------------------------

EventId = Annotated[
    int,
    Field(
        ge=0,
        le=MAX_EVENT_ID,
        description="A JSON integer literal (no fraction, no exponent: 1.0 and 1e3 are refused)",
    ),
]
TypeList = Annotated[list[EventTypeName], Field(max_length=MAX_LIST_ITEMS)]
CategoryList = Annotated[list[EventCategoryName], Field(max_length=MAX_LIST_ITEMS)]


class ClientPayload(BaseModel):
    """A client message's payload. Strict: a JSON value of the wrong type is refused, never
    converted. Absent and `null` mean the same, except where a field says otherwise."""

    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, alias_generator=to_camel, populate_by_name=False
    )


class NoPayload(ClientPayload):
    """No fields (the payload may be omitted, `null` or `{}`)."""


class Auth(ClientPayload):
    """Authenticate (token or session), narrow the scope, and optionally replace the
    subscriptions and resume, all in one message."""

    token: str | None = Field(None, description="REST API token or socket token (wst.…)")
    user_id: str | None = Field(None, description="Must be the authenticated user's username")
    project_id: str | None = None
    run_id: str | None = None
    last_event_id: EventId | None = None
    event_types: TypeList | None = None
    event_categories: CategoryList | None = None

    def subscriptions(self) -> set[str] | None:
        """The subscriptions this message replaces the socket's with, or None to keep them."""
        if self.event_types is None and self.event_categories is None:
            return None
        return {_CANONICAL[n] for n in (*(self.event_types or ()), *(self.event_categories or ()))}


class SubscriptionTarget(ClientPayload):
    """Exactly one of `eventType` or `eventCategory`."""

    event_type: EventTypeName | SkipJsonSchema[None] = None
    event_category: EventCategoryName | SkipJsonSchema[None] = None

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["eventType"]}, {"required": ["eventCategory"]}]}
    )

    @model_validator(mode="before")
    @classmethod
    def _exactly_one(cls, data: Any) -> Any:
        # Unknown fields are reported first (by extra="forbid"): only judge a payload without.
        if (
            isinstance(data, dict)
            and set(data) <= {"eventType", "eventCategory"}
            and ("eventType" in data) == ("eventCategory" in data)
        ):
            raise PydanticCustomError(
                "exactly_one", "give exactly one of eventType or eventCategory"
            )
        return data

    @field_validator("event_type", "event_category", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:  # given, but as null: not a name
            raise PydanticCustomError("literal_error", "unknown name")
        return value

    def target(self) -> tuple[str, str]:
        """("eventType" or "eventCategory", the name)."""
        if self.event_type is not None:
            return "eventType", _CANONICAL[self.event_type]
        assert self.event_category is not None
        return "eventCategory", _CANONICAL[self.event_category]


class Resume(ClientPayload):
    """Replay what was missed since `lastEventId` (or since the last id sent, if later)."""

    last_event_id: EventId

    @field_validator("last_event_id", mode="before")
    @classmethod
    def _required(cls, value: Any) -> Any:
        if value is None:
            raise PydanticCustomError("missing", "required")
        return value


class ClientMessage(BaseModel):
    """One client message type: its payload model and what the server answers."""

    model_config = ConfigDict(frozen=True)

    payload: type[ClientPayload]
    answer: str


CLIENT_MESSAGES: dict[str, ClientMessage] = {
    "ping": ClientMessage(payload=NoPayload, answer="`pong`"),
    "auth": ClientMessage(payload=Auth, answer="`auth.success` or `auth.failed`"),
    "subscribe": ClientMessage(payload=SubscriptionTarget, answer="`subscription.added`"),
    "unsubscribe": ClientMessage(payload=SubscriptionTarget, answer="`subscription.removed`"),
    "resume": ClientMessage(
        payload=Resume,
        answer="the missed events, then live ones (or `resync.required`)",
    ),
    "get_status": ClientMessage(payload=NoPayload, answer="`status`"),
}
CLIENT_TOP_LEVEL = frozenset({"type", "payload"})


# --- server → client ---------------------------------------------------------------------


class ServerPayload(BaseModel):
    """A server message's payload (`{"type", "timestamp", "payload"}` on the wire)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=False
    )


class Pong(ServerPayload):
    """The answer to `ping`."""


class ConnectionEstablished(ServerPayload):
    """The first frame on every socket; `authenticated` when the session cookie was used."""

    client_id: str
    version: str
    authenticated: bool
    user_id: str | None


class AuthSuccess(ServerPayload):
    """`projectId` and `runId` are null where the scope was not narrowed."""

    user_id: str
    project_id: str | None
    run_id: str | None


class AuthFailed(ServerPayload):
    """Never says whether a foreign project or run exists."""

    message: str


class SubscriptionChange(ServerPayload):
    """The target of the change, and `subscriptions`: the socket's full sorted list of types
    and categories after it."""

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"required": ["eventType", "subscriptions"]},
                {"required": ["eventCategory", "subscriptions"]},
            ]
        }
    )

    event_type: EventTypeName | SkipJsonSchema[None] = None
    event_category: EventCategoryName | SkipJsonSchema[None] = None
    subscriptions: list[str] = Field(description="The socket's full list")


class Status(ServerPayload):
    """The socket's state; `lastEventId` is the last event id sent, or null."""

    client_id: str
    user_id: str | None
    project_id: str | None
    run_id: str | None
    subscriptions: list[str] = Field(description="The socket's full list")
    message_count: Annotated[int, Field(ge=0)]
    last_event_id: int | None


class ErrorDetails(BaseModel):
    """`code`, and per code more fields (`field`, `fields`, `allowed`, `maxItems`, ...)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    code: ErrorCodeName


class Error(ServerPayload):
    """A refused message (the socket stays open); `details.code` says why."""

    message: str
    details: ErrorDetails


class ResyncRequired(ServerPayload):
    """The log no longer holds what was missed: reload over REST."""

    last_event_id: int
    oldest_event_id: int


SERVER_MESSAGES: dict[str, type[ServerPayload]] = {
    "connection.established": ConnectionEstablished,
    "pong": Pong,
    "auth.success": AuthSuccess,
    "auth.failed": AuthFailed,
    "subscription.added": SubscriptionChange,
    "subscription.removed": SubscriptionChange,
    "status": Status,
    "error": Error,
    "resync.required": ResyncRequired,
}


# --- validation ----------------------------------------------------------------------------

# The catalogue's own string objects: names parsed from a client's frames are swapped for
# these, so a socket's subscriptions never keep the frame's strings alive.
_CANONICAL: dict[str, str] = {name: name for name in (*CATEGORY_OF, *EVENT_CATEGORIES)}


def envelope(content: Any) -> tuple[str, dict[str, Any]]:
    """The `type` and payload of a parsed client frame (a missing or null payload is `{}`)."""
    if not isinstance(content, dict):
        raise ProtocolError("invalid_message", "a message must be a JSON object")
    msg_type = content.get("type")
    if not isinstance(msg_type, str):
        raise ProtocolError("invalid_message", "a message needs a string 'type'")
    extra = set(content) - CLIENT_TOP_LEVEL
    if extra:
        raise ProtocolError(
            "invalid_message", "unknown top-level fields", fields=sorted(extra)[:10]
        )
    payload = content.get("payload")
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise ProtocolError("invalid_message", "'payload' must be an object")
    return msg_type, payload


def unknown_type() -> ProtocolError:
    return ProtocolError(
        "unknown_type",
        f"unknown message type; expected one of {', '.join(sorted(CLIENT_MESSAGES))}",
    )


def client_payload(msg_type: str, payload: dict[str, Any]) -> Any:
    """The validated payload of a known message type; raises ProtocolError."""
    model = CLIENT_MESSAGES[msg_type].payload
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise _refusal(msg_type, model, exc.errors(include_url=False)) from None


# Field kinds (by wire name; the names are unique across client messages) → how a refusal
# of that field reads. Every field of every client payload has one (tests/test_protocol.py).
_TEXT_FIELDS = frozenset({"token", "userId", "projectId", "runId"})
_ID_FIELDS = frozenset({"lastEventId"})
_NAME_LISTS: dict[str, tuple[str, Mapping[str, object]]] = {
    "eventTypes": ("unknown_event_type", CATEGORY_OF),
    "eventCategories": ("unknown_category", EVENT_CATEGORIES),
}
_NAMES: dict[str, tuple[str, str, Mapping[str, object]]] = {
    "eventType": ("unknown_event_type", "unknown event type", CATEGORY_OF),
    "eventCategory": ("unknown_category", "unknown event category", EVENT_CATEGORIES),
}


def _refusal(msg_type: str, model: type[ClientPayload], errors: list[Any]) -> ProtocolError:
    """One ProtocolError for a refused payload, in the order the checks have always run:
    unknown fields, then the whole payload's rule, then the first bad field (in the model's
    field order, which is the order the fields are documented in)."""
    extra = [str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden"]
    if extra:
        allowed = sorted(str(f.alias) for f in model.model_fields.values())
        return ProtocolError(
            "invalid_message",
            "unknown payload fields" + (f"; allowed: {', '.join(allowed)}" if allowed else ""),
            fields=sorted(name[:40] for name in extra)[:10],
        )
    error = errors[0]
    if not error["loc"]:  # a rule about the whole payload: its message is ours
        return ProtocolError("invalid_message", error["msg"])
    name = str(error["loc"][0])
    field = f"{msg_type}.{name}"
    kind = error["type"]
    if name in _TEXT_FIELDS:
        return ProtocolError("invalid_message", f"{field} must be a string")
    if name in _ID_FIELDS:
        if kind == "missing":
            return ProtocolError("invalid_message", f"{field} is required")
        rule = f"{field} must be an integer between 0 and {MAX_EVENT_ID}"
        if kind in ("greater_than_equal", "less_than_equal"):
            return ProtocolError("invalid_message", rule, field=field)
        return ProtocolError(
            "invalid_message", f"{rule} (got {_json_kind(error.get('input'))})", field=field
        )
    if name in _NAME_LISTS:
        code, known = _NAME_LISTS[name]
        if kind == "too_long":
            return ProtocolError(
                "invalid_message",
                f"{field}: at most {MAX_LIST_ITEMS} items",
                field=field,
                maxItems=MAX_LIST_ITEMS,
            )
        if kind == "list_type":
            return ProtocolError("invalid_message", f"{field} must be a list of names")
        return ProtocolError(code, f"{field}: unknown name", allowed=sorted(known))
    if name in _NAMES:
        code, message, known = _NAMES[name]
        return ProtocolError(code, message, allowed=sorted(known))
    return ProtocolError("invalid_message", f"{field} is not valid")


def _json_kind(value: Any) -> str:
    """The JSON type of a parsed value, for error messages (never the value itself)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return "a number with a fraction or exponent"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "another type"
