"""The approvals inbox (`GET /api/approvals/inbox/`): what waits for whom, across projects."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from runs import services
from runs.models import Approval, Run

pytestmark = pytest.mark.django_db

INBOX = "/api/approvals/inbox/"


def make_run(project: Any, author: Any, name: str = "Cohort A", *, start: bool = True) -> Run:
    run = services.create_run(project, name, ["Ingest", "Model"], author)
    if start:
        services.start_run(run.pk)
    return run


def ask(run: Run, priority: str = "MEDIUM", *assignees: Any, kind: str = "PHI_SCAN") -> Approval:
    return services.request_approval(
        run.pk, governance_type=kind, priority=priority, assigned_to=list(assignees)
    )


def inbox_ids(client: APIClient, query: str = "") -> list[str]:
    response = client.get(INBOX + query)
    assert response.status_code == 200, response.content
    return [item["id"] for item in response.json()["results"]]


def finish(run: Run) -> None:
    for stage in run.stages.order_by("position"):
        services.start_stage(stage.pk)
        services.complete_stage(stage.pk)
    services.complete_run(run.pk)


def test_it_lists_a_pending_approval_with_where_it_waits(world: Any) -> None:
    run = make_run(world.project, world.alice, "Cohort A")
    approval = ask(run, "HIGH", world.bob)
    response = world.client(world.bob).get(INBOX)
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 1
    [item] = body["results"]
    assert item == {
        "id": approval.pk,
        "runId": run.pk,
        "runName": "Cohort A",
        "runStatus": "running",
        "projectId": world.project.pk,
        "projectName": "Cardiology cohort",
        "governanceType": "PHI_SCAN",
        "priority": "HIGH",
        "status": "pending",
        "assignedTo": ["bob"],
        "assignedToMe": True,
        "decidedBy": None,
        "reasonCode": None,
        "requestedAt": item["requestedAt"],
        "decidedAt": None,
    }
    assert item["requestedAt"].endswith("Z")


def test_it_shows_every_owner_and_member_what_they_may_decide_not_only_assignees(
    world: Any,
) -> None:
    approval = ask(make_run(world.project, world.alice), "LOW", world.bob)
    for persona in (world.alice, world.bob):
        assert inbox_ids(world.client(persona)) == [approval.pk]
    alice_item = world.client(world.alice).get(INBOX).json()["results"][0]
    assert alice_item["assignedToMe"] is False


def test_it_shows_a_viewer_nothing_to_decide(world: Any) -> None:
    ask(make_run(world.project, world.alice))
    assert inbox_ids(world.client(world.victor)) == []


def test_it_never_shows_another_projects_approvals(world: Any) -> None:
    ours = ask(make_run(world.project, world.alice))
    theirs = ask(make_run(world.other_project, world.charlie))
    assert inbox_ids(world.client(world.charlie)) == [theirs.pk]
    assert inbox_ids(world.client(world.bob)) == [ours.pk]


def test_it_shows_staff_every_project(world: Any) -> None:
    ours = ask(make_run(world.project, world.alice), "LOW")
    theirs = ask(make_run(world.other_project, world.charlie), "HIGH")
    assert inbox_ids(world.client(world.sam)) == [theirs.pk, ours.pk]


def test_it_puts_the_most_urgent_first_then_the_longest_waiting(world: Any) -> None:
    run = make_run(world.project, world.alice)
    low = ask(run, "LOW")
    old_high = ask(run, "HIGH")
    critical = ask(run, "CRITICAL")
    new_high = ask(run, "HIGH")
    medium = ask(run, "MEDIUM")
    assert inbox_ids(world.client(world.bob)) == [
        critical.pk,
        old_high.pk,
        new_high.pk,
        medium.pk,
        low.pk,
    ]


def test_it_includes_runs_not_yet_started(world: Any) -> None:
    approval = ask(make_run(world.project, world.alice, start=False))
    [item] = world.client(world.bob).get(INBOX).json()["results"]
    assert (item["id"], item["runStatus"]) == (approval.pk, "created")


def test_it_leaves_out_decided_approvals_and_finished_runs(world: Any) -> None:
    run = make_run(world.project, world.alice)
    granted = ask(run)
    denied = ask(run)
    waiting = ask(run)
    services.decide_approval(granted.pk, granted=True, decided_by=world.alice)
    services.decide_approval(denied.pk, granted=False, decided_by=world.alice)
    completed = make_run(world.project, world.alice, "Done")
    ask(completed)
    finish(completed)
    failed = make_run(world.project, world.alice, "Broken")
    ask(failed)
    services.fail_run(failed.pk, "TIMEOUT")
    assert inbox_ids(world.client(world.bob)) == [waiting.pk]


def test_it_narrows_to_approvals_assigned_to_me(world: Any) -> None:
    run = make_run(world.project, world.alice)
    mine = ask(run, "LOW", world.bob, world.alice)
    ask(run, "HIGH", world.alice)
    ask(run, "CRITICAL")
    assert inbox_ids(world.client(world.bob), "?assigned=me") == [mine.pk]
    body = world.client(world.bob).get(INBOX + "?assigned=me").json()
    assert body["count"] == 1 and body["results"][0]["assignedToMe"] is True


def test_it_filters_by_project(world: Any) -> None:
    ours = ask(make_run(world.project, world.alice))
    theirs = ask(make_run(world.other_project, world.charlie))
    sam = world.client(world.sam)
    assert inbox_ids(sam, f"?project={world.project.pk}") == [ours.pk]
    assert inbox_ids(sam, f"?project={world.other_project.pk}") == [theirs.pk]
    # A foreign project filters to nothing: it does not say whether the project exists.
    assert inbox_ids(world.client(world.bob), f"?project={world.other_project.pk}") == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?project=nonsense", "project"),
        ("?project=run_00000000000000000000", "project"),
        ("?assigned=bob", "assigned"),
        ("?assigned=", "assigned"),
    ],
)
def test_it_refuses_bad_filters_with_400_naming_the_field(
    world: Any, query: str, field: str
) -> None:
    response = world.client(world.bob).get(INBOX + query)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid" and list(body["errors"]) == [field]


def test_it_pages_with_limit_and_offset(world: Any) -> None:
    run = make_run(world.project, world.alice)
    approvals = [ask(run).pk for _ in range(5)]
    client = world.client(world.bob)
    first = client.get(INBOX + "?limit=2").json()
    assert first["count"] == 5 and first["next"] and first["previous"] is None
    assert [item["id"] for item in first["results"]] == approvals[:2]
    assert inbox_ids(client, "?limit=2&offset=4") == approvals[4:]


def test_it_answers_in_a_bounded_number_of_queries(
    world: Any, django_assert_max_num_queries: Any
) -> None:
    for index in range(6):
        project = world.project if index % 2 else world.other_project
        ask(make_run(project, world.alice if index % 2 else world.charlie), "LOW", world.sam)
    client = world.client(world.sam)
    with django_assert_max_num_queries(5):  # token, count, page, assignees prefetch (+ slack)
        assert len(inbox_ids(client)) == 6


def test_it_needs_authentication(world: Any) -> None:
    response = APIClient().get(INBOX)
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_it_answers_without_the_trailing_slash(world: Any) -> None:
    ask(make_run(world.project, world.alice))
    assert world.client(world.bob).get(INBOX.rstrip("/")).json()["count"] == 1


def test_it_is_documented_in_the_openapi_schema(world: Any) -> None:
    document = json.loads(APIClient().get("/api/schema/?format=json").content)
    operation = document["paths"]["/api/approvals/inbox/"]["get"]
    names = {p["name"] for p in operation["parameters"]}
    assert names == {"project", "assigned", "limit", "offset"}
    page = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    page_props = document["components"]["schemas"][page.rsplit("/", 1)[1]]["properties"]
    assert set(page_props) == {"count", "next", "previous", "results"}
    props = document["components"]["schemas"]["InboxApproval"]["properties"]
    assert {"runName", "projectName", "assignedToMe", "priority"} <= set(props)


# --- deciding from the inbox ---------------------------------------------------------------


def test_it_is_decided_through_the_decide_endpoints_and_leaves_the_inbox(world: Any) -> None:
    run = make_run(world.project, world.alice)
    first = ask(run, "HIGH", world.bob)
    second = ask(run, "LOW")
    bob = world.client(world.bob)
    assert inbox_ids(bob) == [first.pk, second.pk]
    response = bob.post(
        f"/api/approvals/{first.pk}/grant/",
        data=json.dumps({"reasonCode": "DEIDENTIFIED"}),
        content_type="application/json",
    )
    assert response.status_code == 200 and response.json()["status"] == "granted"
    assert inbox_ids(bob) == [second.pk]
    assert inbox_ids(world.client(world.alice)) == [second.pk]
    # Someone decided first: 409, and the inbox is unchanged.
    again = bob.post(f"/api/approvals/{first.pk}/deny/")
    assert again.status_code == 409 and again.json()["detail"] == "approval was already granted"
    assert inbox_ids(bob) == [second.pk]


def test_who_may_decide_matches_who_sees_it_in_the_inbox(world: Any) -> None:
    approval = ask(make_run(world.project, world.alice))
    grant = f"/api/approvals/{approval.pk}/grant/"
    assert world.client(world.victor).post(grant).status_code == 403
    assert world.client(world.charlie).post(grant).status_code == 404
    assert Approval.objects.get(pk=approval.pk).status == "pending"
    assert inbox_ids(world.client(world.bob)) == [approval.pk]
