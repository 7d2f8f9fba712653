"""A demo run driven through its life over the REST API, at a human pace.

`run_demo()` is what `manage.py demo_run` and the dashboard's "Start demo run" button (in a
background thread) call. It creates a run, starts it, walks each stage from 0 to 100 %, adds
two artifacts, requests an approval and grants it, and completes the run, logging each step
(`obtain_token()` logs in for the token it needs). With `await_approval` it behaves like a
pipeline gated on a person instead: after the first stage it waits until someone grants the
approval (from the dashboard's approvals inbox, or the API) and then goes on; a denial fails
the run with `APPROVAL_DENIED`, and no decision within `approval_timeout` stops it.

It talks HTTP only (`urllib`), like any outside client would, so the events it causes are
exactly those a real worker causes. An unreachable server or a failed login raises DemoError
with one clear line.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

DEFAULT_URL = "http://localhost:3001"
DEFAULT_PASSWORD = "admin-dev-pass"  # seed_demo's dev-only default
TIMEOUT = 15.0
STAGES = ["Load data", "Clean data", "Analyse", "Report"]
ROWS = 1000
PROGRESS_STEPS = (0, 20, 40, 60, 80, 100)
APPROVAL_TIMEOUT = 600.0  # seconds a gated run waits for a person before it gives up
APPROVAL_POLL = 0.5  # seconds between looks at the approval while waiting

Log = Callable[[str], object]


class DemoError(Exception):
    """A step failed; the message is one line meant for a person."""


class ApiClient:
    """A minimal JSON client for our REST API. Never logs the token."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = TIMEOUT) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise DemoError(f"--url must be an http:// or https:// URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = f"{self.base_url}{path}"
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310 (scheme checked above)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise DemoError(f"{method} {path}: HTTP {exc.code}: {_detail(exc)}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DemoError(f"cannot reach {self.base_url} ({reason})") from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise DemoError(f"{method} {path}: the server did not answer JSON") from None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, body if body is not None else {})


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read() or b"{}")
    except ValueError:
        return exc.reason or "error"
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return body["detail"]
    return str(exc.reason or "error")


def obtain_token(base_url: str, username: str, password: str) -> str:
    client = ApiClient(base_url)
    try:
        answer = client.post("/api/auth/token/", {"username": username, "password": password})
    except DemoError as exc:
        if "HTTP 400" in str(exc) or "HTTP 401" in str(exc):
            raise DemoError(f"login as {username!r} failed: wrong username or password") from None
        raise
    token = answer.get("token") if isinstance(answer, dict) else None
    if not isinstance(token, str):
        raise DemoError("login answered without a token")
    return token


def _pick_project(client: ApiClient, log: Log) -> str:
    page = client.get("/api/projects/?limit=1000")
    for project in page.get("results", []):
        if project.get("role") in ("owner", "member"):
            return str(project["id"])
    created = client.post("/api/projects/", {"name": "Demo project"})
    log(f"created project {created['id']}")
    return str(created["id"])


def run_demo(
    base_url: str,
    token: str,
    project_id: str | None = None,
    pace: float = 0.5,
    log: Log = print,
    *,
    await_approval: bool = False,
    assign_to: Sequence[str] = (),
    approval_timeout: float = APPROVAL_TIMEOUT,
) -> str:
    """Drive one demo run to completion over the REST API; return its id.

    `assign_to`: usernames the approval is assigned to. `await_approval`: wait for a person to
    decide it (see the module docstring) instead of granting it itself.

    Raises DemoError on the first failed step (after trying to mark the run failed, so a
    dashboard does not show it running for ever).
    """
    client = ApiClient(base_url, token)
    gate = _Gate(await_approval, list(assign_to), approval_timeout)

    def pause() -> None:
        if pace > 0:
            time.sleep(pace)

    project_id = project_id or _pick_project(client, log)
    name = f"Demo run {datetime.now(UTC):%Y-%m-%d %H:%M:%S}"
    run = client.post(
        "/api/runs/",
        {
            "projectId": project_id,
            "name": name,
            "stages": STAGES,
            "estimatedDuration": int(max(pace, 0.1) * 1000 * len(STAGES) * 8),
        },
    )
    run_id = str(run["id"])
    log(f"created run {run_id} in project {project_id} ({len(STAGES)} stages)")
    try:
        _drive(client, run, pause, log, gate)
    except DemoError:
        try:
            client.post(f"/api/runs/{run_id}/fail/", {"errorCode": "INTERNAL_ERROR"})
            log(f"marked run {run_id} failed")
        except DemoError:
            pass
        raise
    return run_id


