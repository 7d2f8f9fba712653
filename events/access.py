"""Who may see what: the gateway's database look-ups, each small and synchronous.

The consumer calls these through `database_sync_to_async`. The domain models are imported
lazily so that `events` depends on `runs` only here, and only on its models.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing

from .bus import LoggedEvent
from .models import Event

SOCKET_TOKEN_PREFIX = "wst."
SOCKET_TOKEN_SALT = "researchflow.events.socket-token"


@dataclass(frozen=True, slots=True)
class Credential:
    user: Any
    kind: str  # "session", "rest-token" or "socket-token"
    token_key: str | None = None  # REST token key, re-checked for revocation; never logged


def make_socket_token(user: Any) -> str:
    """A short-lived signed token that names a user; for pages without a session cookie."""
    signed = signing.dumps({"u": user.pk}, salt=SOCKET_TOKEN_SALT, compress=True)
    return SOCKET_TOKEN_PREFIX + signed


def resolve_token(token: str) -> Credential | None:
    """A REST API token or a socket token → the active user it names, or None."""
    from rest_framework.authtoken.models import Token

    if not isinstance(token, str) or not 1 <= len(token) <= 512:
        return None
    if token.startswith(SOCKET_TOKEN_PREFIX):
        try:
            data = signing.loads(
                token[len(SOCKET_TOKEN_PREFIX) :],
                salt=SOCKET_TOKEN_SALT,
                max_age=settings.WS_SOCKET_TOKEN_MAX_AGE,
            )
        except signing.BadSignature:  # includes SignatureExpired
            return None
        user = get_user_model().objects.filter(pk=data.get("u"), is_active=True).first()
        return Credential(user, "socket-token") if user else None
    found = Token.objects.select_related("user").filter(key=token).first()
    if found is None or not found.user.is_active:
        return None
    return Credential(found.user, "rest-token", token)


def visible_projects(user: Any) -> frozenset[str] | None:
    """The projects whose events the user may see; None means every project (staff)."""
    from runs.models import Membership

    if user.is_staff:
        return None
    return frozenset(Membership.objects.filter(user=user).values_list("project_id", flat=True))


def run_project(run_id: str) -> str | None:
    from runs.models import Run

    return Run.objects.filter(pk=run_id).values_list("project_id", flat=True).first()


def user_by_id(user_id: int) -> Any:
    return get_user_model().objects.filter(pk=user_id).first()


@dataclass(frozen=True, slots=True)
class Standing:
    active: bool
    staff: bool
    projects: frozenset[str]


def recheck(
    user_ids: Iterable[int], token_keys: Iterable[str]
) -> tuple[dict[int, Standing], set[str]]:
    """One batch of queries re-reading the standing of every user with an open socket.

    Returns each user's standing and the subset of the given REST token keys still valid.
    """
    from rest_framework.authtoken.models import Token

    from runs.models import Membership

    ids = set(user_ids)
    users = get_user_model().objects.filter(pk__in=ids).values_list("pk", "is_active", "is_staff")
    projects: dict[int, set[str]] = {uid: set() for uid in ids}
    for uid, project_id in Membership.objects.filter(user_id__in=ids).values_list(
        "user_id", "project_id"
    ):
        projects[uid].add(project_id)
    standing = {
        pk: Standing(bool(active), bool(staff), frozenset(projects.get(pk, ())))
        for pk, active, staff in users
    }
    keys = set(token_keys)
    valid = set(Token.objects.filter(key__in=keys).values_list("key", flat=True)) if keys else set()
    return standing, valid


def log_bounds() -> tuple[int, int]:
    """(the position retention pruned through; the newest position)."""
    from django.db.models import Max

    from .models import EventLogState

    agg = Event.objects.aggregate(hi=Max("position"))
    pruned = EventLogState.pruned_through_id()
    return pruned, agg["hi"] or 0


def log_after(
    after: int,
    *,
    projects: frozenset[str] | None,
    run_id: str | None,
    types: Iterable[str],
    limit: int,
) -> list[LoggedEvent]:
    """Events with position > after that a socket may see and subscribed to, in log order.
    (Unpositioned rows, NULL, never match `>`: they are not in the log yet.)"""
    rows = Event.objects.filter(position__gt=after, type__in=list(types)).order_by("position")
    if projects is not None:
        rows = rows.filter(project_id__in=list(projects))
    if run_id is not None:
        rows = rows.filter(run_id=run_id)
    return [LoggedEvent.from_row(row) for row in rows[:limit]]
