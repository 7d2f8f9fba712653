"""The Django admin: every model usable, state changed only through actions and services."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.test import Client

from events.models import Event
from runs import services
from runs.models import Approval, ApprovalStatus, Membership, Project, Role, Run, RunStatus

pytestmark = pytest.mark.django_db

SSN = "123-45-6789"


@pytest.fixture
def admin_client(world: Any) -> Client:
    client = Client()
    client.force_login(world.sam)
    return client


def make_run(world: Any) -> Run:
    return services.create_run(world.project, "Cohort A", ["Ingest", "Model"], world.alice)


def messages_of(response: Any) -> list[tuple[str, str]]:
    return [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]


def act(client: Client, model: str, action: str, *pks: str) -> Any:
    return client.post(
        f"/admin/runs/{model}/", {"action": action, "_selected_action": list(pks)}, follow=True
    )


def test_it_keeps_non_staff_out_of_the_admin(world: Any) -> None:
    client = Client()
    client.force_login(world.alice)
    response = client.get("/admin/runs/run/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


@pytest.mark.parametrize(
    "url",
    [
        "/admin/",
        "/admin/runs/project/",
        "/admin/runs/project/add/",
        "/admin/runs/run/",
        "/admin/runs/run/add/",
        "/admin/runs/stage/",
        "/admin/runs/artifact/",
        "/admin/runs/approval/",
        "/admin/events/event/",
        "/admin/runs/run/?status__exact=running",
        "/admin/runs/run/?q=Cohort",
        "/admin/events/event/?type=run.created",
        "/admin/events/event/?q=run_",
    ],
)
def test_it_renders_every_list_and_add_page(world: Any, admin_client: Client, url: str) -> None:
    make_run(world)
    assert admin_client.get(url).status_code == 200


def test_it_renders_every_change_page(world: Any, admin_client: Client) -> None:
    run = make_run(world)
    services.start_run(run.pk)
    stage = run.stages.order_by("position").first()
    assert stage is not None
    artifact = services.add_artifact(
        run.pk, kind="table", name="t.csv", size_bytes=1, content_type="text/csv"
    )
    approval = services.request_approval(
        run.pk, governance_type="PHI_SCAN", priority="LOW", assigned_to=[world.bob]
    )
    event = Event.objects.first()
    assert event is not None
    for url in (
        f"/admin/runs/project/{world.project.pk}/change/",
        f"/admin/runs/run/{run.pk}/change/",
        f"/admin/runs/stage/{stage.pk}/change/",
        f"/admin/runs/artifact/{artifact.pk}/change/",
        f"/admin/runs/approval/{approval.pk}/change/",
        f"/admin/events/event/{event.pk}/change/",
    ):
        response = admin_client.get(url)
        assert response.status_code == 200, url


def test_it_shows_run_state_read_only_without_a_save_button(
    world: Any, admin_client: Client
) -> None:
    run = make_run(world)
    content = admin_client.get(f"/admin/runs/run/{run.pk}/change/").content.decode()
    assert 'name="status"' not in content and 'name="_save"' not in content
    assert "Ingest" in content  # the stage inline


def test_it_ignores_a_posted_change_to_a_run(world: Any, admin_client: Client) -> None:
    run = make_run(world)
    admin_client.post(f"/admin/runs/run/{run.pk}/change/", {"status": "completed", "name": "X"})
    run.refresh_from_db()
    assert (run.status, run.name) == (RunStatus.CREATED, "Cohort A")


# --- creating runs -------------------------------------------------------------------------


def test_it_creates_a_run_with_stages_through_the_service(world: Any, admin_client: Client) -> None:
    response = admin_client.post(
        "/admin/runs/run/add/",
        {
            "project": world.project.pk,
            "name": "From admin",
            "stage_names": "Load\n\n  Clean \nReport\n",
        },
        follow=True,
    )
    assert response.status_code == 200
    run = Run.objects.get(name="From admin")
    assert list(run.stages.order_by("position").values_list("name", flat=True)) == [
        "Load",
        "Clean",
        "Report",
    ]
    assert run.created_by == world.sam
    created = Event.objects.get(type="run.created", run_id=run.pk)
    assert created.payload["stageCount"] == 3
    assert [level for level, _ in messages_of(response)] == ["success"]


@pytest.mark.parametrize(
    ("name", "stage_names", "expected"),
    [
        (f"SSN {SSN}", "Load", "contains possible PHI (SSN)"),
        ("Fine", "Load\nPatient John Smith", "line 2: contains possible PHI (PERSON_NAME)"),
        ("Fine", "", "This field is required."),
        ("Fine", "\n".join(["s"] * 101), "At most 100 stages."),
        ("Fine", "x" * 121, "line 1: longer than 120 characters"),
        ("Fine", "a\x07b", "line 1: contains control characters"),
    ],
)
def test_it_refuses_bad_run_forms_and_saves_nothing(
    world: Any, admin_client: Client, name: str, stage_names: str, expected: str
) -> None:
    response = admin_client.post(
        "/admin/runs/run/add/",
        {"project": world.project.pk, "name": name, "stage_names": stage_names},
    )
    assert response.status_code == 200  # the form again, with errors
    assert expected in response.content.decode()
    assert SSN not in response.content.decode().replace(f'value="SSN {SSN}"', "")
    assert not Run.objects.exists() and not Event.objects.exists()


def test_it_reports_an_event_the_bus_refuses_instead_of_crashing(
    world: Any, admin_client: Client, monkeypatch: Any
) -> None:
    monkeypatch.setattr("events.phi.scan_text", lambda text: [])
    response = admin_client.post(
        "/admin/runs/run/add/",
        {"project": world.project.pk, "name": f"SSN {SSN}", "stage_names": "Load"},
        follow=True,
    )
    [(level, text)] = messages_of(response)
    assert level == "error" and "PHI" in text and SSN not in text
    assert not Run.objects.exists() and not Event.objects.exists()


# --- actions -------------------------------------------------------------------------------


def test_it_starts_runs_with_an_action(world: Any, admin_client: Client) -> None:
    first, second = make_run(world), make_run(world)
    response = act(admin_client, "run", "start_runs", first.pk, second.pk)
    assert sorted(messages_of(response)) == sorted(
        [("success", f"{first.pk}: start done"), ("success", f"{second.pk}: start done")]
    )
    assert set(Run.objects.values_list("status", flat=True)) == {RunStatus.RUNNING}
    assert Event.objects.filter(type="run.started").count() == 2


def test_it_reports_an_illegal_start_per_run(world: Any, admin_client: Client) -> None:
    started, fresh = make_run(world), make_run(world)
    services.start_run(started.pk)
    response = act(admin_client, "run", "start_runs", started.pk, fresh.pk)
    found = {text.split(":")[0]: (level, text) for level, text in messages_of(response)}
    assert found[started.pk] == (
        "error",
        f"{started.pk}: cannot start: run is running; only a created run can start",
    )
    assert found[fresh.pk][0] == "success"
    assert Run.objects.get(pk=fresh.pk).status == RunStatus.RUNNING


def test_it_reports_completing_a_run_with_unfinished_stages(
    world: Any, admin_client: Client
) -> None:
    run = make_run(world)
    services.start_run(run.pk)
    response = act(admin_client, "run", "complete_runs", run.pk)
    [(level, text)] = messages_of(response)
    assert level == "error" and "2 stage(s) have not completed" in text
    assert Run.objects.get(pk=run.pk).status == RunStatus.RUNNING


def test_it_completes_a_run_with_an_action(world: Any, admin_client: Client) -> None:
    run = make_run(world)
    services.start_run(run.pk)
    for stage in run.stages.all():
        services.start_stage(stage.pk)
        services.complete_stage(stage.pk)
    response = act(admin_client, "run", "complete_runs", run.pk)
    assert messages_of(response) == [("success", f"{run.pk}: complete done")]
    assert Run.objects.get(pk=run.pk).status == RunStatus.COMPLETED


def test_it_fails_a_run_with_an_action(world: Any, admin_client: Client) -> None:
    run = make_run(world)
    act(admin_client, "run", "fail_runs", run.pk)
    run.refresh_from_db()
    assert (run.status, run.error_code) == (RunStatus.FAILED, "INTERNAL_ERROR")
    assert Event.objects.get(type="run.failed").payload["errorCode"] == "INTERNAL_ERROR"


def test_it_reports_failing_a_finished_run(world: Any, admin_client: Client) -> None:
    run = make_run(world)
    services.fail_run(run.pk, "TIMEOUT")
    [(level, text)] = messages_of(act(admin_client, "run", "fail_runs", run.pk))
    assert level == "error" and "a finished run cannot fail" in text


@pytest.mark.parametrize(
    ("action", "status", "event"),
    [
        ("grant_approvals", ApprovalStatus.GRANTED, "approval.granted"),
        ("deny_approvals", ApprovalStatus.DENIED, "approval.denied"),
    ],
)
def test_it_decides_approvals_with_actions(
    world: Any, admin_client: Client, action: str, status: str, event: str
) -> None:
    approval = services.request_approval(
        make_run(world).pk, governance_type="PHI_SCAN", priority="LOW"
    )
    response = act(admin_client, "approval", action, approval.pk)
    assert messages_of(response)[0][0] == "success"
    approval.refresh_from_db()
    assert (approval.status, approval.decided_by) == (status, world.sam)
    assert Event.objects.get(type=event).payload["decidedBy"] == "sam"


def test_it_reports_deciding_an_approval_twice(world: Any, admin_client: Client) -> None:
    approval = services.request_approval(
        make_run(world).pk, governance_type="PHI_SCAN", priority="LOW"
    )
    services.decide_approval(approval.pk, granted=False, decided_by=world.alice)
    [(level, text)] = messages_of(act(admin_client, "approval", "grant_approvals", approval.pk))
    assert (level, text) == ("error", f"{approval.pk}: cannot grant: approval was already denied")
    assert Approval.objects.get(pk=approval.pk).status == ApprovalStatus.DENIED


# --- read-only models ----------------------------------------------------------------------


def test_it_keeps_the_event_log_read_only(world: Any, admin_client: Client) -> None:
    make_run(world)
    event = Event.objects.get()
    assert admin_client.get("/admin/events/event/add/").status_code == 403
    assert admin_client.get(f"/admin/events/event/{event.pk}/delete/").status_code == 403
    admin_client.post(f"/admin/events/event/{event.pk}/change/", {"type": "run.failed"})
    assert Event.objects.get().type == "run.created"


@pytest.mark.parametrize("model", ["stage", "artifact", "approval"])
def test_it_refuses_adding_rows_the_services_create(admin_client: Client, model: str) -> None:
    assert admin_client.get(f"/admin/runs/{model}/add/").status_code == 403


# --- projects ------------------------------------------------------------------------------


def _project_form(name: str, members: list[tuple[str, str, str, bool]]) -> dict[str, Any]:
    """members: (membership id or "", user id, role, delete)."""
    data: dict[str, Any] = {
        "name": name,
        "memberships-TOTAL_FORMS": str(len(members)),
        "memberships-INITIAL_FORMS": str(sum(1 for m in members if m[0])),
        "memberships-MIN_NUM_FORMS": "0",
        "memberships-MAX_NUM_FORMS": "1000",
    }
    for index, (pk, user, role, delete) in enumerate(members):
        data[f"memberships-{index}-id"] = pk
        data[f"memberships-{index}-user"] = user
        data[f"memberships-{index}-role"] = role
        if delete:
            data[f"memberships-{index}-DELETE"] = "on"
    return data


def test_it_makes_the_staff_creator_owner_of_an_ownerless_project(
    world: Any, admin_client: Client
) -> None:
    admin_client.post(
        "/admin/runs/project/add/",
        _project_form("From admin", [("", str(world.bob.pk), "member", False)]),
    )
    project = Project.objects.get(name="From admin")
    roles = dict(Membership.objects.filter(project=project).values_list("user__username", "role"))
    assert roles == {"bob": "member", "sam": "owner"}


def test_it_refuses_removing_the_last_owner_in_the_inline(world: Any, admin_client: Client) -> None:
    members = [
        (str(m.pk), str(m.user_id), m.role, m.user_id == world.alice.pk)
        for m in Membership.objects.filter(project=world.project).order_by("pk")
    ]
    response = admin_client.post(
        f"/admin/runs/project/{world.project.pk}/change/",
        _project_form(world.project.name, members),
        follow=True,
    )
    assert ("error", "alice: a project must keep at least one owner") in messages_of(response)
    assert Membership.objects.get(project=world.project, user=world.alice).role == Role.OWNER


def test_it_hands_ownership_over_in_one_save(world: Any, admin_client: Client) -> None:
    members = [
        (
            str(m.pk),
            str(m.user_id),
            "owner" if m.user_id == world.bob.pk else m.role,
            m.user_id == world.alice.pk,
        )
        for m in Membership.objects.filter(project=world.project).order_by("pk")
    ]
    admin_client.post(
        f"/admin/runs/project/{world.project.pk}/change/",
        _project_form(world.project.name, members),
    )
    roles = dict(
        Membership.objects.filter(project=world.project).values_list("user__username", "role")
    )
    assert roles == {"bob": "owner", "victor": "viewer"}


@pytest.mark.parametrize(
    ("name", "category"),
    [("Proj SSN 123-45-6789", "SSN"), ("Proj SSN 123\u201045\u20136789", "SSN")],
)
def test_it_refuses_a_project_name_with_phi_as_a_form_error(
    world: Any, admin_client: Client, name: str, category: str
) -> None:
    before = Project.objects.count()
    response = admin_client.post("/admin/runs/project/add/", _project_form(name, []))
    assert response.status_code == 200  # the form again, with errors
    assert f"contains possible PHI ({category})" in response.content.decode()
    assert Project.objects.count() == before


def test_it_refuses_an_ssn_split_across_run_name_and_stage_names_as_a_form_error(
    world: Any, admin_client: Client
) -> None:
    response = admin_client.post(
        "/admin/runs/run/add/",
        {"project": world.project.pk, "name": "Cohort SSN 123", "stage_names": "45\n6789"},
    )
    assert response.status_code == 200
    assert "contains possible PHI (SSN)" in response.content.decode()
    assert not Run.objects.exists() and not Event.objects.exists()