@dataclass(frozen=True)
class _Gate:
    wait: bool
    assign_to: list[str]
    timeout: float


def _await_decision(client: ApiClient, run_id: str, approval_id: str, timeout: float) -> str:
    """Poll the run until the approval is decided; its status. DemoError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        run = client.get(f"/api/runs/{run_id}/")
        found = [a for a in run.get("approvals", []) if a.get("id") == approval_id]
        if not found:
            raise DemoError(f"approval {approval_id} is gone")
        status = str(found[0].get("status"))
        if status != "pending":
            return status
        if run.get("status") not in ("created", "running"):
            raise DemoError(f"run {run_id} ended ({run.get('status')}) while waiting")
        left = deadline - time.monotonic()
        if left <= 0:
            raise DemoError(f"approval {approval_id} was not decided within {timeout:g} s")
        time.sleep(min(APPROVAL_POLL, left))


def _drive(
    client: ApiClient, run: dict[str, Any], pause: Callable[[], None], log: Log, gate: _Gate
) -> None:
    run_id = run["id"]
    pause()
    client.post(f"/api/runs/{run_id}/start/")
    log("run started")
    approval = client.post(
        f"/api/runs/{run_id}/approvals/",
        {"governanceType": "PHI_SCAN", "priority": "HIGH", "assignedTo": gate.assign_to},
    )
    assignees = f", assigned to {', '.join(gate.assign_to)}" if gate.assign_to else ""
    log(f"approval {approval['id']} requested (PHI_SCAN, HIGH{assignees})")
    for index, stage in enumerate(run["stages"]):
        pause()
        client.post(f"/api/stages/{stage['id']}/start/")
        log(f"stage {index + 1}/{len(run['stages'])} started: {stage['name']}")
        for percent in PROGRESS_STEPS:
            pause()
            done = ROWS * percent // 100
            client.post(
                f"/api/stages/{stage['id']}/progress/",
                {
                    "progress": percent,
                    "itemsProcessed": done,
                    "itemsTotal": ROWS,
                    "statusMessage": f"Processing {done} of {ROWS} rows",
                },
            )
            log(f"  {percent:3d}%  Processing {done} of {ROWS} rows")
        client.post(f"/api/stages/{stage['id']}/complete/")
        log(f"stage {index + 1} completed")
        if index == 0 and gate.wait:
            log(f"waiting for a decision on approval {approval['id']}")
            decision = _await_decision(client, run_id, approval["id"], gate.timeout)
            log(f"approval {approval['id']} {decision}")
            if decision != "granted":
                client.post(f"/api/runs/{run_id}/fail/", {"errorCode": "APPROVAL_DENIED"})
                log(f"run {run_id} failed: approval denied")
                return
        elif index == 0:
            pause()
            client.post(f"/api/approvals/{approval['id']}/grant/", {"reasonCode": "DEIDENTIFIED"})
            log(f"approval {approval['id']} granted")
        if index == 2:
            artifact = client.post(
                f"/api/runs/{run_id}/artifacts/",
                {
                    "kind": "dataset",
                    "name": "analysis_results.parquet",
                    "sizeBytes": 482_113,
                    "contentType": "application/octet-stream",
                    "stageId": stage["id"],
                },
            )
            log(f"artifact {artifact['id']} added: {artifact['name']}")
    artifact = client.post(
        f"/api/runs/{run_id}/artifacts/",
        {
            "kind": "report",
            "name": "demo_report.pdf",
            "sizeBytes": 120_551,
            "contentType": "application/pdf",
        },
    )
    log(f"artifact {artifact['id']} added: {artifact['name']}")
    pause()
    client.post(f"/api/runs/{run_id}/complete/")
    log(f"run {run_id} completed")
