"""The socket protocol's message models (events/protocol.py): what they accept and refuse, how a
refusal reads, and that the frames the consumer really sends are the messages they describe."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel, ValidationError

from devtools import protocol_doc
from events.asyncapi import asyncapi_document
from events.limits import MAX_EVENT_ID, MAX_LIST_ITEMS
from events.protocol import (
    CLIENT_MESSAGES,
    ERROR_CODES,
    SERVER_MESSAGES,
    ProtocolError,
    client_payload,
    envelope,
)
from events.schemas import EVENT_CATEGORIES, EVENT_TYPES, parse_event
from runs import services
from tests.ws_helpers import db, open_socket, request, send, token_for

ROOT = Path(__file__).resolve().parent.parent


def _refusal(msg_type: str, payload: dict[str, Any]) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        client_payload(msg_type, payload)
    return caught.value


@pytest.mark.parametrize("value", [1.0, 1e19, True, "5", [5], {"a": 5}])
def test_it_takes_event_ids_only_as_json_integers(value: Any) -> None:
    error = _refusal("resume", {"lastEventId": value})
    assert error.code == "invalid_message"
    assert error.details == {"field": "resume.lastEventId"}
    assert "(got " in str(error)


@pytest.mark.parametrize("value", [0, 1, MAX_EVENT_ID])
def test_it_accepts_event_ids_in_range(value: int) -> None:
    assert client_payload("resume", {"lastEventId": value}).last_event_id == value


def test_it_treats_null_and_absent_alike_in_auth() -> None:
    payload = client_payload("auth", {"token": None, "eventTypes": None, "lastEventId": None})
    assert payload == client_payload("auth", {})
    assert payload.subscriptions() is None


def test_it_merges_the_subscription_lists_of_auth() -> None:
    payload = client_payload(
        "auth", {"eventTypes": ["run.created", "run.created"], "eventCategories": ["RUN_EVENTS"]}
    )
    assert payload.subscriptions() == {"run.created", "RUN_EVENTS"}


def test_it_hands_out_the_catalogues_own_name_strings() -> None:
    # A name parsed from a frame is a new string; a socket must keep the shared one.
    parsed = "".join(["run.", "created"])
    key, name = client_payload("subscribe", {"eventType": parsed}).target()
    assert (key, name) == ("eventType", "run.created")
    assert name is EVENT_TYPES[0]


@pytest.mark.parametrize(
    ("msg_type", "field"),
    [
        (msg_type, str(info.alias))
        for msg_type, message in CLIENT_MESSAGES.items()
        for info in message.payload.model_fields.values()
    ],
)
def test_it_names_every_client_field_when_refusing_its_value(msg_type: str, field: str) -> None:
    # An object is wrong for every field; the refusal must come from a deliberate rule (one
    # that names the field), not from the fallback.
    error = _refusal(msg_type, {field: {"x": "y"}})
    if error.code == "invalid_message":
        assert f"{msg_type}.{field}" in str(error) or str(error).startswith("give exactly one")
        assert "is not valid" not in str(error)
    else:
        assert error.code in {"unknown_event_type", "unknown_category"}
        assert error.details["allowed"]


@pytest.mark.parametrize(
    ("msg_type", "payload", "code", "message"),
    [
        ("auth", {"token": 5, "x": 1}, "invalid_message", "unknown payload fields; allowed: "),
        (
            "subscribe",
            {"eventType": "x", "eventCategory": "y"},
            "invalid_message",
            "give exactly one of eventType or eventCategory",
        ),
        ("auth", {"lastEventId": 1.0, "token": 5}, "invalid_message", "auth.token must be"),
        (
            "auth",
            {"eventCategories": "y", "eventTypes": ["x"]},
            "unknown_event_type",
            "auth.eventTypes: unknown name",
        ),
        ("auth", {"eventTypes": ["x"] * 65}, "invalid_message", "auth.eventTypes: at most 64"),
    ],
)
def test_it_reports_the_first_broken_rule_in_the_documented_order(
    msg_type: str, payload: dict[str, Any], code: str, message: str
) -> None:
    # Unknown fields, then the payload's own rule, then fields in the order they are listed.
    error = _refusal(msg_type, payload)
    assert (error.code, str(error)[: len(message)]) == (code, message)


def test_it_never_echoes_a_value_the_client_sent() -> None:
    secret = "John Smith MRN 1234567"
    cases: list[tuple[str, dict[str, Any]]] = [
        ("auth", {"token": 5, "userId": [secret]}),
        ("auth", {"eventTypes": [secret]}),
        ("auth", {"eventCategories": [secret] * (MAX_LIST_ITEMS + 1)}),
        ("auth", {"lastEventId": secret}),
        ("subscribe", {"eventType": secret}),
        ("subscribe", {"eventCategory": secret}),
        ("subscribe", {"eventType": secret, "eventCategory": secret}),
        ("resume", {"lastEventId": [secret]}),
    ]
    for msg_type, payload in cases:
        error = _refusal(msg_type, payload)
        assert "Smith" not in repr((str(error), error.details)), (msg_type, payload)


def test_it_cuts_unknown_field_names_to_40_characters_and_10_names() -> None:
    names = {f"{i:02d}" + "x" * 100: 1 for i in range(12)}
    error = _refusal("ping", names)
    assert error.details["fields"] == [f"{i:02d}" + "x" * 38 for i in range(10)]
    assert str(error) == "unknown payload fields"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ([], "a message must be a JSON object"),
        ({"type": 7}, "a message needs a string 'type'"),
        ({"type": "ping", "id": 1}, "unknown top-level fields"),
        ({"type": "ping", "payload": "x"}, "'payload' must be an object"),
    ],
)
def test_it_refuses_a_malformed_envelope(content: Any, message: str) -> None:
    with pytest.raises(ProtocolError, match=re.escape(message)) as caught:
        envelope(content)
    assert caught.value.code == "invalid_message"


def test_it_reads_a_missing_or_null_payload_as_empty() -> None:
    assert envelope({"type": "ping"}) == ("ping", {})
    assert envelope({"type": "ping", "payload": None}) == ("ping", {})


MODELS: set[type[BaseModel]] = {m.payload for m in CLIENT_MESSAGES.values()}
MODELS |= set(SERVER_MESSAGES.values())


@pytest.mark.parametrize("model", sorted(MODELS, key=repr))
def test_every_message_model_forbids_unknown_fields(model: type[BaseModel]) -> None:
    assert model.model_config.get("extra") == "forbid"


# The JSON Schema in the AsyncAPI document and the models agree on what a client may send
# (floats aside: JSON Schema's "integer" admits 1.0, which the models refuse).
SAMPLES: dict[str, list[dict[str, Any]]] = {
    "ping": [{}, {"x": 1}],
    "get_status": [{}, {"x": None}],
    "subscribe": [
        {"eventType": "run.created"},
        {"eventCategory": "RUN_EVENTS"},
        {},
        {"eventType": "run.created", "eventCategory": "RUN_EVENTS"},
        {"eventType": "nope"},
        {"eventType": None},
        {"eventCategory": "run.created"},
        {"eventType": "run.created", "x": 1},
    ],
    "resume": [
        {"lastEventId": 0},
        {"lastEventId": MAX_EVENT_ID},
        {"lastEventId": MAX_EVENT_ID + 1},
        {"lastEventId": -1},
        {"lastEventId": "1"},
        {"lastEventId": True},
        {},
        {"lastEventId": None},
    ],
    "auth": [
        {},
        {"token": "t", "userId": "u", "projectId": "p", "runId": "r", "lastEventId": 3},
        {"token": 5},
        {"token": None, "runId": None},
        {"eventTypes": list(EVENT_TYPES), "eventCategories": list(EVENT_CATEGORIES)},
        {"eventTypes": ["run.created"] * MAX_LIST_ITEMS},
        {"eventTypes": ["run.created"] * (MAX_LIST_ITEMS + 1)},
        {"eventTypes": "run.created"},
        {"eventCategories": ["run.created"]},
        {"lastEventId": -5},
        {"password": "x"},
    ],
}
SAMPLES["unsubscribe"] = SAMPLES["subscribe"]


@pytest.mark.parametrize("msg_type", CLIENT_MESSAGES)
def test_the_asyncapi_schema_accepts_what_the_models_accept(msg_type: str) -> None:
    doc = asyncapi_document()
    name = "client_" + msg_type
    schema = {
        **doc["components"]["messages"][name]["payload"],
        "$defs": doc["components"]["schemas"],
    }
    schema = _local_refs(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for payload in SAMPLES[msg_type]:
        try:
            client_payload(msg_type, payload)
            accepted = True
        except ProtocolError:
            accepted = False
        assert validator.is_valid({"type": msg_type, "payload": payload}) == accepted, payload


def _local_refs(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: (
                "#/$defs/" + v.rsplit("/", 1)[-1]
                if k == "$ref" and isinstance(v, str)
                else _local_refs(v)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_local_refs(v) for v in node]
    return node


def test_every_error_code_the_server_sends_is_listed() -> None:
    sources = [ROOT / "events/gateway/consumer.py", ROOT / "events/protocol.py"]
    used: set[str] = set()
    for path in sources:
        text = path.read_text()
        used |= set(re.findall(r'(?:ProtocolError|_error)\(\s*"(\w+)"', text))
    assert used, "no error codes found: the pattern no longer matches the sources"
    assert used <= set(ERROR_CODES)


# --- the frames the consumer sends are the messages the models describe -----------------------


def _check_server_frame(frame: dict[str, Any]) -> None:
    """The frame validates against its model and against the AsyncAPI document's schema."""
    doc = asyncapi_document()
    if "id" in frame:
        parse_event(frame)
        name = "event_" + frame["type"].replace(".", "_")
    else:
        model = SERVER_MESSAGES[frame["type"]]
        try:
            model.model_validate(frame["payload"], by_alias=True)
        except ValidationError as exc:  # pragma: no cover - the assertion's message
            raise AssertionError(f"{frame['type']}: {exc}") from None
        name = "server_" + frame["type"].replace(".", "_")
    schema = {
        **doc["components"]["messages"][name]["payload"],
        "$defs": doc["components"]["schemas"],
    }
    jsonschema.Draft202012Validator(_local_refs(schema)).validate(frame)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("hubs_stopped")
