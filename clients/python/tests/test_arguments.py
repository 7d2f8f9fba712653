"""What the client refuses before it connects: a URL it cannot use, a token in the URL, bad
arguments. Each error says what to do instead."""

from __future__ import annotations

import ssl

import pytest

from researchflow_client import InvalidURL, RunEvents


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://localhost:3001/ws", "ws:// or wss://"),
        ("localhost:3001/ws", "ws:// or wss://"),
        ("ws:///ws", "no host"),
        ("ws://localhost:99999/ws", "cannot parse"),
        ("ws://alice:pw@localhost/ws", "credentials do not belong in the URL"),
        ("ws://localhost/ws?token=abc", "a token does not belong in the URL"),
        ("", "no URL"),
    ],
)
def test_it_refuses_a_url_it_cannot_use(url: str, reason: str) -> None:
    with pytest.raises(InvalidURL, match=reason) as caught:
        RunEvents(url, token="t")
    assert "expected e.g. ws://host:3001/ws" in str(caught.value)


def test_an_ssl_context_needs_a_wss_url() -> None:
    with pytest.raises(InvalidURL, match="use wss://"):
        RunEvents("ws://localhost/ws", token="t", ssl=ssl.create_default_context())


def test_it_accepts_ws_and_wss_urls() -> None:
    assert RunEvents("ws://localhost:3001/ws", token="t").url == "ws://localhost:3001/ws"
    assert RunEvents("wss://events.example.org/ws", token="t").url.startswith("wss://")


def test_a_token_is_required() -> None:
    with pytest.raises(ValueError, match="token= is required"):
        RunEvents("ws://localhost/ws", token="")


def test_it_refuses_unknown_event_types_and_categories_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown event type: stage\.done \(known: run\.created"):
        RunEvents("ws://localhost/ws", token="t", event_types=["stage.done"])
    with pytest.raises(ValueError, match="unknown event category: STAGES"):
        RunEvents("ws://localhost/ws", token="t", event_categories=["STAGES"])


def test_it_subscribes_to_every_category_by_default() -> None:
    events = RunEvents("ws://localhost/ws", token="t")
    assert events.event_categories == [
        "RUN_EVENTS",
        "STAGE_EVENTS",
        "ARTIFACT_EVENTS",
        "GOVERNANCE_EVENTS",
    ]
    assert events.event_types is None


@pytest.mark.parametrize("cursor", [-1, True, "5", 1.0])
def test_it_refuses_a_cursor_that_is_not_a_non_negative_integer(cursor: object) -> None:
    with pytest.raises(ValueError, match="last_event_id must be an integer >= 0"):
        RunEvents("ws://localhost/ws", token="t", last_event_id=cursor)  # type: ignore[arg-type]


async def test_iterating_without_entering_says_how_to_use_it() -> None:
    events = RunEvents("ws://localhost/ws", token="t")
    with pytest.raises(RuntimeError, match="async with RunEvents"):
        await events.__anext__()
