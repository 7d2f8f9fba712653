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

from devtools.servers import DEMO_PASSWORDS, AppServer, PostgresServer

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


def scenario(
    server: PostgresServer,
    name: str,
    *args: str,
    timeout: float = 90,
    module: str = "tests.test_postgres",
) -> dict[str, Any]:
    """Run `python -m <module> <name> <args>` against the cluster; its last stdout line, as
    JSON."""
    done = subprocess.run(
        [sys.executable, "-m", module, name, *args],
        cwd=ROOT,
        env=_env(server),
        capture_output=True,
        text=True,
        timeout=timeout,
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
    polls "position > last seen", as a resuming client does. Positions are stamped after
    commit, so T2 neither waits for T1 nor gets a position T1 could later land below: the
    reader sees T2's event, then T1's, nothing twice. (Run the scenario with `unordered` —
    positions taken at INSERT from the row id, no sequencer — and T1's event lands below
    what the reader has seen, and is missed: checked.)
    """
    for _ in range(3):
        result = scenario(pg, "log-order")
        assert result["missed"] == []
        assert result["seen"] == result["logged"]
        assert result["seen"] == [result["t2_id"], result["t1_id"]]  # commit order
        assert result["t2_waited"] < 0.4  # no global lock: T2 did not queue behind T1


def test_a_follower_never_skips_or_duplicates_under_racing_writers(pg: PostgresServer) -> None:
    """Writer processes publish 1-3 events per transaction, hold it open a random while and
    roll back one in four; a follower reads `GET /api/events/?after=` in a loop. What it saw
    is exactly the final log, in order, and holds every committed event and no rolled-back
    one. (With `unordered`, the follower misses events: checked.)"""
    result = scenario(pg, "follow", "8", "25")
    assert result["errors"] == []
    assert result["missed"] == [] and result["duplicated"] == []
    assert result["seen"] == result["logged"]
    assert len(result["logged"]) == result["committed"] > 0
    assert result["rolled_back"] > 0 and result["foreign"] == 0


def test_a_transient_conflict_is_retried_inside_the_service(pg: PostgresServer) -> None:
    result = scenario(pg, "retry")
    assert result["outcome"] == "started"
    assert result["retries"] >= 1  # the first attempt hit the lock timeout; a later one won
    assert result["started_events"] == 1


def test_an_exhausted_retry_answers_503_with_retry_after(pg: PostgresServer) -> None:
    result = scenario(pg, "busy")
    assert result["status"] == 503
    assert result["retry_after"] == "1"
    assert result["body"]["code"] == "busy" and result["body"]["errors"] == {}
    assert result["run_status"] == "created"  # nothing changed
    assert result["started_events"] == 0


def test_pipelines_and_rest_writers_in_one_project_never_fail_skip_or_duplicate(
    pg: PostgresServer,
) -> None:
    """The launcher that deadlocked (issue 12): 8 processes creating, starting, progressing
    and finishing runs in one project as one user, REST writers through a live uvicorn
    server, and a follower of `/api/events/` — 0 errors, 0 skipped, 0 duplicated."""
    env = {"DATABASE_URL": pg.url, "REDIS_URL": ""}
    with AppServer("uvicorn", env=env, migrate=False) as app:
        token = app.token("alice", DEMO_PASSWORDS["alice"])
        result = scenario(pg, "pipelines", app.url, token, timeout=150)
        log = app.log.read_text(errors="replace")
    assert result["errors"] == []
    assert result["http_errors"] == []
    assert result["missed"] == [] and result["duplicated"] == []
    assert result["seen"] == result["logged"]
    assert result["runs_completed"] == result["runs_planned"]
    assert "Traceback" not in log and "deadlock" not in log.lower()


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


def test_each_event_links_to_the_one_before_it_in_its_shard_under_racing_writers(
    pg: PostgresServer,
) -> None:
    """Writer processes publish into six projects (several shards) at once, 1-3 events per
    transaction, some rolled back. The link each committed event was handed off with
    (`shard_prev`, from the stamping) is the position before it in its shard in the final
    log: a hub hearing one shard follows that chain without a hole."""
    result = scenario(pg, "shard-links", "6", "20")
    assert result["errors"] == []
    assert result["checked"] == result["committed"] > 0
    assert result["shards"] > 1
    assert result["wrong"] == []


def _shard_writer(queue: Any, projects: list[str], transactions: int, seed: int) -> None:
    import random

    from django.db import connection, transaction

    from events import bus
    from events.schemas import iso_timestamp

    rng = random.Random(seed)
    links: list[tuple[int, int, int | None]] = []
    errors: list[str] = []
    for n in range(transactions):
        records = []
        try:
            with transaction.atomic():
                for k in range(rng.randint(1, 3)):
                    records.append(
                        bus.event_bus.publish(
                            "run.started",
                            {
                                "runId": f"run_s{seed:02d}n{n:03d}k{k}".ljust(24, "x"),
                                "projectId": rng.choice(projects),
                                "startedAt": iso_timestamp(),
                            },
                        )
                    )
                time.sleep(rng.uniform(0, 0.01))
                if rng.random() < 0.2:
                    raise _Rollback()
            bus.event_bus.flush(10)  # positions are stamped off this thread
            links += [(r.id, r.shard, r.shard_prev) for r in records]
        except _Rollback:
            pass
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:300])
    connection.close()
    queue.put({"links": links, "errors": errors})


def scenario_shard_links(processes: int, transactions: int) -> dict[str, Any]:
    from events.models import Event

    projects = [f"prj_{'s' * 19}{i}" for i in range(6)]
    results = _fork_all(
        _shard_writer, [(projects, transactions, seed) for seed in range(processes)]
    )
    links = [tuple(link) for r in results for link in r["links"]]
    # The truth: each shard's positions in the final log, in order.
    before: dict[int, int | None] = {}
    last: dict[int, int] = {}
    for position, shard in Event.objects.order_by("position").values_list("position", "shard"):
        before[position] = last.get(shard)
        last[shard] = position
    wrong = [link for link in links if before.get(link[0], -1) != link[2]]
    return {
        "checked": len(links),
        "committed": len(links),
        "shards": len({link[1] for link in links}),
        "wrong": wrong[:20],
        "errors": [e for r in results for e in r["errors"]],
    }


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


def _unordered() -> None:
    """The power check's broken variant: the log position taken at INSERT from the row id (a
    sequence value, as a plain BIGSERIAL cursor would be), with no sequencer."""
    from events import bus

    def insert(cursor: Any, *args: Any) -> int:
        pk = original(cursor, *args)
        cursor.execute("UPDATE events_event SET position = id WHERE id = %s", [pk])
        return pk

    original = bus._insert_event
    bus._insert_event = insert


def _log_positions(after: int) -> list[int]:
    from events.models import Event

    return list(
        Event.objects.filter(position__gt=after)
        .order_by("position")
        .values_list("position", flat=True)
    )


def _head() -> int:
    from django.db.models import Max

    from events.models import Event

    return Event.objects.aggregate(last=Max("position"))["last"] or 0


def scenario_log_order(ordered: bool = True) -> dict[str, Any]:
    from django.db import transaction

    from events import bus
    from events.schemas import iso_timestamp

    if not ordered:
        _unordered()
    _user, project = _fixture()
    baseline = _head()
    t1_logged = threading.Event()
    done = threading.Event()
    records: dict[str, Any] = {}
    waited: dict[str, float] = {}

    def publish(name: str) -> Any:
        payload = {
            "runId": "run_" + name * 20,
            "projectId": project.pk,
            "startedAt": iso_timestamp(),
        }
        return bus.event_bus.publish("run.started", payload)

    def t1() -> None:
        with transaction.atomic():
            records["t1"] = publish("a")
            t1_logged.set()
            time.sleep(0.8)  # commits late, after T2 logged and committed

    def t2() -> None:
        t1_logged.wait(10)
        began = time.monotonic()
        with transaction.atomic():
            records["t2"] = publish("b")
        waited["t2"] = time.monotonic() - began

    def reader() -> list[int]:
        # A resuming client's view: "everything after the last position I saw", over and over.
        seen: list[int] = []
        last = baseline
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            finished = done.is_set()  # read once more after the writers are done
            rows = _log_positions(last)
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
    bus.event_bus.flush(10)  # the records' positions are stamped off the writers' threads
    logged = _log_positions(baseline)
    seen = seen_box[0]
    return {
        "t1_id": records["t1"].id,
        "t2_id": records["t2"].id,
        "t2_waited": round(waited["t2"], 3),
        "seen": seen,
        "logged": logged,
        "missed": sorted(set(logged) - set(seen)),
    }


# --- many writer processes ------------------------------------------------------------------


def _fork_all(target: Callable[..., None], args_list: list[tuple[Any, ...]]) -> list[Any]:
    """Run `target(queue, *args)` in one forked process per args; return what each put."""
    import multiprocessing

    from django.db import connections

    connections.close_all()  # a forked child must open its own connection
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=target, args=(queue, *args)) for args in args_list]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(30)
    return results


def _racing_writer(
    queue: Any, project_id: str, transactions: int, ordered: bool, seed: int
) -> None:
    import random

    from django.db import connection, transaction

    from events import bus
    from events.schemas import iso_timestamp

    if not ordered:
        _unordered()
    rng = random.Random(seed)
    committed = rolled_back = 0
    errors: list[str] = []
    for n in range(transactions):
        count = rng.randint(1, 3)
        try:
            with transaction.atomic():
                for k in range(count):
                    bus.event_bus.publish(
                        "run.started",
                        {
                            "runId": f"run_w{seed:02d}n{n:03d}k{k}".ljust(24, "x"),
                            "projectId": project_id,
                            "startedAt": iso_timestamp(),
                        },
                    )
                time.sleep(rng.uniform(0, 0.015))  # commit after a random delay
                if rng.random() < 0.25:
                    raise _Rollback()
            committed += count
        except _Rollback:
            rolled_back += count
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:300])
    connection.close()
    queue.put({"committed": committed, "rolled_back": rolled_back, "errors": errors})


class _Rollback(Exception):
    pass


def _api_follower(
    fetch: Callable[[int], dict[str, Any]], done: threading.Event, errors: list[str] | None = None
) -> list[int]:
    """Follow `GET /api/events/?after=` until the writers are done, then read once more.
    A failed read is recorded in `errors` (if given) and tried again."""
    seen: list[int] = []
    last = 0
    while True:
        finished = done.is_set()
        while True:
            try:
                body = fetch(last)
            except Exception as exc:
                if errors is None or len(errors) > 20:
                    raise
                errors.append(f"follower: {exc}"[:200])
                time.sleep(0.05)
                continue
            ids = [event["id"] for event in body["results"]]
            seen += ids
            last = ids[-1] if ids else last
            if body["next"] is None:
                break
        if finished:
            return seen
        time.sleep(0.005)


def _verdict(seen: list[int], logged: list[int]) -> dict[str, Any]:
    counts: dict[int, int] = {}
    for pos in seen:
        counts[pos] = counts.get(pos, 0) + 1
    return {
        "seen": seen,
        "logged": logged,
        "missed": sorted(set(logged) - set(seen)),
        "duplicated": sorted(pos for pos, n in counts.items() if n > 1),
    }


def scenario_follow(processes: int, transactions: int, ordered: bool = True) -> dict[str, Any]:
    from django.contrib.auth.models import User
    from rest_framework.test import APIClient

    _user, project = _fixture()
    staff, _ = User.objects.get_or_create(username="pg-staff", defaults={"is_staff": True})
    baseline = _head()
    done = threading.Event()

    def fetch(after: int) -> dict[str, Any]:
        client = APIClient()
        client.force_authenticate(staff)
        response = client.get(
            "/api/events/", {"after": max(after, baseline), "project": project.pk, "limit": 1000}
        )
        assert response.status_code == 200, response.status_code
        return response.json()  # type: ignore[no-any-return]

    seen_box: list[list[int]] = []
    follower = threading.Thread(
        target=lambda: seen_box.append(_in_thread(lambda: _api_follower(fetch, done))())
    )
    follower.start()
    results = _fork_all(
        _racing_writer,
        [(project.pk, transactions, ordered, seed) for seed in range(processes)],
    )
    done.set()
    follower.join(60)
    logged = _log_positions(baseline)
    from events.models import Event

    foreign = Event.objects.filter(position__gt=baseline).exclude(project_id=project.pk).count()
    return {
        **_verdict(seen_box[0], logged),
        "committed": sum(r["committed"] for r in results),
        "rolled_back": sum(r["rolled_back"] for r in results),
        "errors": [e for r in results for e in r["errors"]],
        "foreign": foreign,
    }


# --- transient conflicts ----------------------------------------------------------------------


def _hold_run_lock(run_id: str, locked: threading.Event, release: threading.Event) -> None:
    """Another connection holding the run's row lock until told to let go."""
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM runs_run WHERE id = %s FOR UPDATE", [run_id])
        locked.set()
        release.wait(20)


