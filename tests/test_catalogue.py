"""The AsyncAPI document and JSON Schemas stay in sync with the models and the consumer."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from events.asyncapi import asyncapi_document, event_json_schema
from events.gateway.consumer import _HANDLERS
from events.protocol import CLIENT_MESSAGES, SERVER_MESSAGES
from events.schemas import EVENT_CATEGORIES, EVENT_TYPES, PAYLOAD_MODELS
from tests.test_schemas import VALID

ROOT = Path(__file__).resolve().parent.parent


def test_it_describes_every_client_message_the_consumer_handles() -> None:
    assert set(CLIENT_MESSAGES) == set(_HANDLERS)


def test_it_describes_every_event_type_with_the_models_schema() -> None:
    doc = asyncapi_document()
    messages = doc["components"]["messages"]
    for event_type, model in PAYLOAD_MODELS.items():
        message = messages["event_" + event_type.replace(".", "_")]
        assert message["name"] == event_type
        ref = message["payload"]["properties"]["payload"]["$ref"]
        schema = doc["components"]["schemas"][ref.rsplit("/", 1)[-1]]
        own = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
        # Shared definitions (the enums) are hoisted to components; the rest is identical.
        assert schema == {k: v for k, v in own.items() if k != "$defs"}
        for name, definition in own.get("$defs", {}).items():
            assert doc["components"]["schemas"][name] == definition


def test_it_is_an_asyncapi_3_document_whose_references_resolve() -> None:
    doc = asyncapi_document()
    assert doc["asyncapi"] == "3.0.0"
    assert doc["channels"]["ws"]["address"] == "/ws"

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return found + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(doc):
        assert ref.startswith("#/")
        target: Any = doc
        for part in ref[2:].split("/"):
            target = target[part]
        assert target is not None
    names = {m["name"] for m in doc["components"]["messages"].values()}
    assert names >= set(EVENT_TYPES) | set(SERVER_MESSAGES) | set(CLIENT_MESSAGES)


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_the_json_schema_accepts_valid_events_and_refuses_invalid_ones(event_type: str) -> None:
    schema = event_json_schema(event_type)
    validator = jsonschema.Draft202012Validator(schema)
    event = {"id": 1, "type": event_type, "timestamp": "2026-01-28T20:30:00.000Z"}
    validator.validate({**event, "payload": VALID[event_type]})
    assert not validator.is_valid({**event, "payload": {**VALID[event_type], "mrn": "123"}})
    assert not validator.is_valid({**event, "type": "run.exploded", "payload": VALID[event_type]})


@pytest.mark.django_db
def test_it_is_served_at_api_asyncapi_json(client: Any) -> None:
    response = client.get("/api/asyncapi.json")
    assert response.status_code == 200
    assert response.json() == asyncapi_document()


def test_the_js_client_lists_the_catalogues_event_types_and_categories() -> None:
    # The client's own module, evaluated by node (the JS tests need it too): its exported
    # EVENT_CATEGORIES and EVENT_TYPES must be the catalogue, in the catalogue's order.
    node = shutil.which("node")
    assert node, "node is needed to read the JS client's catalogue (scripts/bootstrap.sh)"
    script = (
        f"import('{(ROOT / 'static/researchflow/run-events.js').as_uri()}').then((m) => "
        "process.stdout.write(JSON.stringify("
        "{categories: m.EVENT_CATEGORIES, types: m.EVENT_TYPES})))"
    )
    out = subprocess.run(
        [node, "--input-type=module", "-e", script],
        capture_output=True,
        check=True,
        text=True,
        timeout=30,
    ).stdout
    client = json.loads(out)
    assert client["categories"] == {c: list(types) for c, types in EVENT_CATEGORIES.items()}
    assert client["types"] == list(EVENT_TYPES)
