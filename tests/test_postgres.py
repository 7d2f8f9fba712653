"""PostgreSQL, for real: a throw-away cluster per module, migrations, row-locked transitions
and the event log's promise under concurrent writers.

Each check runs in a subprocess (`python -m tests.test_postgres <scenario>`) whose Django
points at the cluster through DATABASE_URL: the pytest process keeps its own SQLite test
database, and the scenarios get real connections, one per thread, as in production.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.postgres, pytest.mark.e2e]


# --- the pytest side -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer()
    except RuntimeError as exc:  # binaries not installed
        pytest.skip(str(exc))
    with server, tempfile.TemporaryDirectory(prefix="rf-pgtest-") as var:
        server.var_dir = var  # type: ignore[attr-defined]
        manage(server, "migrate", "--noinput")
        yield server


def _env(server: PostgresServer) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "researchflow.settings",
        "DATABASE_URL": server.url,
        "DEBUG": "1",
        "RESEARCHFLOW_VAR_DIR": server.var_dir,  # type: ignore[attr-defined]
        "REDIS_URL": "",
    }


def manage(server: PostgresServer, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=_env(server),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def scenario(server: PostgresServer, name: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.test_postgres", name, *args],
        cwd=ROOT,
        env=_env(server),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_it_applies_every_migration(pg: PostgresServer) -> None:
    manage(pg, "migrate", "--check")  # exits non-zero if anything is unapplied
    result = scenario(pg, "vendor")
    assert result == {"vendor": "postgresql", "tables": True}


def test_a_run_started_twice_at_once_starts_once(pg: PostgresServer) -> None:
    result = scenario(pg, "start-race")
    # Free race: both threads released together, ten times over.
    assert result["race_outcomes"] == [["ok", "conflict"]] * 10
    assert result["race_started_events"] == [1] * 10
    # Forced interleave: the second caller arrives while the first still holds the row lock.
    assert result["held"]["first"] == "ok"
    assert result["held"]["second"] == "conflict"
    assert result["held"]["second_waited"] >= 0.4  # it queued behind the lock
    assert result["held"]["started_events"] == 1


def test_resume_never_skips_an_event_that_committed_late(pg: PostgresServer) -> None:
    """T1 logs an event and holds its transaction open; T2 logs one and commits; a reader
    polls "id > last seen", as a resuming client does. The log lock makes T2 wait for T1, so
    ids commit in order and the reader sees both. (Without `lock_log` — run the scenario with
    `nolock` — T2 commits first, the reader moves past T1's id, and this test fails: checked.)
    """
    for _ in range(3):
        result = scenario(pg, "log-order")
        assert result["missed"] == []
        assert result["t1_id"] < result["t2_id"]
        assert result["t2_waited"] >= 0.4  # T2's insert queued behind T1's open transaction
        assert result["seen"] == [result["t1_id"], result["t2_id"]]


# --- the scenario side (in a subprocess with DATABASE_URL set) -----------------------------


def _in_thread(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Each thread has its own connection in Django; close it when the thread is done."""

    def wrapped() -> Any:
        from django.db import connection

        try:
            return fn()
        finally:
            connection.close()

    return wrapped


def _run_threads(*fns: Callable[[], Any]) -> list[Any]:
    results: list[Any] = [None] * len(fns)

    def runner(i: int, fn: Callable[[], Any]) -> None:
        try:
            results[i] = _in_thread(fn)()
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=runner, args=(i, fn)) for i, fn in enumerate(fns)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for result in results:
        if isinstance(result, BaseException) and not _is_conflict(result):
            raise result
    return results


def _is_conflict(exc: BaseException) -> bool:
    from runs.services import TransitionError

    return isinstance(exc, TransitionError)


def _fixture() -> tuple[Any, Any]:
    from django.contrib.auth.models import User

    from runs import services

    user, _ = User.objects.get_or_create(username="pg-owner")
    return user, services.create_project("PostgreSQL checks", owner=user)


def _started_events(run_id: str) -> int:
    from events.models import Event

    return Event.objects.filter(type="run.started", run_id=run_id).count()


