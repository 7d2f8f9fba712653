"""Helpers for the client's tests against a live server (devtools.servers.AppServer): a run
driven over the REST API, the log's ids of a run, and bounded waits.

The client package never imports the server; its tests may (they start one).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from devtools.servers import DEMO_PASSWORDS, AppServer

STAGES = ["Ingest", "Model"]


def token(app: AppServer, username: str = "alice") -> str:
    return app.token(username, DEMO_PASSWORDS[username])


def project_of(app: AppServer, api_token: str) -> str:
    projects = app.api("GET", "/api/projects/", token=api_token)
    results = projects["results"] if isinstance(projects, dict) else projects
    return str(results[0]["id"])


def create_run(app: AppServer, api_token: str, name: str = "Client run") -> dict[str, Any]:
    project = project_of(app, api_token)
    body = {"projectId": project, "name": name, "stages": STAGES}
    run: dict[str, Any] = app.api("POST", "/api/runs/", body, api_token)
    return run


def drive(
    app: AppServer | Callable[[], AppServer],
    api_token: str,
    run: dict[str, Any],
    *,
    pace: float = 0.0,
    progress_steps: int = 3,
    fail: bool = False,
) -> None:
    """Take `run` (as created) to its end over the REST API: start, each stage 0→100 %, an
    artifact, an approval granted, then completed (or failed). `app` may be a callable, for a
    test that swaps the server mid-run."""

    def post(path: str, body: dict[str, Any] | None = None) -> Any:
        server = app() if callable(app) else app
        if pace:
            time.sleep(pace)
        return server.api("POST", path, body or {}, api_token)

    run_id = run["id"]
    post(f"/api/runs/{run_id}/start/")
    approval = post(
        f"/api/runs/{run_id}/approvals/", {"governanceType": "PHI_SCAN", "priority": "HIGH"}
    )
    for stage in run["stages"]:
        post(f"/api/stages/{stage['id']}/start/")
        for step in range(1, progress_steps + 1):
            percent = step * 100 // progress_steps
            post(
                f"/api/stages/{stage['id']}/progress/",
                {"progress": percent, "itemsProcessed": percent, "itemsTotal": 100},
            )
        post(f"/api/stages/{stage['id']}/complete/")
    post(f"/api/approvals/{approval['id']}/grant/", {"reasonCode": "DEIDENTIFIED"})
    post(
        f"/api/runs/{run_id}/artifacts/",
        {
            "kind": "dataset",
            "name": "results.parquet",
            "sizeBytes": 10,
            "contentType": "application/octet-stream",
        },
    )
    if fail:
        post(f"/api/runs/{run_id}/fail/", {"errorCode": "TIMEOUT"})
    else:
        post(f"/api/runs/{run_id}/complete/")


def in_background(target: Callable[[], None]) -> threading.Thread:
    """Run `target` in a daemon thread; join() re-raises nothing, so check `.error`."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.errors = errors  # type: ignore[attr-defined]
    thread.start()
    return thread


def wait_for(predicate: Callable[[], Any], limit: float = 20, step: float = 0.05) -> Any:
    deadline = time.monotonic() + limit
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)
