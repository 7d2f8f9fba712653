"""Events as the client yields them: typed from the catalogue, and still delivered (as a
dict) when this client's catalogue does not know their type or shape."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from researchflow_client.catalogue import ErrorCode, StageFailed
from researchflow_client.events import MalformedFrame, parse_event

STAGE_FAILED = {
    "id": 42,
    "type": "stage.failed",
    "timestamp": "2026-01-28T20:30:00.000Z",
    "payload": {
        "runId": "run_" + "a" * 20,
        "projectId": "prj_" + "b" * 20,
        "stageId": "stg_" + "c" * 20,
        "stageName": "Model",
        "stageIndex": 1,
        "failedAt": "2026-01-28T20:29:59.500Z",
        "errorCode": "TIMEOUT",
    },
}


def test_it_types_a_known_event_with_the_catalogues_model() -> None:
    event = parse_event(STAGE_FAILED)
    assert isinstance(event.payload, StageFailed)
    assert event.payload.error_code is ErrorCode.TIMEOUT
    assert event.payload.failed_at == datetime(2026, 1, 28, 20, 29, 59, 500_000, tzinfo=UTC)
    assert event.timestamp == datetime(2026, 1, 28, 20, 30, tzinfo=UTC)
    assert (event.id, event.category, event.typed) == (42, "STAGE_EVENTS", True)
    assert event.to_dict() == STAGE_FAILED


def test_it_ignores_fields_a_newer_server_added() -> None:
    frame = {**STAGE_FAILED, "payload": {**STAGE_FAILED["payload"], "retryable": True}}
    assert parse_event(frame).typed


def test_an_unknown_event_type_is_delivered_with_a_dict_payload(
    caplog: pytest.LogCaptureFixture,
) -> None:
    frame = {**STAGE_FAILED, "type": "stage.paused", "payload": {"runId": "run_x"}}
    event = parse_event(frame)
    assert event.payload == {"runId": "run_x"}
    assert (event.typed, event.category) == (False, None)
    assert "stage.paused" in caplog.text and "unknown event type" in caplog.text


def test_a_payload_that_does_not_match_is_delivered_as_a_dict_without_logging_values(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    payload = {**STAGE_FAILED["payload"], "errorCode": "A_NEW_CODE", "stageName": "Secret name"}
    event = parse_event({**STAGE_FAILED, "payload": payload})
    assert event.payload == payload and not event.typed
    assert "errorCode" in caplog.text or "error_code" in caplog.text
    assert "A_NEW_CODE" not in caplog.text and "Secret name" not in caplog.text


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"id": "42"}, "id"),
        ({"id": 0}, "id"),
        ({"id": True}, "id"),
        ({"type": None}, "type"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"payload": []}, "payload"),
    ],
)
def test_a_broken_envelope_is_refused_naming_the_field(
    change: dict[str, object], field: str
) -> None:
    with pytest.raises(MalformedFrame, match=field):
        parse_event({**STAGE_FAILED, **change})
