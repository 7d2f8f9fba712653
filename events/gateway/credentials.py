"""Socket credentials: what authenticated a socket, and the periodic re-check that ends it.

A socket is authenticated by a Django session (same-origin pages), a REST token, or a
short-lived signed socket token. `recheck` re-reads, in one batch for every open socket of a
process, whether each user is still active, which projects they belong to, and whether the
token or session still holds. Synchronous ORM code: the hub calls it from a worker thread.
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
from rest_framework.authtoken.models import Token

from runs import access

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
    # The user alone, not the Token with its user: select_related would cache the Token on
    # the user (`user.auth_token`), which the socket then keeps for its lifetime.
    user = get_user_model().objects.filter(auth_token__key=token, is_active=True).first()
    return Credential(user, "rest-token", token) if user is not None else None


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
    ids = set(user_ids)
    users = (
        get_user_model()
        .objects.filter(pk__in=ids)
        .values_list("pk", "is_active", "is_staff", "password")
    )
    projects = access.memberships(ids)
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