def _lock_timeout(ms: int) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"SET lock_timeout = '{int(ms)}ms'")


def scenario_retry() -> dict[str, Any]:
    from runs import services

    user, project = _fixture()
    run = services.create_run(project, "Retried", ["A"], user)
    locked, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_in_thread(lambda: _hold_run_lock(run.pk, locked, release)))
    holder.start()
    locked.wait(10)
    _lock_timeout(100)
    retries = 0
    real_sleep = services.time.sleep

    def counting_sleep(seconds: float) -> None:
        nonlocal retries
        retries += 1
        release.set()  # the conflict goes away after the first failed attempt
        real_sleep(seconds)

    services.time.sleep = counting_sleep  # type: ignore[assignment]
    try:
        services.start_run(run.pk)
        outcome = "started"
    except services.ServiceBusy:
        outcome = "busy"
    finally:
        services.time.sleep = real_sleep  # type: ignore[assignment]
        release.set()
        holder.join(10)
    return {"outcome": outcome, "retries": retries, "started_events": _started_events(run.pk)}


def scenario_busy() -> dict[str, Any]:
    from rest_framework.test import APIClient

    from runs import services
    from runs.models import Run

    user, project = _fixture()
    run = services.create_run(project, "Busy", ["A"], user)
    locked, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_in_thread(lambda: _hold_run_lock(run.pk, locked, release)))
    holder.start()
    locked.wait(10)
    _lock_timeout(30)
    client = APIClient()
    client.force_authenticate(user)
    try:
        response = client.post(f"/api/runs/{run.pk}/start/")
    finally:
        release.set()
        holder.join(10)
    return {
        "status": response.status_code,
        "retry_after": response.get("Retry-After"),
        "body": response.json(),
        "run_status": Run.objects.get(pk=run.pk).status,
        "started_events": _started_events(run.pk),
    }


