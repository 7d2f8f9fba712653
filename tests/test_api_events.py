"""The event history API, socket tokens and socket stats."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from events.gateway import credentials, views
from events.models import Event
from events.schemas import TIMESTAMP_RE
from runs import services
from runs.api import event_log
from runs.models import Run

pytestmark = pytest.mark.django_db


def lifecycle(world: Any, project: Any = None, user: Any = None) -> Run:
    """run.created, run.started, stage.started, stage.progress: four events."""
    run = services.create_run(project or world.project, "Cohort A", ["Ingest"], user or world.alice)
    services.start_run(run.pk)
    stage = run.stages.get()
    services.start_stage(stage.pk)
    services.report_progress(stage.pk, 10)
    return run


def ids(body: dict[str, Any]) -> list[int]:
    return [event["id"] for event in body["results"]]


def get(client: APIClient, query: str = "") -> Any:
    return client.get(f"/api/events/{'?' + query if query else ''}")


# --- history -------------------------------------------------------------------------------


def test_it_lists_the_events_of_the_users_projects_in_id_order(world: Any) -> None:
    mine = lifecycle(world)
    lifecycle(world, world.other_project, world.charlie)
    body = get(world.client(world.victor)).json()
    expected = list(
        Event.objects.filter(run_id=mine.pk).order_by("position").values_list("position", flat=True)
    )
    assert ids(body) == expected
    assert [e["type"] for e in body["results"]] == [
        "run.created",
        "run.started",
        "stage.started",
        "stage.progress",
    ]


def test_it_lists_every_event_for_staff(world: Any) -> None:
    lifecycle(world)
    lifecycle(world, world.other_project, world.charlie)
    assert len(get(world.client(world.sam)).json()["results"]) == 8


def test_it_returns_envelopes_like_the_websocket(world: Any) -> None:
    run = lifecycle(world)
    [event] = get(world.client(world.alice), "type=run.created").json()["results"]
    assert set(event) == {"id", "type", "timestamp", "payload"}
    assert TIMESTAMP_RE.match(event["timestamp"])
    assert event["payload"]["runId"] == run.pk and event["payload"]["runName"] == "Cohort A"


def test_it_needs_authentication_for_events(world: Any) -> None:
    assert get(APIClient()).status_code == 401


def test_it_filters_by_run(world: Any) -> None:
    first = lifecycle(world)
    lifecycle(world)
    body = get(world.client(world.alice), f"run={first.pk}").json()
    assert {e["payload"]["runId"] for e in body["results"]} == {first.pk}
    assert len(body["results"]) == 4


def test_it_filters_by_project(world: Any) -> None:
    lifecycle(world)
    theirs = lifecycle(world, world.other_project, world.charlie)
    body = get(world.client(world.sam), f"project={world.other_project.pk}").json()
    assert {e["payload"]["runId"] for e in body["results"]} == {theirs.pk}


def test_it_shows_nothing_for_a_project_filter_the_user_cannot_see(world: Any) -> None:
    lifecycle(world, world.other_project, world.charlie)
    body = get(world.client(world.alice), f"project={world.other_project.pk}").json()
    assert body["results"] == [] and body["lastEventId"] == 0


def test_it_filters_by_type(world: Any) -> None:
    lifecycle(world)
    body = get(world.client(world.alice), "type=stage.progress").json()
    assert [e["type"] for e in body["results"]] == ["stage.progress"]


def test_it_filters_by_category(world: Any) -> None:
    lifecycle(world)
    body = get(world.client(world.alice), "category=STAGE_EVENTS").json()
    assert [e["type"] for e in body["results"]] == ["stage.started", "stage.progress"]


def test_it_pages_with_an_after_cursor(world: Any) -> None:
    lifecycle(world)
    lifecycle(world)
    client = world.client(world.alice)
    seen: list[int] = []
    url: str | None = "/api/events/?limit=3"
    while url:
        body = client.get(url).json()
        assert len(body["results"]) <= 3
        seen += ids(body)
        url = body["next"]
    assert seen == list(Event.objects.order_by("position").values_list("position", flat=True))


def test_it_starts_after_the_given_id(world: Any) -> None:
    lifecycle(world)
    all_ids = list(Event.objects.order_by("position").values_list("position", flat=True))
    body = get(world.client(world.alice), f"after={all_ids[1]}").json()
    assert ids(body) == all_ids[2:] and body["next"] is None


def test_it_keeps_other_filters_in_the_next_link(world: Any) -> None:
    lifecycle(world)
    lifecycle(world)
    body = get(world.client(world.alice), "category=RUN_EVENTS&limit=1").json()
    assert "category=RUN_EVENTS" in body["next"] and "after=" in body["next"]


def test_it_reports_the_newest_visible_event_id_whatever_the_filters(world: Any) -> None:
    lifecycle(world)
    lifecycle(world, world.other_project, world.charlie)
    mine = Event.objects.filter(project_id=world.project.pk).order_by("-position").first()
    assert mine is not None
    body = get(world.client(world.bob), "type=run.created&limit=1").json()
    assert body["lastEventId"] == mine.position


@pytest.mark.parametrize(
    "query",
    [
        "after=-1",
        "after=abc",
        "after=1.5",
        "after=" + "9" * 40,
        "limit=0",
        "limit=1001",
        "limit=x",
        "type=run.exploded",
        "category=ALL",
        "project=nonsense",
        "project=%00",
        "run=prj_00000000000000000000",
    ],
)
def test_it_refuses_bad_query_parameters(world: Any, query: str) -> None:
    response = get(world.client(world.alice), query)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid" and len(body["errors"]) == 1


def test_it_allows_a_limit_of_1000(world: Any) -> None:
    assert get(world.client(world.alice), "limit=1000").status_code == 200


def test_a_large_page_carries_each_stored_payload_whole(world: Any) -> None:
    # Large enough that the body passes event_log.TRIM_AFTER_BYTES (its memory is trimmed
    # once the response is closed, which the test client does before we read it).
    run = services.create_run(world.project, "Big", ["Ingest"], world.alice)
    services.start_run(run.pk)
    stage = run.stages.get()
    services.start_stage(stage.pk)
    for progress in range(1, 101):  # ~500 bytes each
        services.report_progress(stage.pk, progress, status_message="é" * 200)
    response = get(world.client(world.alice), "limit=1000")
    assert len(response.content) >= event_log.TRIM_AFTER_BYTES
    body = json.loads(response.content)
    stored = {e.position: e.payload for e in Event.objects.filter(position__isnull=False)}
    assert {e["id"]: e["payload"] for e in body["results"]} == stored


# --- socket tokens -------------------------------------------------------------------------


def test_it_issues_a_socket_token_for_the_user(world: Any, settings: Any) -> None:
    response = world.client(world.bob).post("/api/ws/token/")
    assert response.status_code == 200
    body = response.json()
    assert body["expiresIn"] == settings.WS_SOCKET_TOKEN_MAX_AGE
    credential = credentials.resolve_token(body["token"])
    assert credential is not None and credential.user == world.bob


def test_it_needs_authentication_for_socket_tokens(world: Any) -> None:
    assert APIClient().post("/api/ws/token/").status_code == 401


def test_it_issues_socket_tokens_by_post_only(world: Any) -> None:
    assert world.client(world.bob).get("/api/ws/token/").status_code == 405


# --- socket stats --------------------------------------------------------------------------


def test_it_shows_local_socket_stats_to_staff(world: Any) -> None:
    body = world.client(world.sam).get("/api/ws/stats/").json()
    assert body["cluster"] is None
    assert set(body["local"]) >= {"connections", "subscriptions", "messages"}


@pytest.mark.parametrize(("persona", "status"), [("alice", 403), ("charlie", 403), (None, 401)])
def test_it_shows_socket_stats_to_staff_only(world: Any, persona: str | None, status: int) -> None:
    client = world.client(getattr(world, persona) if persona else None)
    assert client.get("/api/ws/stats/").status_code == status


def _stats(total: int, sent: int, by_type: dict[str, int]) -> bytes:
    return json.dumps(
        {
            "connections": {"total": total, "authenticated": total},
            "subscriptions": {"byType": by_type, "byCategory": {"RUN_EVENTS": 1}},
            "messages": {"sent": sent, "coalesced": 0, "dropped": 0},
        }
    ).encode()


class FakeRedis:
    def __init__(self, hashes: dict[bytes, Any]) -> None:
        self.hashes = hashes
        self.closed = False

    def scan_iter(self, match: str, count: int) -> list[bytes]:
        assert match == "researchflow:wsstats:*"
        return list(self.hashes)

    def hget(self, key: bytes, field: str) -> Any:
        value = self.hashes[key]
        if isinstance(value, Exception):
            raise value
        return value.get(field)

    def close(self) -> None:
        self.closed = True


@override_settings(REDIS_URL="redis://127.0.0.1:1/0")
def test_it_sums_socket_stats_over_processes_and_skips_bad_entries(
    world: Any, monkeypatch: Any
) -> None:
    fake = FakeRedis(
        {
            b"researchflow:wsstats:a": {"stats": _stats(3, 10, {"run.created": 2})},
            b"researchflow:wsstats:b": {"stats": _stats(4, 5, {"run.created": 1, "x.y": 1})},
            b"researchflow:wsstats:c": {"stats": b"{not json"},
            b"researchflow:wsstats:d": {"stats": b'{"connections": {"total": "3"}}'},
            b"researchflow:wsstats:e": {"other": b"{}"},
            b"researchflow:wsstats:f": RuntimeError("WRONGTYPE"),
            b"researchflow:wsstats:g": {
                "stats": _stats(1, 1, {}).replace(b'"sent": 1', b'"sent": true')
            },
        }
    )
    monkeypatch.setattr(views, "_redis_client", lambda: fake)
    body = world.client(world.sam).get("/api/ws/stats/").json()
    cluster = body["cluster"]
    assert cluster["processes"] == 2 and cluster["skipped"] == 5
    assert cluster["connections"] == {"total": 7, "authenticated": 7}
    assert cluster["messages"]["sent"] == 15
    assert cluster["subscriptions"]["byType"] == {"run.created": 3, "x.y": 1}
    assert fake.closed


@override_settings(REDIS_URL="redis://127.0.0.1:1/0")
def test_it_sums_events_discarded_over_processes_and_accepts_stats_without_them(
    world: Any, monkeypatch: Any
) -> None:
    with_events = json.loads(_stats(1, 1, {}))
    with_events["events"] = {"received": 7, "discarded": 3}
    fake = FakeRedis(
        {
            b"researchflow:wsstats:a": {"stats": json.dumps(with_events).encode()},
            b"researchflow:wsstats:b": {"stats": _stats(1, 1, {})},
        }
    )
    monkeypatch.setattr(views, "_redis_client", lambda: fake)
    cluster = world.client(world.sam).get("/api/ws/stats/").json()["cluster"]
    assert cluster["processes"] == 2
    assert cluster["events"] == {"received": 7, "discarded": 3}


@override_settings(REDIS_URL="redis://127.0.0.1:1/0")
def test_it_still_shows_local_stats_when_redis_is_down(world: Any, monkeypatch: Any) -> None:
    def refuse() -> Any:
        raise ConnectionError("refused")

    monkeypatch.setattr(views, "_redis_client", refuse)
    body = world.client(world.sam).get("/api/ws/stats/").json()
    assert body["cluster"] is None and "ConnectionError" in body["clusterError"]
    assert "connections" in body["local"]


@pytest.mark.redis
def test_it_reads_socket_stats_from_a_real_redis(world: Any) -> None:
    import shutil

    import redis

    from devtools.servers import RedisServer

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        client.hset("researchflow:wsstats:host:1", "stats", _stats(2, 7, {"run.failed": 1}))
        client.hset("researchflow:wsstats:host:2", "stats", _stats(1, 3, {}))
        client.set("researchflow:wsstats:broken", "not a hash")
        client.close()
        with override_settings(REDIS_URL=server.url):
            body = world.client(world.sam).get("/api/ws/stats/").json()
    cluster = body["cluster"]
    assert (cluster["processes"], cluster["skipped"]) == (2, 1)
    assert cluster["connections"]["total"] == 3 and cluster["messages"]["sent"] == 10