async def test_every_frame_of_a_session_matches_its_model(world: Any, settings: Any) -> None:
    settings.WS_RESUME_MAX_EVENTS = 1
    await db(services.create_run)(world.project, "Earlier", ["A"], world.alice)
    await db(services.create_run)(world.project, "Earlier too", ["A"], world.alice)
    comm, hello = await open_socket()
    frames = [hello]
    frames.append(await request(comm, "ping"))
    frames.append(await request(comm, "auth", token="wrong"))
    frames.append(await request(comm, "subscribe", eventCategory="NOPE"))
    frames.append(await request(comm, "resume", lastEventId=0))
    token = await db(token_for)(world.alice)
    frames.append(await request(comm, "auth", token=token, eventCategories=["RUN_EVENTS"]))
    frames.append(await request(comm, "subscribe", eventType="stage.started"))
    frames.append(await request(comm, "unsubscribe", eventType="stage.started"))
    await send(comm, "resume", lastEventId=0)  # more than WS_RESUME_MAX_EVENTS missed
    frames.append(await comm.receive_json_from(timeout=5))
    await db(services.create_run)(world.project, "Live", ["A"], world.alice)
    frames.append(await comm.receive_json_from(timeout=5))
    frames.append(await request(comm, "get_status"))
    await comm.disconnect()

    assert [f["type"] for f in frames] == [
        "connection.established",
        "pong",
        "auth.failed",
        "error",
        "error",
        "auth.success",
        "subscription.added",
        "subscription.removed",
        "resync.required",
        "run.created",
        "status",
    ]
    for frame in frames:
        _check_server_frame(frame)


def test_the_committed_protocol_doc_is_generated_from_the_models() -> None:
    current = protocol_doc.DOC.read_text()
    assert protocol_doc.render(current) == current, "run: python -m devtools.protocol_doc"


def test_the_doc_generator_refuses_a_doc_without_its_sections() -> None:
    with pytest.raises(ValueError, match="sections"):
        protocol_doc.render("# protocol\n")


@pytest.mark.parametrize(
    ("msg_type", "payload"),
    [
        ("auth", {"lastEventId": 1.0}),
        ("auth", {"eventTypes": ["run.created"] * (MAX_LIST_ITEMS + 1)}),
        ("auth", {"eventTypes": "run.created"}),
        ("auth", {"projectId": 5}),
    ],
)
def test_the_docs_limits_table_quotes_the_real_refusals(
    msg_type: str, payload: dict[str, Any]
) -> None:
    # The limits table in docs/protocol.md is prose with examples: each must be what is sent.
    assert f"`{_refusal(msg_type, payload)}`" in protocol_doc.DOC.read_text()
