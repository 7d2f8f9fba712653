"""What a client may put in a socket path and in its messages' fields: unknown paths get a plain
refusal; integer fields are JSON integers in range; list limits are named."""

from __future__ import annotations

from typing import Any

import pytest
from channels.testing import WebsocketCommunicator

from events.asyncapi import asyncapi_document
from events.limits import MAX_EVENT_ID, MAX_LIST_ITEMS
from researchflow.asgi import application
from tests.ws_helpers import authed_socket, open_socket, request

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hubs_stopped")]

TYPES = ["run.created", "run.started", "run.completed", "run.failed"]


@pytest.mark.parametrize(
    "path", ["/ws/John%20Smith%20SSN%20123-45-6789", "/ws/", "/wss", "/", "/api/runs/"]
)
async def test_it_refuses_an_unknown_socket_path_without_an_exception(path: str) -> None:
    comm = WebsocketCommunicator(application, path, headers=[(b"origin", b"http://localhost")])
    connected, code = await comm.connect(timeout=5)
    assert connected is False
    assert code == 1008
    await comm.wait(timeout=5)  # the application returned: no exception was raised


@pytest.mark.parametrize("value", [1.0, 1e19, 1e300, 0.5, True, False, "5", [1], {"a": 1}])
async def test_it_refuses_a_last_event_id_that_is_not_a_json_integer(value: Any) -> None:
    comm, _ = await open_socket()
    reply = await request(comm, "auth", lastEventId=value)
    assert reply["type"] == "error"
    assert reply["payload"]["details"] == {"code": "invalid_message", "field": "auth.lastEventId"}
    assert reply["payload"]["message"].startswith(
        f"auth.lastEventId must be an integer between 0 and {MAX_EVENT_ID} (got "
    )
    await comm.disconnect()


@pytest.mark.parametrize("value", [-1, MAX_EVENT_ID + 1, 2**64 - 1])
async def test_it_refuses_a_last_event_id_out_of_range(value: int) -> None:
    comm, _ = await open_socket()
    reply = await request(comm, "auth", lastEventId=value)
    assert reply["payload"]["message"] == (
        f"auth.lastEventId must be an integer between 0 and {MAX_EVENT_ID}"
    )
    await comm.disconnect()


@pytest.mark.parametrize("value", [1.0, 1e19, True, "3", -1, MAX_EVENT_ID + 1])
async def test_resume_applies_the_same_rule(world: Any, value: Any) -> None:
    comm = await authed_socket(world.alice)
    reply = await request(comm, "resume", lastEventId=value)
    assert reply["type"] == "error"
    assert reply["payload"]["details"]["field"] == "resume.lastEventId"
    assert "must be an integer between 0 and" in reply["payload"]["message"]
    await comm.disconnect()


async def test_it_accepts_the_largest_event_id(world: Any) -> None:
    comm = await authed_socket(world.alice, types=TYPES, lastEventId=MAX_EVENT_ID)
    await comm.disconnect()


@pytest.mark.parametrize("field", ["eventTypes", "eventCategories"])
async def test_it_names_the_list_limit(field: str) -> None:
    comm, _ = await open_socket()
    reply = await request(comm, "auth", **{field: ["run.created"] * (MAX_LIST_ITEMS + 1)})
    assert reply["type"] == "error"
    assert reply["payload"]["message"] == f"auth.{field}: at most {MAX_LIST_ITEMS} items"
    assert reply["payload"]["details"]["maxItems"] == MAX_LIST_ITEMS
    await comm.disconnect()


async def test_it_says_a_list_field_must_be_a_list() -> None:
    comm, _ = await open_socket()
    reply = await request(comm, "auth", eventTypes="run.created")
    assert reply["payload"]["message"] == "auth.eventTypes must be a list of names"
    await comm.disconnect()


def test_the_asyncapi_schema_states_the_same_limits() -> None:
    schemas = asyncapi_document()["components"]["schemas"]
    auth = schemas["Auth"]["properties"]
    integer, _null = auth["lastEventId"]["anyOf"]
    for schema in (integer, schemas["Resume"]["properties"]["lastEventId"]):
        assert schema["type"] == "integer"
        assert (schema["minimum"], schema["maximum"]) == (0, MAX_EVENT_ID)
    for field in ("eventTypes", "eventCategories"):
        array, _null = auth[field]["anyOf"]
        assert array["maxItems"] == MAX_LIST_ITEMS
