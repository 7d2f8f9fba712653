"""Who is on one socket and what it may see: the user and the credential they came with, their
per-user socket slot (WS_MAX_SOCKETS_PER_USER, counted by the hub), and the projects the socket
is offered events from — the user's memberships narrowed to the socket's scope (a project or a
run given in `auth`). The hub's periodic re-check keeps this current (`apply_standing`): a
revoked credential closes the socket, a changed membership narrows or widens it.

`Viewer` is a base class of the consumer, holding no state of its own: its attributes live in
the consumer's `__slots__` (`VIEWER_SLOTS`), since memory per socket decides how many sockets a
process holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from channels.db import database_sync_to_async

from runs import access

from . import credentials
from .deadlines import CLOSE_UNAUTHENTICATED

if TYPE_CHECKING:
    from .hub import Hub, Subscriber

CLOSE_FORBIDDEN = 4403  # the socket's scope is no longer visible to its user


class ScopeRefused(Exception):
    """The project or run a client asked to be narrowed to is unknown or not the user's; the
    message is the same for both, so it never confirms that a foreign id exists."""


async def authorised_scope(
    user: Any, project_id: str | None, run_id: str | None
) -> tuple[str | None, frozenset[str] | None]:
    """The scope a client asked for (`auth` on `/ws`, the query of `/events/stream`), checked
    against the user's memberships: the project it narrows to (a run's project when only the
    run was named) and the user's projects (None: staff, every project). Raises ScopeRefused."""
    member_of = await database_sync_to_async(access.member_projects)(user)
    if project_id is not None and member_of is not None and project_id not in member_of:
        raise ScopeRefused("project not found or not accessible")
    if (
        project_id is not None
        and member_of is None
        and not await database_sync_to_async(access.project_exists)(project_id)
    ):
        raise ScopeRefused("project not found or not accessible")
    if run_id is not None:
        run_project = await database_sync_to_async(access.run_project)(run_id)
        if (
            run_project is None
            or (member_of is not None and run_project not in member_of)
            or (project_id is not None and run_project != project_id)
        ):
            raise ScopeRefused("run not found or not accessible")
        project_id = project_id or run_project
    return project_id, member_of


# Viewer's attributes, for the host's __slots__.
VIEWER_SLOTS = (
    "_member_of",
    "_slot_claimed",
    "credential",
    "scope_project",
    "scope_run",
    "user",
    "user_id",
    "visible_projects",
)


class Viewer:
    if TYPE_CHECKING:  # provided by the host class
        hub: Hub
        _closing: bool

        def _close_soon(self, code: int) -> None: ...

    def _start_viewer(self) -> None:
        self.user: Any = None  # None until the socket authenticates
        self.credential: credentials.Credential | None = None
        self.user_id: int | None = None
        self.scope_project: str | None = None
        self.scope_run: str | None = None
        self._member_of: frozenset[str] | None = frozenset()  # None: every project (staff)
        # What the hub offers this socket: _member_of narrowed to the scope. None: every project.
        self.visible_projects: frozenset[str] | None = frozenset()
        self._slot_claimed = False

    def _claim_slot(self, user_id: int) -> bool:
        if not self.hub.claim_user_slot(user_id):
            return False
        self._slot_claimed = True
        return True

    def _release_slot(self) -> None:
        if self._slot_claimed and self.user_id is not None:
            self.hub.release_user_slot(self.user_id)
            self._slot_claimed = False

    async def _set_user(self, user: Any, member_of: frozenset[str] | str | None = "load") -> None:
        if member_of == "load":
            member_of = await database_sync_to_async(access.member_projects)(user)
        assert not isinstance(member_of, str)
        self.user = user
        self.user_id = user.pk
        self._member_of = _shared(member_of)
        self._narrow()
        # The hub may have to start hearing this socket's shards: from then on what it may see
        # reaches it (hub.py), so only then is it told it is authenticated, or replays the log.
        await self.hub.settled()

    def _narrow(self) -> None:
        """Visible projects = membership ∩ the socket's scope; re-index in the hub."""
        if self.scope_project is not None:
            allowed = self._member_of is None or self.scope_project in self._member_of
            self.visible_projects = (
                _shared(frozenset({self.scope_project})) if allowed else frozenset()
            )
        else:
            self.visible_projects = self._member_of
        self.hub.reindex(cast("Subscriber", self))

    def apply_standing(
        self, standing: credentials.Standing | None, valid: set[str | credentials.SessionRef]
    ) -> None:
        """Called by the hub's periodic re-check: revoked credentials stop the stream (a
        deactivated user, a deleted REST token, a session ended by logout, flush, expiry or a
        password change)."""
        if self.user is None or self._closing:
            return
        key = self.credential_key()
        if standing is None or not standing.active or (key is not None and key not in valid):
            self.visible_projects = frozenset()
            self.hub.reindex(cast("Subscriber", self))
            self._close_soon(CLOSE_UNAUTHENTICATED)
            return
        member_of = None if standing.staff else standing.projects
        if member_of != self._member_of:
            self._member_of = _shared(member_of)
            self._narrow()
            if self.scope_project is not None and not self.visible_projects:
                self._close_soon(CLOSE_FORBIDDEN)

    def credential_key(self) -> str | credentials.SessionRef | None:
        cred = self.credential
        return cred.key() if cred is not None else None


# Sets of visible projects are shared between the sockets that have the same one, not copied
# per socket; they are immutable, so sharing changes nothing but memory.
_SHARED_MAX = 4096
_SHARED: dict[frozenset[str], frozenset[str]] = {}


def _shared(projects: frozenset[str] | None) -> frozenset[str] | None:
    """One instance per distinct set of projects. Bounded: past the limit, the table starts
    over (the sets already handed out stay valid)."""
    if projects is None:
        return None
    found = _SHARED.get(projects)
    if found is not None:
        return found
    if len(_SHARED) >= _SHARED_MAX:
        _SHARED.clear()
    _SHARED[projects] = projects
    return projects
