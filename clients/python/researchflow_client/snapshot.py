"""`load_run`: one run's current state, read over the REST API (`GET /api/runs/<id>/`).

This is what a client does on `resync.required` ("the log no longer holds what was missed"):
load the run's current state here, then keep iterating the same stream for the live events.

    run = load_run("ws://localhost:3001/ws", token=token, run_id=run_id)
    run.status, [(stage.name, stage.progress) for stage in run.stages]

What stays true, and why:
- The REST address is derived from the socket's URL, so a caller configures one URL: `ws://`
  becomes `http://`, `wss://` becomes `https://` (with the same `ssl.SSLContext`), the host
  and port stay, and the path's final `/ws` is replaced by `/api/runs/<id>/`; whatever comes
  before `/ws` (a reverse proxy's prefix, `wss://host/rf/ws` → `https://host/rf/api/...`) is
  kept. A URL whose path does not end in `/ws` is refused (InvalidURL): there is no rule to
  guess the API's address from it.
- The token goes only in the `Authorization: Token …` header, never in the URL, a log line
  or an error message. Redirects are not followed (an error instead): a redirect could carry
  the header to another host.
- Errors are the socket's: 401/403 → AuthFailed (the token is wrong, expired or revoked; a
  short-lived socket token from `POST /api/ws/token/` is not accepted by the REST API); 404 →
  AuthFailed with the socket's own words, "run not found or not accessible", since the API
  answers 404 alike for an unknown run and for someone else's; no connection, a timeout or
  a 5xx → ServerUnavailable; anything else → ClientError.
- Stdlib `urllib` only: no new dependency. It is blocking; async code calls it in a thread
  (`RunEvents.load_run()` does).
"""

from __future__ import annotations

import http.client
import json
import ssl as ssl_module
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from .errors import AuthFailed, ClientError, InvalidURL, ServerUnavailable
from .urls import check_url

# The socket's `auth.failed` message for a run it will not show: the same words, so a caller
# cannot tell "unknown" from "not yours" over REST either.
RUN_NOT_ACCESSIBLE = "run not found or not accessible"
MAX_BODY_BYTES = 16 << 20  # a run with 100 stages and many artifacts is far below this


class _Model(BaseModel):
    # camelCase on the wire as the server sends it, snake_case in Python; fields a newer server
    # adds are ignored.
    model_config = ConfigDict(
        extra="ignore", alias_generator=to_camel, populate_by_name=True, frozen=True
    )


class StageSnapshot(_Model):
    id: str
    run_id: str
    stage_index: int
    name: str
    status: str  # pending, running, completed, failed
    progress: int  # percent, 0..100
    items_processed: int | None = None
    items_total: int | None = None
    status_message: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error_code: str | None = None


class ArtifactSnapshot(_Model):
    id: str
    run_id: str
    stage_id: str | None = None
    kind: str
    name: str
    size_bytes: int
    content_type: str
    checksum: str | None = None
    created_at: datetime


class ApprovalSnapshot(_Model):
    id: str  # the governanceId of the events
    run_id: str
    governance_type: str
    priority: str
    status: str  # pending, granted, denied
    assigned_to: list[str] = []
    decided_by: str | None = None
    reason_code: str | None = None
    requested_at: datetime
    decided_at: datetime | None = None


class RunSnapshot(_Model):
    """`GET /api/runs/<id>/` as the server sends it: the run, its stages (in order), artifacts
    and approvals."""

    id: str
    project_id: str
    name: str
    status: str  # created, running, completed, failed
    created_by: str
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    estimated_duration: int | None = None  # milliseconds
    error_code: str | None = None
    stages: list[StageSnapshot] = []
    artifacts: list[ArtifactSnapshot] = []
    approvals: list[ApprovalSnapshot] = []

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed")


def api_url(ws_url: str, path: str) -> str:
    """The REST URL of `path` (e.g. `/api/runs/run_…/`) on the server whose socket is `ws_url`
    (see the module's docstring for the rule)."""
    parts = urllib.parse.urlsplit(check_url(ws_url))
    prefix = parts.path.rstrip("/")
    if not prefix.endswith("/ws"):
        raise InvalidURL(
            ws_url,
            "cannot derive the REST API's address from it: the socket's path must end in /ws",
        )
    scheme = "https" if parts.scheme == "wss" else "http"
    return urllib.parse.urlunsplit((scheme, parts.netloc, prefix[: -len("/ws")] + path, "", ""))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx status


def load_run(
    url: str,
    *,
    token: str,
    run_id: str,
    ssl: ssl_module.SSLContext | None = None,
    timeout: float = 10.0,
) -> RunSnapshot:
    """The current state of run `run_id`, over the REST API of the server whose socket is `url`
    (`ws://…/ws`), with the same token and SSL context. Raises AuthFailed (token refused; run
    unknown or not yours), ServerUnavailable, InvalidURL or ClientError."""
    if not isinstance(token, str) or not token:
        raise ValueError("token= is required: a REST API token (POST /api/auth/token/)")
    if not isinstance(run_id, str) or not run_id:
        raise ValueError("run_id= is required")
    if ssl is not None and not url.startswith("wss://"):
        raise InvalidURL(url, "an SSL context was given but the URL is ws://; use wss://")
    target = api_url(url, f"/api/runs/{urllib.parse.quote(run_id, safe='')}/")
    # S310: `target` is http(s):// by construction (api_url), never file: or a custom scheme.
    request = urllib.request.Request(target, headers={"Accept": "application/json"})  # noqa: S310
    request.add_unredirected_header("Authorization", f"Token {token}")
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ssl), _NoRedirect())
    try:
        with opener.open(request, timeout=timeout) as response:
            body = response.read(MAX_BODY_BYTES + 1)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise _http_error(target, exc.code) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise ServerUnavailable(target, 1, _describe(reason)) from None
    if len(body) > MAX_BODY_BYTES:
        raise ClientError(f"GET {target} answered more than {MAX_BODY_BYTES} bytes")
    try:
        return RunSnapshot.model_validate(json.loads(body))
    except (ValueError, ValidationError) as exc:
        # Field names and pydantic's error kinds only, never a value.
        what = (
            "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['type']}" for e in exc.errors()[:3])
            if isinstance(exc, ValidationError)
            else "not JSON"
        )
        raise ClientError(f"GET {target} answered something that is not a run ({what})") from None


def _http_error(target: str, status: int) -> ClientError:
    if status in (401, 403):
        return AuthFailed(f"the REST API refused the token (HTTP {status})")
    if status == 404:
        return AuthFailed(RUN_NOT_ACCESSIBLE)
    if status >= 500 or status in (408, 429):
        return ServerUnavailable(target, 1, f"HTTP {status}")
    if 300 <= status < 400:
        return ClientError(
            f"GET {target} answered a redirect (HTTP {status}), which is not followed: "
            "use the server's own URL"
        )
    return ClientError(f"GET {target} answered HTTP {status}")


def _describe(exc: object) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:200] + "…"