# --- the launcher (issue 12's "done when") ------------------------------------------------------

PIPELINE_STAGES = ["Ingest", "Model"]


def _pipeline(queue: Any, username: str, project_id: str, runs: int, seed: int) -> None:
    from django.contrib.auth.models import User
    from django.db import connection

    from runs import services
    from runs.models import Project

    errors: list[str] = []
    completed = 0
    user = User.objects.get(username=username)
    project = Project.objects.get(pk=project_id)
    for n in range(runs):
        try:
            run = services.create_run(project, f"Pipeline {seed}.{n}", PIPELINE_STAGES, user)
            services.start_run(run.pk)
            for stage in run.stages.order_by("position"):
                services.start_stage(stage.pk)
                for progress in (30, 60, 90):
                    services.report_progress(stage.pk, progress, items_processed=progress)
                services.complete_stage(stage.pk)
            services.complete_run(run.pk)
            completed += 1
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:300])
    connection.close()
    queue.put({"errors": errors, "completed": completed})


def _rest_writer(base: str, token: str, project_id: str, runs: int, out: dict[str, Any]) -> None:
    import urllib.error
    import urllib.request

    def call(method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        req.add_header("Authorization", f"Token {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            out["http_errors"].append(f"{method} {path.split('/')[2]}: {exc.code}")
            raise

    for n in range(runs):
        try:
            run = call(
                "POST",
                "/api/runs/",
                {"projectId": project_id, "name": f"REST {n}", "stages": ["S"]},
            )
            call("POST", f"/api/runs/{run['id']}/start/")
            stage_id = run["stages"][0]["id"]
            call("POST", f"/api/stages/{stage_id}/start/")
            call("POST", f"/api/stages/{stage_id}/progress/", {"progress": 50})
            call("POST", f"/api/stages/{stage_id}/complete/")
            call("POST", f"/api/runs/{run['id']}/complete/")
            out["completed"] += 1
        except Exception as exc:
            if not out["http_errors"]:
                out["http_errors"].append(f"{type(exc).__name__}")


def scenario_pipelines(base: str, token: str) -> dict[str, Any]:
    import urllib.request

    from django.contrib.auth.models import User

    from runs.models import Membership

    alice = User.objects.get(username="alice")
    project_id = Membership.objects.filter(user=alice).values_list("project_id", flat=True)[0]

    def fetch(after: int) -> dict[str, Any]:
        req = urllib.request.Request(f"{base}/api/events/?after={after}&limit=1000")
        req.add_header("Authorization", f"Token {token}")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]

    baseline = fetch(0)["lastEventId"]
    done = threading.Event()
    seen_box: list[list[int]] = []
    processes, per_process, rest_threads, per_thread = 8, 4, 3, 3
    rest: dict[str, Any] = {"http_errors": [], "completed": 0}
    follower = threading.Thread(
        target=lambda: seen_box.append(
            _api_follower(lambda a: fetch(max(a, baseline)), done, rest["http_errors"])
        )
    )
    follower.start()
    writers = [
        threading.Thread(target=_rest_writer, args=(base, token, project_id, per_thread, rest))
        for _ in range(rest_threads)
    ]
    for writer in writers:
        writer.start()
    results = _fork_all(
        _pipeline, [("alice", project_id, per_process, seed) for seed in range(processes)]
    )
    for writer in writers:
        writer.join(120)
    done.set()
    follower.join(60)
    logged: list[int] = []
    after = baseline
    while True:
        body = fetch(after)
        logged += [event["id"] for event in body["results"]]
        after = logged[-1] if logged else after
        if body["next"] is None:
            break
    return {
        **_verdict(seen_box[0], logged),
        "errors": [e for r in results for e in r["errors"]],
        "http_errors": rest["http_errors"],
        "runs_planned": processes * per_process + rest_threads * per_thread,
        "runs_completed": sum(r["completed"] for r in results) + rest["completed"],
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
        result = scenario_log_order(ordered=argv[1:] != ["unordered"])
    elif name == "follow":
        processes, transactions = int(argv[1]), int(argv[2])
        result = scenario_follow(processes, transactions, ordered=argv[3:] != ["unordered"])
    elif name == "shard-links":
        result = scenario_shard_links(int(argv[1]), int(argv[2]))
    elif name == "retry":
        result = scenario_retry()
    elif name == "busy":
        result = scenario_busy()
    elif name == "pipelines":
        result = scenario_pipelines(argv[1], argv[2])
    else:
        raise SystemExit(f"unknown scenario {name!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
