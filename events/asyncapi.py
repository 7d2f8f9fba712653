"""The machine-readable catalogue: JSON Schema per event type and an AsyncAPI 3.0 document of the
`/ws` protocol, generated from the same pydantic models that validate events.

Served at `/api/asyncapi.json`; `tests/test_catalogue.py` keeps it in sync with the models and
with the consumer's message handlers.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic.json_schema import models_json_schema

from .limits import MAX_EVENT_ID, MAX_LIST_ITEMS
from .schemas import EVENT_CATEGORIES, PAYLOAD_MODELS, TIMESTAMP_RE

REF = "#/components/schemas/{model}"


def _obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    return schema


STRING = {"type": "string"}
NULLABLE_STRING = {"type": ["string", "null"]}
EVENT_ID = {"type": "integer", "minimum": 1, "description": "Position in the event log"}
TYPE_NAMES = sorted({t for types in EVENT_CATEGORIES.values() for t in types})
# The consumer's limits (events/gateway/consumer.py): a JSON integer, never a float such as 1.0 or
# 1e19, and never a bool; JSON Schema's "integer" admits 1.0, hence the explicit note.
LAST_EVENT_ID = {
    "type": "integer",
    "minimum": 0,
    "maximum": MAX_EVENT_ID,
    "description": "A JSON integer literal (no fraction, no exponent: 1.0 and 1e3 are refused)",
}
SUBSCRIPTION_TARGET = {
    "oneOf": [
        _obj({"eventType": {"enum": TYPE_NAMES}}, ["eventType"]),
        _obj({"eventCategory": {"enum": sorted(EVENT_CATEGORIES)}}, ["eventCategory"]),
    ]
}

# Client → server. Keys are the `type` values; each is a payload schema.
CLIENT_MESSAGES: dict[str, dict[str, Any]] = {
    "ping": _obj({}),
    "auth": _obj(
        {
            "token": {**STRING, "description": "REST API token or socket token (wst.…)"},
            "userId": {**STRING, "description": "Must be the authenticated user's username"},
            "projectId": STRING,
            "runId": STRING,
            "lastEventId": LAST_EVENT_ID,
            "eventTypes": {
                "type": "array",
                "items": {"enum": TYPE_NAMES},
                "maxItems": MAX_LIST_ITEMS,
            },
            "eventCategories": {
                "type": "array",
                "items": {"enum": sorted(EVENT_CATEGORIES)},
                "maxItems": MAX_LIST_ITEMS,
            },
        }
    ),
    "subscribe": SUBSCRIPTION_TARGET,
    "unsubscribe": SUBSCRIPTION_TARGET,
    "resume": _obj({"lastEventId": LAST_EVENT_ID}, ["lastEventId"]),
    "get_status": _obj({}),
}

SUBSCRIPTIONS = {"type": "array", "items": STRING, "description": "The socket's full list"}
_SUBSCRIPTION_CHANGE = {  # subscription.added and subscription.removed
    "type": "object",
    "properties": {
        "eventType": STRING,
        "eventCategory": STRING,
        "subscriptions": SUBSCRIPTIONS,
    },
    "required": ["subscriptions"],
}
# Server → client control messages (events are generated from the payload models below).
SERVER_MESSAGES: dict[str, dict[str, Any]] = {
    "connection.established": _obj(
        {
            "clientId": STRING,
            "version": STRING,
            "authenticated": {"type": "boolean"},
            "userId": NULLABLE_STRING,
        },
        ["clientId", "version"],
    ),
    "pong": _obj({}),
    "auth.success": _obj(
        {"userId": STRING, "projectId": NULLABLE_STRING, "runId": NULLABLE_STRING},
        ["userId", "projectId", "runId"],
    ),
    "auth.failed": _obj({"message": STRING}, ["message"]),
    "subscription.added": _SUBSCRIPTION_CHANGE,
    "subscription.removed": _SUBSCRIPTION_CHANGE,
    "status": _obj(
        {
            "clientId": STRING,
            "userId": NULLABLE_STRING,
            "projectId": NULLABLE_STRING,
            "runId": NULLABLE_STRING,
            "subscriptions": SUBSCRIPTIONS,
            "messageCount": {"type": "integer", "minimum": 0},
            "lastEventId": {"type": ["integer", "null"]},
        },
        ["clientId", "subscriptions", "messageCount"],
    ),
    "error": _obj(
        {
            "message": STRING,
            "details": {
                "type": "object",
                "properties": {"code": STRING},
                "required": ["code"],
            },
        },
        ["message", "details"],
    ),
    "resync.required": _obj(
        {"lastEventId": {"type": "integer"}, "oldestEventId": {"type": "integer"}},
        ["lastEventId", "oldestEventId"],
    ),
}


def _message_name(msg_type: str) -> str:
    return msg_type.replace(".", "_")


def _envelope(msg_type: str, payload: dict[str, Any], *, event: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "type": {"const": msg_type},
        "timestamp": {"type": "string", "pattern": TIMESTAMP_RE.pattern},
        "payload": payload,
    }
    required = ["type", "timestamp", "payload"]
    if event:
        properties["id"] = EVENT_ID
        required.insert(0, "id")
    return _obj(properties, required)


@cache
def payload_schemas() -> dict[str, Any]:
    """JSON Schema (2020-12) of every payload model, with shared definitions hoisted."""
    models = sorted(set(PAYLOAD_MODELS.values()), key=lambda m: m.__name__)
    refs, top = models_json_schema(
        [(model, "validation") for model in models], by_alias=True, ref_template=REF
    )
    definitions: dict[str, Any] = dict(top.get("$defs", {}))
    return {"refs": {m: refs[(m, "validation")] for m in models}, "definitions": definitions}


def event_json_schema(event_type: str) -> dict[str, Any]:
    """A standalone JSON Schema of one event envelope (definitions inlined under $defs)."""
    generated = payload_schemas()
    ref = generated["refs"][PAYLOAD_MODELS[event_type]]
    schema = _envelope(event_type, ref, event=True)
    text = _rewrite_refs(schema, "#/$defs/")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": event_type,
        **text,
        "$defs": _rewrite_refs(generated["definitions"], "#/$defs/"),
    }


def _rewrite_refs(node: Any, prefix: str) -> Any:
    if isinstance(node, dict):
        return {
            k: (
                prefix + v.rsplit("/", 1)[-1]
                if k == "$ref" and isinstance(v, str)
                else _rewrite_refs(v, prefix)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(item, prefix) for item in node]
    return node


@cache
def asyncapi_document() -> dict[str, Any]:
    generated = payload_schemas()
    messages: dict[str, Any] = {}
    for msg_type, payload in CLIENT_MESSAGES.items():
        messages[f"client_{_message_name(msg_type)}"] = {
            "name": msg_type,
            "title": f"Client → server: {msg_type}",
            "payload": _envelope(msg_type, payload, event=False) | {"required": ["type"]},
        }
    for msg_type, payload in SERVER_MESSAGES.items():
        messages[f"server_{_message_name(msg_type)}"] = {
            "name": msg_type,
            "title": f"Server → client: {msg_type}",
            "payload": _envelope(msg_type, payload, event=False),
        }
    category_of = {t: c for c, types in EVENT_CATEGORIES.items() for t in types}
    for event_type, model in PAYLOAD_MODELS.items():
        messages[f"event_{_message_name(event_type)}"] = {
            "name": event_type,
            "title": f"Event: {event_type}",
            "summary": f"Category {category_of[event_type]}",
            "payload": _envelope(event_type, generated["refs"][model], event=True),
        }
    channel_messages = {name: {"$ref": f"#/components/messages/{name}"} for name in messages}

    def op(action: str, prefix: str, title: str) -> dict[str, Any]:
        return {
            "action": action,
            "title": title,
            "channel": {"$ref": "#/channels/ws"},
            "messages": [
                {"$ref": f"#/channels/ws/messages/{name}"}
                for name in messages
                if name.startswith(prefix)
            ],
        }

    schemas = dict(generated["definitions"])
    for model, ref in generated["refs"].items():
        schemas.setdefault(model.__name__, ref)
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "ResearchFlow run events",
            "version": "1.0.0",
            "description": (
                "Real-time lifecycle events of research runs over a WebSocket at /ws. "
                "JSON text frames; every server message has type, timestamp and payload; "
                "events add id, their position in the event log, used to resume. "
                "Categories: "
                + "; ".join(f"{c}: {', '.join(t)}" for c, t in EVENT_CATEGORIES.items())
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {"host": "localhost:3001", "protocol": "ws", "pathname": "/ws"},
        },
        "channels": {
            "ws": {"address": "/ws", "title": "Run events socket", "messages": channel_messages}
        },
        "operations": {
            "receiveClientMessages": op("receive", "client_", "Messages the server accepts"),
            "sendControlMessages": op("send", "server_", "Replies and notices"),
            "sendEvents": op("send", "event_", "Run, stage, artifact and governance events"),
        },
        "components": {"messages": messages, "schemas": schemas},
    }