def scenario_vendor() -> dict[str, Any]:
    from django.db import connection

    tables = set(connection.introspection.table_names())
    return {
        "vendor": connection.vendor,
        "tables": {"events_event", "runs_run", "runs_stage"} <= tables,
    }


def scenario_start_race() -> dict[str, Any]:
    from django.db import transaction

    from runs import services

    user, project = _fixture()
    outcomes, counts = [], []
    for i in range(10):
        run = services.create_run(project, f"Race {i}", ["A"], user)
        barrier = threading.Barrier(2)

        def start(run_id: str = run.pk, barrier: threading.Barrier = barrier) -> str:
            barrier.wait(5)
            services.start_run(run_id)
            return "ok"

        results = _run_threads(start, start)
        outcomes.append(sorted("conflict" if _is_conflict(r) else r for r in results)[::-1])
        counts.append(_started_events(run.pk))

    run = services.create_run(project, "Held", ["A"], user)
    locked = threading.Event()
    waited: dict[str, float] = {}

    def first() -> str:
        with transaction.atomic():
            services.start_run(run.pk)
            locked.set()
            time.sleep(0.6)  # hold the row lock (and the log lock) open
        return "ok"

    def second() -> str:
        locked.wait(10)
        began = time.monotonic()
        try:
            services.start_run(run.pk)
        finally:
            waited["second"] = time.monotonic() - began
        return "ok"

    results = _run_threads(first, second)
    return {
        "race_outcomes": outcomes,
        "race_started_events": counts,
        "held": {
            "first": "conflict" if _is_conflict(results[0]) else results[0],
            "second": "conflict" if _is_conflict(results[1]) else results[1],
            "second_waited": round(waited["second"], 3),
            "started_events": _started_events(run.pk),
        },
    }


def scenario_log_order(lock: bool = True) -> dict[str, Any]:
    from django.db import transaction
    from django.db.models import Max

    from events import bus
    from events.models import Event
    from events.schemas import iso_timestamp

    if not lock:
        bus.lock_log = lambda using="default": None  # the power check: see the test's docstring
    _user, project = _fixture()
    baseline = Event.objects.aggregate(last=Max("id"))["last"] or 0
    t1_logged = threading.Event()
    done = threading.Event()
    ids: dict[str, int] = {}
    waited: dict[str, float] = {}

    def publish(name: str) -> int:
        payload = {
            "runId": "run_" + name * 20,
            "projectId": project.pk,
            "startedAt": iso_timestamp(),
        }
        return bus.event_bus.publish("run.started", payload).id

    def t1() -> None:
        with transaction.atomic():
            ids["t1"] = publish("a")
            t1_logged.set()
            time.sleep(0.8)  # commits late, after T2 tried to log

    def t2() -> None:
        t1_logged.wait(10)
        began = time.monotonic()
        with transaction.atomic():
            ids["t2"] = publish("b")
        waited["t2"] = time.monotonic() - began

    def reader() -> list[int]:
        # A resuming client's view: "everything after the last id I saw", over and over.
        seen: list[int] = []
        last = baseline
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            finished = done.is_set()  # read once more after the writers are done
            rows = list(
                Event.objects.filter(id__gt=last).order_by("id").values_list("id", flat=True)
            )
            seen += rows
            last = rows[-1] if rows else last
            if finished:
                break
            time.sleep(0.005)
        return seen

    seen_box: list[list[int]] = []
    reading = threading.Thread(target=lambda: seen_box.append(_in_thread(reader)()))
    reading.start()
    _run_threads(t1, t2)
    done.set()
    reading.join(30)
    logged = list(Event.objects.filter(id__gt=baseline).order_by("id").values_list("id", flat=True))
    seen = seen_box[0]
    return {
        "t1_id": ids["t1"],
        "t2_id": ids["t2"],
        "t2_waited": round(waited["t2"], 3),
        "seen": seen,
        "missed": sorted(set(logged) - set(seen)),
    }


def main(argv: list[str]) -> None:
    import django

    django.setup()
    name = argv[0]
    if name == "vendor":
        result = scenario_vendor()
    elif name == "start-race":
        result = scenario_start_race()
    elif name == "log-order":
        result = scenario_log_order(lock=argv[1:] != ["nolock"])
    else:
        raise SystemExit(f"unknown scenario {name!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
