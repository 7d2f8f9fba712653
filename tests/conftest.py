"""Personas (healthchecks style): Alice owns the project, Bob is a member, Victor a viewer,
Charlie an outsider with a project of his own, Sam is staff."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from runs import services
from runs.models import Project, Role

PASSWORD = "correct-horse-battery"


@dataclass
class World:
    alice: User
    bob: User
    victor: User
    charlie: User
    sam: User
    project: Project
    other_project: Project

    def client(self, user: User | None) -> APIClient:
        client = APIClient()
        if user is not None:
            token, _ = Token.objects.get_or_create(user=user)
            client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client

    def token(self, user: User) -> str:
        return Token.objects.get_or_create(user=user)[0].key


def make_user(username: str, **extra: Any) -> User:
    return User.objects.create_user(username, f"{username}@example.org", PASSWORD, **extra)


@pytest.fixture
def world(db: Any) -> World:
    alice = make_user("alice")
    bob = make_user("bob")
    victor = make_user("victor")
    charlie = make_user("charlie")
    sam = make_user("sam", is_staff=True, is_superuser=True)
    project = services.create_project("Cardiology cohort", owner=alice)
    services.set_member(project, bob, Role.MEMBER)
    services.set_member(project, victor, Role.VIEWER)
    other = services.create_project("Charlie's project", owner=charlie)
    return World(alice, bob, victor, charlie, sam, project, other)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    # PBKDF2's 1M iterations cost ~0.25 s per persona; tests don't need the work factor.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_cache() -> Any:
    # Throttle counters live in the cache; one test's logins must not throttle the next.
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
async def hubs_stopped() -> Any:
    """Stop the event hubs a test's sockets started, so no task outlives the test's loop."""
    from events.gateway.hub import Hub

    yield
    for hub in Hub.running():
        await hub.stop()
