"""The gateway as a cluster on one machine: its own Redis and PostgreSQL, K server processes
sharing them, M publisher processes committing real changes, N clients spread over the servers;
events/s from commit to socket, latency, loss, and each process's CPU per event.

    .venv/bin/python bench/cluster.py                          # K=2, M=2, 400 clients, P=8
    .venv/bin/python bench/cluster.py --servers 3 --publishers 4 --clients 1000 --projects 16
    .venv/bin/python bench/cluster.py --spread 1.0             # every project on every server

Shape. PostgreSQL (durable, as bench/postgres.py starts it; `--no-fsync` to lift the WAL
flush) and redis-server on loopback. K servers: `manage.py serve --server uvicorn`, one process
each, with REDIS_URL and DATABASE_URL set; whatever routing the code does (one group today,
per-project or per-shard groups later) comes from the code and the environment (`--server-env
NAME=VALUE` passes more), so the same bench measures both. M publishers
(bench/_cluster_publisher.py): `runs.services.report_progress` on running stages of P projects,
one `stage.progress` event per transaction. Clients (asyncio + uvloop processes, bench/_common
ClientPool): one user who is a member of every project; each socket narrows its scope to one
project (`auth.projectId`) and subscribes to STAGE_EVENTS. Each project's sockets go to
ceil(spread × K) servers (project p to servers p, p+1, … mod K), so with spread < 1 a server
has no socket on some projects and can only discard their events.

Phases (each bounded in count and time):
- `mixed`: every publisher publishes `--events` events over all P projects (at `--rate`
  events/s each, 0 = as fast as it can).
- `foreign` (when some server has no socket on project 0): the same count, on project 0 only.
  A server without a socket there only discards; its CPU over the serving server's is issue
  13's "foreign process" ratio (target ≤ 0.2 once events are routed by project).

Measures per phase:
- events/s = events committed / (last frame read by any client − first publisher call);
  deliveries/s the same with frames;
- latency p50/p99/max = client receive − the wall clock taken just before the service call
  (carried in the event's `itemsProcessed`): the transaction, its commit and stamping, the
  hand-off, Redis, the hub and the socket;
- loss, per client against the log: every `stage.progress` of its project committed in the
  phase must arrive, unless a newer one of the same stage arrived instead (the per-socket
  progress coalescing, counted apart); ids of other projects (`foreign`) and duplicates must
  be 0;
- CPU from /proc (utime + stime) of every process: each server, each publisher, Redis,
  PostgreSQL (all its processes), the client processes; each server's events received and
  discarded (received, no local socket may see them: `events` in GET /api/ws/stats/) and
  frames sent (`messages.sent`). Per server: µs per frame sent, and µs per discarded event
  (measured where a server only discards: the `foreign` phase).

Loopback only; the JSON line at the end (BENCH_JSON) has every figure and the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import selectors
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import (  # noqa: E402
    BENCH_ENV,
    PYTHON,
    AppServer,
    ClientPool,
    RedisServer,
    ask_all,
    cpu_seconds,
    emit_json,
    machine_info,
    pct,
    raise_nofile,
    recv_from,
    rss_kb,
)
from _pg import BenchPostgres  # noqa: E402
from postgres import _postmaster_pid, _server_cpu  # noqa: E402

PASSWORD = "bench-pass-123"


# ------------------------------------------------------------------------------------------
# set-up: users, projects and running stages, through the services
# ------------------------------------------------------------------------------------------


def _setup_django(env: dict[str, str]) -> None:
    # This process only sets up and reads the log: no Redis (its events need no live path).
    os.environ.update({**env, "REDIS_URL": "", "DJANGO_SETTINGS_MODULE": "researchflow.settings"})
    import django

    django.setup()


def _world(projects: int, publishers: int, stages: int) -> dict[str, Any]:
    """The bench user (a member of every project) and its token, a staff token for the stats,
    and per publisher, per project, `stages` running stages (each in a run of its own)."""
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    from runs import services

    user = User.objects.create_user("cluster", password=PASSWORD)
    staff = User.objects.create_user("cluster-staff", password=PASSWORD, is_staff=True)
    project_ids = []
    plan: list[dict[str, list[str]]] = [{} for _ in range(publishers)]
    for p in range(projects):
        project = services.create_project(f"Cluster {p}", owner=user)
        project_ids.append(str(project.pk))
        for m in range(publishers):
            ids = []
            for s in range(stages):
                run = services.create_run(project, f"P{m} S{s}", ["Work"], user)
                services.start_run(run.pk)
                stage = run.stages.get()
                services.start_stage(stage.pk)
                ids.append(str(stage.pk))
            plan[m][str(project.pk)] = ids
    return {
        "token": Token.objects.get_or_create(user=user)[0].key,
        "staff_token": Token.objects.get_or_create(user=staff)[0].key,
        "projects": project_ids,
        "plan": plan,
    }


def _log_window(after: int, upto: int) -> dict[int, tuple[str, str]]:
    """id -> (project, stage) of every event logged in (after, upto]."""
    from events.models import Event

    rows = Event.objects.filter(position__gt=after, position__lte=upto).values_list(
        "position", "project_id", "payload"
    )
    return {pos: (str(project), str(payload.get("stageId", ""))) for pos, project, payload in rows}


def _log_size() -> dict[str, Any]:
    """The event log's rows and its bytes on disk (table, TOAST and indexes)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(*), pg_total_relation_size('events_event'), "
            "pg_indexes_size('events_event') FROM events_event"
        )
        rows, total, indexes = cursor.fetchone()
    return {
        "rows": rows,
        "bytes_per_row": round(total / max(1, rows)),
        "index_bytes_per_row": round(indexes / max(1, rows)),
    }


