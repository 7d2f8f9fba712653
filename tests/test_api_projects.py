"""Projects, members, tokens and the OpenAPI document."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from django.contrib.auth.models import User
from drf_spectacular.validation import validate_schema
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from runs.models import Membership, Project, Role

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"  # conftest's persona password


def post(client: APIClient, url: str, body: Any) -> Any:
    return client.post(url, data=json.dumps(body), content_type="application/json")


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"detail", "code", "errors"}
    if code is not None:
        assert body["code"] == code
    return dict(body)


def role(project: Project, user: User) -> str | None:
    return (
        Membership.objects.filter(project=project, user=user).values_list("role", flat=True).first()
    )


# --- tokens --------------------------------------------------------------------------------


def test_it_issues_a_token_for_good_credentials(world: Any) -> None:
    response = post(APIClient(), "/api/auth/token/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 200
    assert response.json() == {"token": Token.objects.get(user=world.alice).key}


def test_it_authenticates_with_the_issued_token(world: Any) -> None:
    token = post(APIClient(), "/api/auth/token/", {"username": "bob", "password": PASSWORD}).json()[
        "token"
    ]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/projects/").status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"username": "alice", "password": "wrong"},
        {"username": "nobody", "password": PASSWORD},
        {"username": "alice"},
        {"username": 5, "password": PASSWORD},
        [],
    ],
)
def test_it_refuses_bad_credentials_with_400(world: Any, body: Any) -> None:
    response = post(APIClient(), "/api/auth/token/", body)
    assert_error(response, 400, "invalid")
    assert PASSWORD not in response.content.decode()


def test_it_refuses_a_token_for_an_inactive_user(world: Any) -> None:
    world.bob.is_active = False
    world.bob.save()
    response = post(APIClient(), "/api/auth/token/", {"username": "bob", "password": PASSWORD})
    assert_error(response, 400)


def test_it_takes_token_requests_as_json_only(world: Any) -> None:
    response = APIClient().post(
        "/api/auth/token/", {"username": "alice", "password": PASSWORD}, format="multipart"
    )
    assert_error(response, 415, "unsupported_media_type")


# --- projects ------------------------------------------------------------------------------


def test_it_lists_the_projects_a_user_belongs_to_with_their_role(world: Any) -> None:
    body = world.client(world.victor).get("/api/projects/").json()
    assert [(p["id"], p["role"]) for p in body["results"]] == [(world.project.pk, "viewer")]


def test_it_lists_every_project_for_staff(world: Any) -> None:
    body = world.client(world.sam).get("/api/projects/").json()
    assert {p["id"] for p in body["results"]} == {world.project.pk, world.other_project.pk}


def test_it_creates_a_project_owned_by_its_creator(world: Any) -> None:
    response = post(world.client(world.victor), "/api/projects/", {"name": "Oncology"})
    assert response.status_code == 201
    body = response.json()
    assert body["role"] == "owner" and body["members"] == [{"username": "victor", "role": "owner"}]
    assert role(Project.objects.get(pk=body["id"]), world.victor) == Role.OWNER


@pytest.mark.parametrize(
    "body", [{}, {"name": ""}, {"name": "x" * 121}, {"name": "a\nb"}, {"name": 3}]
)
def test_it_refuses_bad_project_names(world: Any, body: Any) -> None:
    response = post(world.client(world.alice), "/api/projects/", body)
    assert "name" in assert_error(response, 400, "invalid")["errors"]


def test_it_shows_a_project_with_its_members(world: Any) -> None:
    body = world.client(world.bob).get(f"/api/projects/{world.project.pk}/").json()
    assert body["members"] == [
        {"username": "alice", "role": "owner"},
        {"username": "bob", "role": "member"},
        {"username": "victor", "role": "viewer"},
    ]
    assert body["role"] == "member"


@pytest.mark.parametrize("project_id", ["other", "prj_00000000000000000000", "%00", "x" * 500])
def test_it_hides_projects_the_user_does_not_belong_to(world: Any, project_id: str) -> None:
    pid = world.other_project.pk if project_id == "other" else project_id
    assert_error(world.client(world.alice).get(f"/api/projects/{pid}/"), 404, "not_found")


def test_it_needs_authentication_for_projects(world: Any) -> None:
    assert_error(APIClient().get("/api/projects/"), 401)
    assert_error(post(APIClient(), "/api/projects/", {"name": "x"}), 401)


# --- members -------------------------------------------------------------------------------


def test_it_lets_an_owner_add_a_member(world: Any) -> None:
    url = f"/api/projects/{world.project.pk}/members/"
    response = post(world.client(world.alice), url, {"username": "charlie", "role": "viewer"})
    assert response.status_code == 201
    assert {"username": "charlie", "role": "viewer"} in response.json()["members"]
    assert role(world.project, world.charlie) == Role.VIEWER


def test_it_lets_an_owner_change_a_role(world: Any) -> None:
    url = f"/api/projects/{world.project.pk}/members/"
    response = post(world.client(world.alice), url, {"username": "victor", "role": "member"})
    assert response.status_code == 200
    assert role(world.project, world.victor) == Role.MEMBER


@pytest.mark.parametrize(("persona", "status"), [("bob", 403), ("victor", 403), ("charlie", 404)])
def test_it_lets_only_owners_manage_members(world: Any, persona: str, status: int) -> None:
    client = world.client(getattr(world, persona))
    add = post(
        client, f"/api/projects/{world.project.pk}/members/", {"username": "sam", "role": "owner"}
    )
    assert_error(add, status)
    remove = client.delete(f"/api/projects/{world.project.pk}/members/victor/")
    assert_error(remove, status)
    assert role(world.project, world.sam) is None
    assert role(world.project, world.victor) == Role.VIEWER


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "nobody", "role": "member"}, "username"),
        ({"username": "charlie", "role": "admin"}, "role"),
        ({"username": "charlie"}, "role"),
        ({"username": ["charlie"], "role": "member"}, "username"),
    ],
)
def test_it_refuses_bad_member_requests(world: Any, body: Any, field: str) -> None:
    response = post(world.client(world.alice), f"/api/projects/{world.project.pk}/members/", body)
    assert field in assert_error(response, 400, "invalid")["errors"]


def test_it_answers_an_unknown_and_a_deactivated_username_alike(world: Any) -> None:
    # Owners learn whether an active account exists (a documented decision), nothing more.
    User.objects.create_user("gone", password=PASSWORD, is_active=False)
    url = f"/api/projects/{world.project.pk}/members/"
    answers = [
        assert_error(
            post(world.client(world.alice), url, {"username": name, "role": "member"}), 400
        )
        for name in ["gone", "nobody"]
    ]
    assert answers[0] == answers[1]
    assert answers[0]["errors"] == {"username": ["no active user with this username"]}


@pytest.mark.parametrize(("persona", "status"), [("bob", 403), ("victor", 403), ("charlie", 404)])
def test_it_tells_non_owners_nothing_about_usernames(world: Any, persona: str, status: int) -> None:
    url = f"/api/projects/{world.project.pk}/members/"
    client = world.client(getattr(world, persona))
    existing = post(client, url, {"username": "sam", "role": "member"})
    unknown = post(client, url, {"username": "nobody", "role": "member"})
    assert assert_error(existing, status) == assert_error(unknown, status)


def test_it_refuses_to_demote_the_last_owner(world: Any) -> None:
    url = f"/api/projects/{world.project.pk}/members/"
    response = post(world.client(world.alice), url, {"username": "alice", "role": "member"})
    assert (
        assert_error(response, 409, "conflict")["detail"]
        == "a project must keep at least one owner"
    )
    assert role(world.project, world.alice) == Role.OWNER


def test_it_lets_an_owner_remove_a_member(world: Any) -> None:
    response = world.client(world.alice).delete(f"/api/projects/{world.project.pk}/members/bob/")
    assert response.status_code == 204
    assert role(world.project, world.bob) is None


def test_it_refuses_to_remove_the_last_owner(world: Any) -> None:
    response = world.client(world.alice).delete(f"/api/projects/{world.project.pk}/members/alice/")
    assert_error(response, 409, "conflict")
    assert role(world.project, world.alice) == Role.OWNER


@pytest.mark.parametrize("username", ["charlie", "nobody", "%00"])
def test_it_answers_404_for_removing_a_non_member(world: Any, username: str) -> None:
    response = world.client(world.alice).delete(
        f"/api/projects/{world.project.pk}/members/{username}/"
    )
    assert_error(response, 404, "not_found")


def test_it_lets_a_removed_member_no_longer_see_the_project(world: Any) -> None:
    world.client(world.alice).delete(f"/api/projects/{world.project.pk}/members/bob/")
    assert world.client(world.bob).get(f"/api/projects/{world.project.pk}/").status_code == 404


# --- the API description -------------------------------------------------------------------


def test_it_serves_a_valid_openapi_json_document(world: Any) -> None:
    response = APIClient().get("/api/schema/?format=json")
    assert response.status_code == 200
    document = json.loads(response.content)
    validate_schema(document)
    assert document["openapi"].startswith("3.")
    assert "/api/runs/{run_id}/start/" in document["paths"]
    assert "/api/events/" in document["paths"]


def test_it_serves_the_openapi_document_as_yaml(world: Any) -> None:
    response = APIClient().get("/api/schema/")
    assert response.status_code == 200
    document = yaml.safe_load(response.content)
    assert document["info"]["title"] == "ResearchFlow events API"


def test_it_serves_swagger_ui(world: Any) -> None:
    response = APIClient().get("/api/docs/")
    assert response.status_code == 200 and b"swagger" in response.content.lower()


def test_it_documents_camel_case_fields(world: Any) -> None:
    document = json.loads(APIClient().get("/api/schema/?format=json").content)
    schemas = document["components"]["schemas"]
    assert "itemsProcessed" in schemas["ProgressRequest"]["properties"]
    assert "projectId" in schemas["RunDetail"]["properties"]


def test_it_documents_each_route_once(world: Any) -> None:
    paths = json.loads(APIClient().get("/api/schema/?format=json").content)["paths"]
    assert "/api/runs/" in paths and "/api/runs" not in paths


def test_unknown_api_paths_answer_json_404(world: Any) -> None:
    response = world.client(world.alice).get("/api/nope/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


@pytest.mark.parametrize(
    ("name", "category"),
    [
        ("Proj SSN 123-45-6789", "SSN"),
        ("Proj SSN 123\u201145\u20116789", "SSN"),  # non-breaking hyphens
        ("Patient John Smith cohort", "PERSON_NAME"),
        ("Study \u202eevil", "BIDI_CONTROL"),
    ],
)
def test_it_refuses_a_project_name_with_phi_naming_field_and_category(
    world: Any, name: str, category: str
) -> None:
    before = Project.objects.count()
    response = post(world.client(world.alice), "/api/projects/", {"name": name})
    [message] = assert_error(response, 400, "invalid")["errors"]["name"]
    assert "PHI" in message and category in message
    assert "123" not in response.content.decode() and "John" not in response.content.decode()
    assert Project.objects.count() == before
