"""Who may see what: the gateway's database look-ups, each small and synchronous.

The consumer calls these through `database_sync_to_async`. The domain models are imported
lazily so that `events` depends on `runs` only here, and only on its models.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore as DBSessionStore
from django.core import signing
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac

from .bus import LoggedEvent
from .models import Event

SOCKET_TOKEN_PREFIX = "wst."
SOCKET_TOKEN_SALT = "researchflow.events.socket-token"


@dataclass(frozen=True, slots=True)
class SessionRef:
    """The Django session a socket was authenticated by, as it was at connect: the re-check
    ends the socket once that session is gone (logout, flush, expiry) or no longer verifies
    (password change). Both strings are credentials: kept out of repr, never logged."""

    key: str = field(repr=False)
    user_id: int
    auth_hash: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Credential:
    user: Any
    kind: str  # "session", "rest-token" or "socket-token"
    token_key: str | None = field(default=None, repr=False)  # REST token key; never logged
    session: SessionRef | None = None  # kind "session": re-checked for logout and expiry

    def key(self) -> str | SessionRef | None:
        """What the periodic re-check must find still valid (see `recheck`), if anything:
        the REST token, or the session. A socket token is valid until it expires, as long as
        its user is active."""
        if self.kind == "rest-token":
            return self.token_key
        if self.kind == "session":
            return self.session
        return None


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
    user_ids: Iterable[int], credential_keys: Iterable[str | SessionRef]
) -> tuple[dict[int, Standing], set[str | SessionRef]]:
    """One batch of queries re-reading the standing of every user with an open socket.

    Returns each user's standing and the subset of the given credential keys (REST token keys,
    session refs) still valid. With the database session engine that is one query per kind
    (users, memberships, tokens, sessions) whatever the number of sockets.
    """
    from rest_framework.authtoken.models import Token

    from runs.models import Membership

    ids = set(user_ids)
    users = (
        get_user_model()
        .objects.filter(pk__in=ids)
        .values_list("pk", "is_active", "is_staff", "password")
    )
    projects: dict[int, set[str]] = {uid: set() for uid in ids}
    for uid, project_id in Membership.objects.filter(user_id__in=ids).values_list(
        "user_id", "project_id"
    ):
        projects[uid].add(project_id)
    standing: dict[int, Standing] = {}
    passwords: dict[int, str] = {}
    for pk, active, staff, password in users:
        standing[pk] = Standing(bool(active), bool(staff), frozenset(projects.get(pk, ())))
        passwords[pk] = password
    keys = {k for k in credential_keys if isinstance(k, str)}
    valid: set[str | SessionRef] = (
        set(Token.objects.filter(key__in=keys).values_list("key", flat=True)) if keys else set()
    )
    sessions = {k for k in credential_keys if isinstance(k, SessionRef)}
    if sessions:
        valid |= _valid_sessions(sessions, passwords)
    return standing, valid


def _valid_sessions(refs: set[SessionRef], passwords: dict[int, str]) -> set[SessionRef]:
    """The refs whose session still authenticates their user, as `django.contrib.auth.get_user`
    would decide on the next request: it exists and has not expired, names the same user
    through a configured backend, and its auth hash is the one the socket saw at connect and
    still matches the user's password (a password change invalidates it)."""
    engine = import_module(settings.SESSION_ENGINE)
    store_cls = engine.SessionStore
    data: dict[str, dict[str, Any]] = {}
    if issubclass(store_cls, DBSessionStore):  # db and cached_db: the table is the truth
        model = store_cls.get_model_class()
        decoder = store_cls()
        for key, raw in model.objects.filter(
            session_key__in={r.key for r in refs}, expire_date__gt=timezone.now()
        ).values_list("session_key", "session_data"):
            data[key] = decoder.decode(raw)
    else:  # any other engine, one look-up per session through its own API
        for ref in refs:
            data[ref.key] = store_cls(ref.key).load()
    return {
        ref for ref in refs if _verifies(ref, data.get(ref.key) or {}, passwords.get(ref.user_id))
    }


def _verifies(ref: SessionRef, data: dict[str, Any], password: str | None) -> bool:
    if password is None or not ref.auth_hash:
        return False
    if str(data.get(SESSION_KEY)) != str(ref.user_id):
        return False
    if data.get(BACKEND_SESSION_KEY) not in settings.AUTHENTICATION_BACKENDS:
        return False
    stored = data.get(HASH_SESSION_KEY)
    if not isinstance(stored, str) or not constant_time_compare(stored, ref.auth_hash):
        return False
    # AbstractBaseUser.get_session_auth_hash, for the current secret and its fallbacks (as
    # get_user, which accepts a hash made with a fallback key during a key rotation).
    salt = "django.contrib.auth.models.AbstractBaseUser.get_session_auth_hash"
    return any(
        constant_time_compare(
            stored, salted_hmac(salt, password, secret=secret, algorithm="sha256").hexdigest()
        )
        for secret in (settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS)
    )


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