def _log_head() -> int:
    from events import log

    return log.head()


# ------------------------------------------------------------------------------------------
# processes
# ------------------------------------------------------------------------------------------


class PublisherProc:
    def __init__(self, env: dict[str, str], stages: dict[str, list[str]]) -> None:
        self.proc = subprocess.Popen(
            [PYTHON, str(ROOT / "bench" / "_cluster_publisher.py"), json.dumps(stages)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.pid = self.proc.pid

    def read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sel.select(max(0.0, deadline - time.monotonic())):
                line = self.proc.stdout.readline()
                if not line:
                    raise RuntimeError("publisher exited")
                if line.startswith("{"):
                    return dict(json.loads(line))
        raise TimeoutError("publisher did not answer")

    def send(self, cmd: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.send({"op": "quit"})
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


# A group: the sockets of one project on one server.
Group = tuple[int, str, int]  # (port, project id, sockets)


def client_worker(ctl: Any, groups: list[Group], token: str, connect_timeout: float) -> None:
    """A client process: opens its groups' sockets, then obeys commands on the pipe `ctl`."""
    import asyncio

    raise_nofile()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    pools: list[tuple[str, ClientPool]] = []
    for port, project, _n in groups:
        pool = ClientPool(loop, "127.0.0.1", port, token, compression=False)
        pool.auth_extra = {"projectId": project}
        pools.append((project, pool))

    def reply(obj: Any) -> None:
        os.set_blocking(ctl.fileno(), True)  # uvloop's add_reader made the pipe non-blocking
        ctl.send(obj)

    def complete(want: dict[str, int]) -> bool:
        return all(
            c.closed or c.last_id >= want.get(project, 0)
            for project, pool in pools
            for c in pool.clients
        )

    async def main() -> None:
        reports = []
        for (_port, _project, n), (_p, pool) in zip(groups, pools, strict=True):
            reports.append(await pool.open_many(n, 20, connect_timeout, True))
        reply(
            {
                "authed": sum(r["authed"] or 0 for r in reports),
                "failed": sum(r["failed"] for r in reports),
                "failures": [f for r in reports for f in r["failures_sample"]][:5],
                "errors": [e for _, pool in pools for e in pool.errors][:3],
            }
        )
        commands: asyncio.Queue[Any] = asyncio.Queue()
        loop.add_reader(ctl.fileno(), lambda: commands.put_nowait(ctl.recv()))
        while True:
            cmd = await commands.get()
            op = cmd[0]
            if op == "arm":
                for _, pool in pools:
                    pool.arm()
                reply({"cpu": time.process_time()})
            elif op == "wait":  # ("wait", {project: newest id}, timeout_s, quiet_s)
                _, want, timeout, quiet = cmd
                end = time.monotonic() + timeout
                while time.monotonic() < end and not complete(want):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                await asyncio.sleep(quiet)  # late duplicates or strays show up here
                lat = array("d")
                for _, pool in pools:
                    lat.extend(pool.stats.latencies)
                reply(
                    {
                        "complete": complete(want),
                        "frames": sum(pool.stats.frames for _, pool in pools),
                        "last_recv": max(pool.stats.last_recv for _, pool in pools),
                        "latencies": lat.tobytes(),
                        "cpu": time.process_time(),
                    }
                )
            elif op == "verdict":  # ("verdict", {id: (project, stage)})
                reply(_verdict(pools, cmd[1]))
            elif op == "close":
                for _, pool in pools:
                    for c in pool.clients:
                        c.close()
                await asyncio.sleep(0.2)
                reply({"closed": True})
                return

    try:
        loop.run_until_complete(asyncio.wait_for(main(), 3600))
    finally:
        loop.close()


def _verdict(
    pools: list[tuple[str, ClientPool]], window: dict[int, tuple[str, str]]
) -> dict[str, int]:
    """Each client's ids against the log window: lost, coalesced, foreign, duplicates."""
    by_project: dict[str, set[int]] = {}
    for event_id, (project, _stage) in window.items():
        by_project.setdefault(project, set()).add(event_id)
    out = {"lost": 0, "coalesced": 0, "foreign": 0, "duplicates": 0, "closed": 0, "clients": 0}
    for project, pool in pools:
        want = by_project.get(project, set())
        for c in pool.clients:
            out["clients"] += 1
            out["closed"] += c.closed
            got = set(c.ids)
            out["duplicates"] += len(c.ids) - len(got)
            out["foreign"] += sum(1 for i in got if i in window and window[i][0] != project) + sum(
                1 for i in got if i not in window
            )
            newest: dict[str, int] = {}
            for i in got:
                if i in window:
                    stage = window[i][1]
                    newest[stage] = max(newest.get(stage, 0), i)
            for i in want - got:
                # Coalesced: a newer progress of the same stage took its place in the queue.
                if newest.get(window[i][1], 0) > i:
                    out["coalesced"] += 1
                else:
                    out["lost"] += 1
    return out


class ClientProcs:
    def __init__(self, groups: list[Group], procs: int, token: str, timeout: float) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        self.pipes: list[Any] = []
        self.workers: list[Any] = []
        shares: list[list[Group]] = [[] for _ in range(procs)]
        for i, group in enumerate(sorted(groups, key=lambda g: -g[2])):
            shares[i % procs].append(group)
        for share in shares:
            if not share:
                continue
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=client_worker, args=(child, share, token, timeout))
            proc.daemon = True
            proc.start()
            self.pipes.append(parent)
            self.workers.append(proc)
        reports = [recv_from(p, timeout + 60) for p in self.pipes]
        self.authed = sum(r["authed"] for r in reports)
        self.failed = sum(r["failed"] for r in reports)
        self.failures = [f for r in reports for f in r["failures"] + r["errors"]][:5]

    @property
    def pids(self) -> list[int]:
        return [int(w.pid) for w in self.workers]

    def all(self, cmd: tuple[Any, ...], timeout: float = 120) -> list[Any]:
        return ask_all(self.pipes, cmd, timeout)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.all(("close",), 30)
        for w in self.workers:
            w.join(10)
            if w.is_alive():
                w.kill()


# ------------------------------------------------------------------------------------------
# measuring
# ------------------------------------------------------------------------------------------


def placement(projects: list[str], servers: int, spread: float, clients: int) -> list[Group]:
    """Each project's sockets on ceil(spread × K) servers (p, p+1, … mod K), split evenly."""
    width = max(1, min(servers, math.ceil(spread * servers - 1e-9)))
    per_project = [
        clients // len(projects) + (i < clients % len(projects)) for i in range(len(projects))
    ]
    groups: list[Group] = []
    for p, project in enumerate(projects):
        hosts = [(p + j) % servers for j in range(width)]
        for j, host in enumerate(hosts):
            n = per_project[p] // width + (j < per_project[p] % width)
            if n:
                groups.append((host, project, n))
    return groups


def server_stats(app: AppServer, token: str) -> dict[str, Any]:
    local = app.api("GET", "/api/ws/stats/", token=token)["local"]
    events = local.get("events") or {}
    return {
        "sockets": local["connections"]["total"],
        "sent": local["messages"]["sent"],
        "coalesced": local["messages"]["coalesced"],
        "received": events.get("received"),  # None: a build without the counter
        "discarded": events.get("discarded"),
        "last_id": local.get("lastEventId") or 0,
        "repaired": local.get("gapEventsRepaired") or 0,
    }


def snapshot(ctx: dict[str, Any], *, stats_first: bool) -> dict[str, Any]:
    """CPU of every process, and each server's stats. A stats request costs its server CPU
    (a thread, a database and a Redis connection): taken before the CPU reading at the start
    of a window and after it at the end, it stays out of the window."""
    stats = [server_stats(app, ctx["staff_token"]) for app in ctx["apps"]] if stats_first else []
    out: dict[str, Any] = {
        "cpu": [cpu_seconds(app.proc.pid) for app in ctx["apps"]],
        "publishers": [cpu_seconds(p.pid) for p in ctx["pubs"]],
        "redis": cpu_seconds(ctx["redis_pid"]),
        "postgres": _server_cpu(ctx["postmaster"]),
        "t": time.time(),
    }
    if not stats_first:
        stats = [server_stats(app, ctx["staff_token"]) for app in ctx["apps"]]
    out["servers"] = [{"cpu": cpu, **st} for cpu, st in zip(out["cpu"], stats, strict=True)]
    return out


def idle_cpu(ctx: dict[str, Any], seconds: float) -> list[float]:
    """Each server's CPU (% of a core) with its sockets open and no event: timers only."""
    before = [cpu_seconds(app.proc.pid) for app in ctx["apps"]]
    time.sleep(seconds)
    after = [cpu_seconds(app.proc.pid) for app in ctx["apps"]]
    return [round(100 * (a - b) / seconds, 1) for a, b in zip(after, before, strict=True)]


def wait_servers_at(ctx: dict[str, Any], head: int, timeout: float = 30) -> None:
    """Until every server's hub has taken in the log up to `head` (or the timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(server_stats(a, ctx["staff_token"])["last_id"] >= head for a in ctx["apps"]):
            return
        time.sleep(0.05)


def phase(
    ctx: dict[str, Any], name: str, projects: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    clients: ClientProcs = ctx["clients"]
    head0 = _log_head()
    wait_servers_at(ctx, head0)
    client_cpu0 = sum(r["cpu"] for r in clients.all(("arm",)))
    before = snapshot(ctx, stats_first=True)
    for pub in ctx["pubs"]:
        pub.send({"op": "run", "count": args.events, "rate": args.rate, "projects": projects})
    bound = args.events / args.rate if args.rate > 0 else 0
    pubs = [pub.read(args.timeout + bound) for pub in ctx["pubs"]]
    head1 = _log_head()
    window = _log_window(head0, head1)
    newest: dict[str, int] = {}
    for event_id, (project, _stage) in window.items():
        newest[project] = max(newest.get(project, 0), event_id)
    got = clients.all(("wait", newest, args.timeout, 0.3), args.timeout + 60)
    after = snapshot(ctx, stats_first=False)
    verdict: dict[str, int] = {}
    for part in clients.all(("verdict", window)):
        for k, v in part.items():
            verdict[k] = verdict.get(k, 0) + v
    lat = array("d")
    for r in got:
        lat.frombytes(r["latencies"])
    t_first = min(p["t_start"] for p in pubs)
    last_recv = max(r["last_recv"] for r in got)
    span = max(1e-9, last_recv - t_first)
    frames = sum(r["frames"] for r in got)
    events = len(window)
    servers = []
    for i, (b, a) in enumerate(zip(before["servers"], after["servers"], strict=True)):
        cpu = a["cpu"] - b["cpu"]
        row: dict[str, Any] = {
            "server": i,
            "sockets": a["sockets"],
            "cpu_s": round(cpu, 3),
            "cpu_pct": round(100 * cpu / (after["t"] - before["t"]), 1),
            "frames_sent": a["sent"] - b["sent"],
            "coalesced": a["coalesced"] - b["coalesced"],
            "repaired": a["repaired"] - b["repaired"],
        }
        if a["received"] is not None and b["received"] is not None:
            row["received"] = a["received"] - b["received"]
            row["discarded"] = a["discarded"] - b["discarded"]
        row["cpu_us_per_frame"] = (
            round(cpu / row["frames_sent"] * 1e6, 2) if row["frames_sent"] else None
        )
        row["cpu_us_per_event_in"] = (
            round(cpu / row["received"] * 1e6, 2) if row.get("received") else None
        )
        # A server that only discarded: its whole CPU is the cost of discarding.
        row["cpu_us_per_discard"] = (
            round(cpu / row["discarded"] * 1e6, 2)
            if row.get("discarded") and not row["frames_sent"]
            else None
        )
        servers.append(row)
    pub_cpu = sum(a - b for a, b in zip(after["publishers"], before["publishers"], strict=True))
    client_cpu = sum(r["cpu"] for r in got) - client_cpu0
    result = {
        "phase": name,
        "projects": len(projects),
        "events": events,
        "publisher_errors": sum(p["errors"] for p in pubs),
        "publish_s": max(p["t_end"] for p in pubs) - t_first,
        "commit_rate": events / max(1e-9, max(p["t_end"] for p in pubs) - t_first),
        "events_per_s": events / span,
        "deliveries": frames,
        "deliveries_per_s": frames / span,
        "complete": all(r["complete"] for r in got),
        "p50_ms": pct(lat, 50) * 1000,
        "p99_ms": pct(lat, 99) * 1000,
        "max_ms": max(lat) * 1000 if lat else float("nan"),
        "call_p50_ms": max(p["call_p50_ms"] for p in pubs),
        "call_p99_ms": max(p["call_p99_ms"] for p in pubs),
        **verdict,
        "servers": servers,
        "cpu_us_per_event": {
            "publishers": round(pub_cpu / max(1, events) * 1e6, 1),
            "postgres": round((after["postgres"] - before["postgres"]) / max(1, events) * 1e6, 1),
            "redis": round((after["redis"] - before["redis"]) / max(1, events) * 1e6, 1),
            "clients_per_frame": round(client_cpu / max(1, frames) * 1e6, 2),
        },
    }
    if name == "foreign":
        serving = [s for s in servers if s["frames_sent"]]
        foreign = [s for s in servers if not s["frames_sent"]]
        if serving and foreign:
            result["foreign_vs_serving_cpu"] = round(
                max(s["cpu_s"] for s in foreign) / max(1e-9, max(s["cpu_s"] for s in serving)), 2
            )
    return result


def report(r: dict[str, Any]) -> None:
    print(
        f"  [{r['phase']}] {r['events']} events ({r['projects']} projects) committed at "
        f"{r['commit_rate']:,.0f}/s; {r['events_per_s']:,.0f} events/s and "
        f"{r['deliveries_per_s']:,.0f} deliveries/s commit->socket; p50 {r['p50_ms']:.1f} ms, "
        f"p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.0f} ms; lost {r['lost']}, coalesced "
        f"{r['coalesced']}, foreign {r['foreign']}, dup {r['duplicates']}, closed {r['closed']}, "
        f"publisher errors {r['publisher_errors']}",
        flush=True,
    )
    for s in r["servers"]:
        print(
            f"    server {s['server']}: {s['sockets']} sockets, CPU {s['cpu_s']:.2f} s "
            f"({s['cpu_pct']:.0f}%), in {s.get('received')}, discarded {s.get('discarded')}, "
            f"frames {s['frames_sent']}, repaired {s['repaired']}; us/frame "
            f"{s['cpu_us_per_frame']}, us/event in {s['cpu_us_per_event_in']}, us/discard "
            f"{s['cpu_us_per_discard']}",
            flush=True,
        )
    c = r["cpu_us_per_event"]
    print(
        f"    CPU per event: publishers {c['publishers']} us, PostgreSQL {c['postgres']} us, "
        f"Redis {c['redis']} us; clients {c['clients_per_frame']} us/frame"
        + (
            f"; foreign/serving server CPU {r['foreign_vs_serving_cpu']}"
            if "foreign_vs_serving_cpu" in r
            else ""
        ),
        flush=True,
    )


def _log_tails_on_error(apps: list[AppServer], failed: bool) -> None:
    if not failed:
        return
    for i, app in enumerate(apps):
        with contextlib.suppress(OSError):
            print(f"--- server {i} log tail ---\n{app.log.read_text()[-3000:]}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, default=2, help="K server processes")
    parser.add_argument("--publishers", type=int, default=2, help="M publisher processes")
    parser.add_argument("--clients", type=int, default=400, help="N sockets in all")
    parser.add_argument("--projects", type=int, default=8, help="P projects")
    parser.add_argument(
        "--spread", type=float, default=0.5, help="fraction of the servers each project is on"
    )
    parser.add_argument("--events", type=int, default=1000, help="events per publisher, per phase")
    parser.add_argument("--rate", type=float, default=0, help="events/s per publisher (0: max)")
    parser.add_argument("--stages", type=int, default=2, help="stages per publisher per project")
    parser.add_argument("--client-procs", type=int, default=1)
    parser.add_argument("--phases", default="mixed,foreign")
    parser.add_argument("--idle-seconds", type=float, default=3.0, help="idle CPU before")
    parser.add_argument("--timeout", type=float, default=120, help="bound per phase step (s)")
    parser.add_argument("--no-fsync", action="store_true", help="PostgreSQL fsync off")
    parser.add_argument(
        "--server-env", action="append", default=[], help="NAME=VALUE for the servers"
    )
    args = parser.parse_args()
    if args.servers < 1 or args.publishers < 1 or args.projects < 1 or args.clients < 1:
        parser.error("--servers, --publishers, --projects and --clients must be at least 1")
    raise_nofile()
    info = machine_info()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    print(
        f"cluster: K={args.servers} servers, M={args.publishers} publishers, N={args.clients} "
        f"clients, P={args.projects} projects, spread {args.spread}; {info['nproc']} CPUs "
        f"({info['cpu']}), Python {info['python']}, {info['date_utc']}, commit {commit}",
        flush=True,
    )
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(
            BenchPostgres(
                durable=not args.no_fsync,
                max_connections=100 + 100 * args.servers + 5 * args.publishers,
            )
        )
        redis = stack.enter_context(RedisServer())
        var = stack.enter_context(tempfile.TemporaryDirectory(prefix="rf-cluster-"))
        env = {
            **os.environ,
            **BENCH_ENV,
            "DATABASE_URL": pg.url,
            "REDIS_URL": redis.url,
            "RESEARCHFLOW_VAR_DIR": var,
            "DJANGO_SETTINGS_MODULE": "researchflow.settings",
            "PYTHONUNBUFFERED": "1",
        }
        for item in args.server_env:
            name, _, value = item.partition("=")
            env[name] = value
        subprocess.run(
            [PYTHON, "manage.py", "migrate", "--noinput"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        _setup_django(env)
        world = _world(args.projects, args.publishers, args.stages)
        from django.db import connections

        postmaster = _postmaster_pid()
        connections.close_all()  # before forking the client processes
        apps = []
        for _ in range(args.servers):
            app = AppServer("uvicorn", env=env, migrate=False, seed=False)
            stack.callback(app.__exit__, None, None, None)
            apps.append(app.start())
        pubs = [PublisherProc(env, plan) for plan in world["plan"]]
        for pub in pubs:
            stack.callback(pub.stop)
        for pub in pubs:
            pub.read(120)
        groups = [
            (apps[host].port, project, n)
            for host, project, n in placement(
                world["projects"], args.servers, args.spread, args.clients
            )
        ]
        rss0 = [rss_kb(a.proc.pid) for a in apps if a.proc]
        clients = ClientProcs(groups, args.client_procs, world["token"], args.timeout)
        stack.callback(clients.close)
        print(
            f"  {clients.authed}/{args.clients} clients authenticated (failed {clients.failed})"
            + (f": {clients.failures}" if clients.failures else ""),
            flush=True,
        )
        assert redis.proc is not None
        ctx = {
            "apps": apps,
            "pubs": pubs,
            "clients": clients,
            "staff_token": world["staff_token"],
            "redis_pid": redis.proc.pid,
            "postmaster": postmaster,
        }
        stack.push(lambda kind, *_: _log_tails_on_error(apps, kind is not None))
        idle = idle_cpu(ctx, args.idle_seconds)
        print(f"  idle server CPU: {idle} % (over {args.idle_seconds:g} s)", flush=True)
        results = []
        on_zero = {
            host
            for host, project, _n in placement(
                world["projects"], args.servers, args.spread, args.clients
            )
            if project == world["projects"][0]
        }
        for name in [p.strip() for p in args.phases.split(",") if p.strip()]:
            if name == "mixed":
                r = phase(ctx, name, world["projects"], args)
            elif name == "foreign":
                if len(on_zero) == args.servers:
                    print("  [foreign] skipped: every server has a socket on project 0")
                    continue
                r = phase(ctx, name, world["projects"][:1], args)
            else:
                parser.error(f"unknown phase {name}")
            report(r)
            results.append(r)
        log_size = _log_size()
        print(f"  event log: {log_size}", flush=True)
        rss1 = [rss_kb(a.proc.pid) for a in apps if a.proc]
        rss = {"before_clients_kb": rss0, "after_kb": rss1}
        print(f"  server RSS: {rss}", flush=True)
        emit_json(
            "cluster",
            {
                "machine": info,
                "commit": commit,
                "postgres": pg.version,
                "durable": not args.no_fsync,
                "params": vars(args),
                "clients_authed": clients.authed,
                "results": results,
                "server_rss": rss,
                "log": log_size,
            },
        )
        connections.close_all()
    failing = ("lost", "foreign", "duplicates", "publisher_errors")
    bad = [r["phase"] for r in results if any(r[k] for k in failing) or not r["complete"]]
    if bad:
        print(f"FAILED: loss, strays, duplicates or errors in {bad}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
