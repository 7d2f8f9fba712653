"""The errors the client raises: each says what happened and what the caller can do about it.

Messages never carry the token (or any other credential).
"""

from __future__ import annotations


class ClientError(Exception):
    """Base of every error this package raises."""


class InvalidURL(ClientError):
    """The URL is not a `ws://` or `wss://` URL the client can connect to."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"invalid server URL {url!r}: {reason} (expected e.g. ws://host:3001/ws)")


class AuthFailed(ClientError):
    """The server answered the `auth` message with `auth.failed`: a wrong or expired token, or a
    run / project that does not exist or that this user may not see (the server does not say
    which, on purpose). Not retried: the same request would be refused again."""

    def __init__(self, message: str) -> None:
        self.server_message = message
        super().__init__(
            f"authentication refused by the server: {message} "
            "(check the token, and that the run or project exists and you are a member)"
        )


class AccessRevoked(ClientError):
    """The server closed an authenticated socket with 4401 (credentials revoked, session ended)
    or 4403 (permission withdrawn). Not retried."""

    def __init__(self, code: int, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        what = (
            "the token was revoked or the session ended"
            if code == 4401
            else "permission to see this run or project was withdrawn"
        )
        detail = f" ({reason})" if reason else ""
        super().__init__(
            f"the server closed the connection with {code}: {what}{detail}; "
            "get a new token (POST /api/auth/token/) or ask for access"
        )


class ResyncRequired(ClientError):
    """The server's log no longer holds every event after the cursor (pruned, or too many to
    replay): reload the current state over REST (`load_run` / `RunEvents.load_run()`, which
    read `GET /api/runs/<id>/`; for a project, `GET /api/events/?after=...`), then keep
    iterating: the socket stays subscribed and the live events follow."""

    def __init__(self, last_event_id: int | None, oldest_event_id: int | None) -> None:
        self.last_event_id = last_event_id
        self.oldest_event_id = oldest_event_id
        super().__init__(
            f"the server cannot replay the events after #{last_event_id}: its log starts at "
            f"#{oldest_event_id}; reload the state over REST and follow on from a newer id"
        )


class ServerUnavailable(ClientError):
    """Connecting (or reconnecting) failed `attempts` times in a row."""

    def __init__(self, url: str, attempts: int, cause: str = "") -> None:
        self.url = url
        self.attempts = attempts
        self.cause = cause
        detail = f"; last error: {cause}" if cause else ""
        super().__init__(
            f"cannot reach the ResearchFlow server at {url} after {attempts} attempt(s){detail}; "
            "is it running, and is the URL right?"
        )
