"""The machine-readable catalogue: JSON Schema per event type and an AsyncAPI 3.0 document of the
`/ws` protocol, generated from the models that validate: the event payload models
(`events/schemas.py`) and the socket protocol's message models (`events/protocol.py`).

Served at `/api/asyncapi.json`; `tests/test_catalogue.py` checks it against the models and the
consumer's message handlers.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .limits import MAX_FRAME_BYTES
from .protocol import CLIENT_MESSAGES, PROTOCOL_VERSION, SERVER_MESSAGES
from .schemas import CATEGORY_OF, EVENT_CATEGORIES, PAYLOAD_MODELS, TIMESTAMP_RE

REF = "#/components/schemas/{model}"
EVENT_ID = {"type": "integer", "minimum": 1, "description": "Position in the event log"}


def _models() -> list[type[BaseModel]]:
    models: set[type[BaseModel]] = {*PAYLOAD_MODELS.values(), *SERVER_MESSAGES.values()}
    models |= {message.payload for message in CLIENT_MESSAGES.values()}
    return sorted(models, key=lambda m: m.__name__)


def _message_name(msg_type: str) -> str:
    return msg_type.replace(".", "_")


def _client_envelope(msg_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    """`{type, payload?}` (events.protocol.envelope: a missing or null payload is `{}`)."""
    return {
        "type": "object",
        "properties": {"type": {"const": msg_type}, "payload": payload},
        "required": ["type"],
        "additionalProperties": False,
    }


def _envelope(msg_type: str, payload: dict[str, Any], *, event: bool) -> dict[str, Any]:
    """A server message: `{type, timestamp, payload}`, and `id` for an event."""
    properties: dict[str, Any] = {
        "type": {"const": msg_type},
        "timestamp": {"type": "string", "pattern": TIMESTAMP_RE.pattern},
        "payload": payload,
    }
    required = ["type", "timestamp", "payload"]
    if event:
        properties["id"] = EVENT_ID
        required.insert(0, "id")
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


@cache
def payload_schemas() -> dict[str, Any]:
    """JSON Schema (2020-12) of every payload model (events and protocol messages), with
    shared definitions hoisted."""
    models = _models()
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
    refs = generated["refs"]
    for msg_type, message in CLIENT_MESSAGES.items():
        messages[f"client_{_message_name(msg_type)}"] = {
            "name": msg_type,
            "title": f"Client → server: {msg_type}",
            "summary": f"Answer: {message.answer.replace('`', '')}",
            "payload": _client_envelope(msg_type, refs[message.payload]),
        }
    for msg_type, reply in SERVER_MESSAGES.items():
        messages[f"server_{_message_name(msg_type)}"] = {
            "name": msg_type,
            "title": f"Server → client: {msg_type}",
            "payload": _envelope(msg_type, refs[reply], event=False),
        }
    for event_type, model in PAYLOAD_MODELS.items():
        messages[f"event_{_message_name(event_type)}"] = {
            "name": event_type,
            "title": f"Event: {event_type}",
            "summary": f"Category {CATEGORY_OF[event_type]}",
            "payload": _envelope(event_type, refs[model], event=True),
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
            "version": f"{PROTOCOL_VERSION}.0",
            "description": (
                "Real-time lifecycle events of research runs over a WebSocket at /ws. "
                f"JSON text frames of at most {MAX_FRAME_BYTES} bytes (a larger one closes "
                "the socket with 1009); every server message has type, timestamp and payload; "
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
