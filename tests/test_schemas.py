"""The seed's unit test, for all twelve types: a valid example passes; each invalid field fails."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from events.schemas import (
    CATEGORY_OF,
    EVENT_CATEGORIES,
    EVENT_TYPES,
    InvalidEvent,
    is_valid_event,
    iso_timestamp,
    parse_event,
    validate_payload,
)

RUN = "run_" + "a" * 20
PRJ = "prj_" + "b" * 20
STG = "stg_" + "c" * 20
ART = "art_" + "d" * 20
GOV = "gov_" + "e" * 20
TS = "2026-01-28T20:30:00.000Z"
STAGE = {
    "runId": RUN,
    "projectId": PRJ,
    "stageId": STG,
    "stageName": "Data Ingestion",
    "stageIndex": 0,
}

# The seed's examples, with its ids replaced by ours.
VALID: dict[str, dict[str, Any]] = {
    "run.created": {
        "runId": RUN,
        "projectId": PRJ,
        "runName": "My Run",
        "stageCount": 5,
        "createdBy": "user-789",
        "createdAt": TS,
    },
    "run.started": {"runId": RUN, "projectId": PRJ, "startedAt": TS, "estimatedDuration": 300000},
    "run.completed": {
        "runId": RUN,
        "projectId": PRJ,
        "completedAt": "2026-01-28T20:35:00.000Z",
        "durationMs": 300000,
        "stagesCompleted": 3,
        "artifactsGenerated": 5,
    },
    "run.failed": {
        "runId": RUN,
        "projectId": PRJ,
        "failedAt": TS,
        "errorCode": "TIMEOUT",
        "failedStageId": STG,
    },
    "stage.started": {**STAGE, "startedAt": TS},
    "stage.progress": {
        **STAGE,
        "progress": 45,
        "statusMessage": "Processing 450 of 1000 rows",
        "itemsProcessed": 450,
        "itemsTotal": 1000,
    },
    "stage.completed": {**STAGE, "completedAt": TS, "durationMs": 1200},
    "stage.failed": {**STAGE, "failedAt": TS, "errorCode": "OUT_OF_MEMORY"},
    "artifact.created": {
        "runId": RUN,
        "projectId": PRJ,
        "artifactId": ART,
        "stageId": STG,
        "artifactKind": "table",
        "artifactName": "cohort_summary.csv",
        "sizeBytes": 2048,
        "contentType": "text/csv",
        "createdAt": TS,
    },
    "governance.required": {
        "runId": RUN,
        "projectId": PRJ,
        "governanceId": GOV,
        "governanceType": "PHI_SCAN",
        "priority": "HIGH",
        "assignedTo": ["admin@example.com"],
        "requestedAt": TS,
    },
    "approval.granted": {
        "runId": RUN,
        "projectId": PRJ,
        "governanceId": GOV,
        "governanceType": "PHI_SCAN",
        "decidedBy": "admin@example.com",
        "decidedAt": TS,
        "reasonCode": "DEIDENTIFIED",
    },
    "approval.denied": {
        "runId": RUN,
        "projectId": PRJ,
        "governanceId": GOV,
        "governanceType": "ETHICS_REVIEW",
        "decidedBy": "reviewer",
        "decidedAt": TS,
    },
}

# One bad value per field, for every field of every type.
BAD_VALUES: dict[str, list[Any]] = {
    "runId": ["run-123", "", 7, None, "run_" + "A" * 20],
    "projectId": ["proj-456", RUN],
    "stageId": ["stage-1", ART],
    "artifactId": ["a", 1],
    "governanceId": ["gov-789"],
    "failedStageId": ["stage-1"],
    "runName": ["", "x" * 121, "line\nbreak", 5],
    "stageName": ["", "x" * 121, "tab\there"],
    "statusMessage": ["x" * 201, "multi\nline"],
    "artifactName": ["", "x" * 201],
    "artifactKind": ["Table", "has space", ""],
    "contentType": ["csv", "text/", "TEXT/CSV"],
    "stageCount": [-1, "5", 1.5, True],
    "stageIndex": [-1, "0", 10_001],
    "progress": [-1, 101, "45", 45.5, True, None],
    "itemsProcessed": [-1, "450"],
    "itemsTotal": [-5],
    "sizeBytes": [-1, "2048"],
    "durationMs": [-1, "300000"],
    "estimatedDuration": [-1, "300000"],
    "stagesCompleted": [-1],
    "artifactsGenerated": [-1],
    "createdBy": ["has space", "", "x" * 151],
    "decidedBy": ["a b"],
    "assignedTo": ["admin@example.com", [""], ["a b"], ["u"] * 51],
    "errorCode": ["Exploded", "timeout", ""],
    "reasonCode": ["because"],
    "governanceType": ["PHI", "phi_scan"],
    "priority": ["URGENT", "high"],
    "createdAt": ["2026-01-28", "2026-01-28T20:30:00Z", "2026-01-28T20:30:00.000+00:00", 0],
    "startedAt": ["yesterday"],
    "completedAt": ["2026-01-28 20:35:00.000Z"],
    "failedAt": ["2026-13-28T20:30:00.00Z", "2026-13-28T20:30:00.000Z", "2026-02-30T20:30:00.000Z"],
    "decidedAt": [""],
    "requestedAt": [None],
}

CASES = [
    (event_type, field, bad)
    for event_type, payload in VALID.items()
    for field in payload
    for bad in BAD_VALUES[field]
]


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_it_accepts_the_seed_example(event_type: str) -> None:
    event = {"type": event_type, "timestamp": iso_timestamp(), "payload": VALID[event_type]}
    assert is_valid_event(event)
    assert is_valid_event({**event, "id": 12})


@pytest.mark.parametrize(("event_type", "field", "bad"), CASES)
def test_it_refuses_each_invalid_field(event_type: str, field: str, bad: Any) -> None:
    payload = copy.deepcopy(VALID[event_type])
    payload[field] = bad
    event = {"type": event_type, "timestamp": TS, "payload": payload}
    assert not is_valid_event(event)
    with pytest.raises(InvalidEvent) as caught:
        parse_event(event)
    assert any(error.startswith(f"payload.{field}") for error in caught.value.errors), (
        caught.value.errors
    )


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_it_refuses_unknown_fields(event_type: str) -> None:
    payload = {**VALID[event_type], "patientName": "John Doe"}
    with pytest.raises(InvalidEvent) as caught:
        validate_payload(event_type, payload)
    assert caught.value.errors == ["payload.patientName: Extra inputs are not permitted"]


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_it_refuses_missing_required_fields(event_type: str) -> None:
    for field in VALID[event_type]:
        payload = {k: v for k, v in VALID[event_type].items() if k != field}
        try:
            validate_payload(event_type, payload)
        except InvalidEvent as exc:
            assert exc.errors == [f"payload.{field}: Field required"]
        else:
            assert field in {
                "estimatedDuration",
                "failedStageId",
                "stageId",
                "statusMessage",
                "itemsProcessed",
                "itemsTotal",
                "reasonCode",
            }, f"{field} should be required"


def test_it_refuses_the_seeds_unsafe_example() -> None:
    unsafe = {
        "type": "run.completed",
        "timestamp": TS,
        "payload": {
            "runId": "run-123",
            "patientName": "John Doe",
            "mrn": "123-45-6789",
            "analysisResult": "Patient has elevated HbA1c at 8.2%...",
        },
    }
    with pytest.raises(InvalidEvent) as caught:
        parse_event(unsafe)
    text = str(caught.value)
    assert "payload.patientName" in text and "payload.mrn" in text
    assert "John Doe" not in text and "123-45-6789" not in text and "HbA1c" not in text


@pytest.mark.parametrize(
    "envelope",
    [
        None,
        [],
        {"type": "run.started", "payload": VALID["run.started"]},
        {"type": "run.exploded", "timestamp": TS, "payload": {}},
        {"type": "run.started", "timestamp": TS},
        {"type": "run.started", "timestamp": TS, "payload": VALID["run.started"], "id": 0},
        {"type": "run.started", "timestamp": TS, "payload": VALID["run.started"], "id": True},
        {"type": "run.started", "timestamp": TS, "payload": VALID["run.started"], "x": 1},
        {"type": "run.started", "timestamp": TS, "payload": "text"},
    ],
)
def test_it_refuses_bad_envelopes(envelope: Any) -> None:
    assert not is_valid_event(envelope)


def test_every_type_has_exactly_one_category() -> None:
    assert sorted(CATEGORY_OF) == sorted(EVENT_TYPES)
    assert sum(len(types) for types in EVENT_CATEGORIES.values()) == 12
    assert {t.split(".")[0] for t in EVENT_CATEGORIES["GOVERNANCE_EVENTS"]} == {
        "governance",
        "approval",
    }


def test_it_formats_timestamps_with_milliseconds_and_z() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    moment = datetime(2026, 1, 28, 21, 30, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert iso_timestamp(moment) == "2026-01-28T20:30:00.123Z"
    assert iso_timestamp(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00.000Z"
    with pytest.raises(ValueError):
        iso_timestamp(datetime(2026, 1, 1))
