"""State changes on PostgreSQL as writers grow: 1, 4, 8 and 16 writer processes, in one project
(as one user) and across projects (one each), against a cluster this bench starts (durable:
fsync on; see bench/_pg.py).

    .venv/bin/python bench/postgres.py                   # 3 s per cell
    .venv/bin/python bench/postgres.py --seconds 2 --writers 1 8

Three workloads per cell, each writer on its own running stage, one transaction per change:
- `plain`: `UPDATE runs_stage SET items_processed = …` in autocommit (the database's own rate);
- `service`: `runs.services.report_progress` with its event switched off (in the writer
  processes, the bus's combined change-and-log statement runs the change alone, and the
  general path's broadcaster is a no-op);
- `service+event`: `report_progress` as production runs it (the log row, and the sequencer's
  stamping after commit).
Reported per workload: transactions/s (all writers), p50 and p99 latency, errors, and where the
CPU went: microseconds of CPU per transaction in the writer processes (`client_cpu_us`, their
own `process_time`) and in PostgreSQL (`pg_cpu_us`: every server process, from /proc, the WAL
writer and checkpointer included). With both, `cpu_ceiling` is the rate the machine's cores
could sustain if nothing but CPU limited it: cores ÷ (client + server CPU per transaction).
Targets (issue 12): service+event ≥ 0.5 × plain at 8 writers; its p99 at 16 writers ≤ 3 ×
plain's.

The writer processes are bare: no hub and no channel layer (REDIS_URL is empty), so nothing
but the change and its stamping runs in them, for every workload alike.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _pg import BenchPostgres  # noqa: E402

WORKLOADS = ("plain", "service", "service+event")


def _setup_django(url: str, var_dir: str) -> None:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "researchflow.settings",
            "DATABASE_URL": url,
            "RESEARCHFLOW_VAR_DIR": var_dir,
            "DEBUG": "0",
            "SECRET_KEY": "bench-only-" + "x" * 50,
            "ALLOWED_HOSTS": "localhost",
            "REDIS_URL": "",
            "DATABASE_CONN_MAX_AGE": "600",
        }
    )
    import django

    django.setup()


def _stages(count: int, across: bool) -> list[str]:
    """`count` running stages: in one project as one user, or each in its own project."""
    from django.contrib.auth.models import User

    from runs import services

    user, _ = User.objects.get_or_create(username="bench")
    shared = services.create_project("Bench", owner=user)
    stage_ids = []
    for n in range(count):
        project = services.create_project(f"Bench {n}", owner=user) if across else shared
        run = services.create_run(project, f"Writer {n}", ["S"], user)
        services.start_run(run.pk)
        stage = run.stages.get()
        services.start_stage(stage.pk)
        stage_ids.append(stage.pk)
    return stage_ids


def _writer(
    queue: Any, workload: str, stage_id: str, start_at: float, seconds: float, base: int
) -> None:
    from django.db import connection

    from runs import services

    if workload == "service":
        _switch_events_off()
    connection.ensure_connection()
    latencies: list[float] = []
    errors: list[str] = []
    n = base
    while time.time() < start_at:
        time.sleep(0.001)
    deadline = start_at + seconds
    cpu_began = time.process_time()
    with connection.cursor() as cursor:
        while True:
            if time.time() >= deadline:
                break
            began = time.perf_counter()
            n += 1
            try:
                if workload == "plain":
                    cursor.execute(
                        "UPDATE runs_stage SET items_processed = %s WHERE id = %s", [n, stage_id]
                    )
                else:
                    services.report_progress(stage_id, 50, items_processed=n)
            except Exception as exc:
                errors.append(type(exc).__name__)
                continue
            latencies.append(time.perf_counter() - began)
    cpu = time.process_time() - cpu_began
    connection.close()
    queue.put({"latencies": latencies, "errors": errors, "last": n, "cpu": cpu})


def _switch_events_off() -> None:
    """The `service` workload: the same statements without the event's log row."""
    from events import bus
    from runs.broadcaster import run_event_broadcaster

    run_event_broadcaster.broadcast_stage_progress = lambda data: None  # type: ignore[method-assign,assignment,return-value]

    if not hasattr(bus.event_bus, "publish_with_change"):
        return  # a tree before the combined statement (an A/B run)
    from events import prepared

    def change_only(change_sql: str, change_params: Any, *args: Any, **kwargs: Any) -> Any:
        from django.db import connection

        row = prepared.cursor(connection).fetch_one(change_sql, change_params)
        return None if row is None else (tuple(row) + (None,) * 3, None)

    bus.event_bus.publish_with_change = change_only  # type: ignore[method-assign]


def _statements_reset() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_statements_reset()")


def _statements(limit: int = 8) -> list[dict[str, Any]]:
    """The costliest statements since the last reset (pg_stat_statements): per call, planning
    and execution time, rows, WAL bytes, buffers dirtied."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT calls, total_plan_time, total_exec_time, rows, wal_bytes,
                   shared_blks_dirtied, left(regexp_replace(query, '\\s+', ' ', 'g'), 90)
            FROM pg_stat_statements
            WHERE calls > 0 AND query NOT LIKE '%%pg_stat_statements%%'
            ORDER BY total_plan_time + total_exec_time DESC LIMIT %s
            """,
            [limit],
        )
        rows = cursor.fetchall()
    return [
        {
            "calls": calls,
            "plan_us": round(plan / calls * 1000, 1),
            "exec_us": round(exe / calls * 1000, 1),
            "rows": round(nrows / calls, 2),
            "wal_bytes": round(float(wal) / calls),
            "dirtied": round(dirtied / calls, 2),
            "query": query,
        }
        for calls, plan, exe, nrows, wal, dirtied, query in rows
    ]


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


_TICKS = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int, children: bool = False) -> float:
    """CPU seconds of one process (user + system), and of its reaped children if asked."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # After the ")": state, ppid, …; utime and stime are fields 14-15 (indices 11-12 here),
    # cutime and cstime 16-17.
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICKS


def _server_cpu(postmaster: int) -> float:
    """CPU seconds used so far by the whole server: the postmaster, its exited children (the
    postmaster reaps them) and its live ones (backends, WAL writer, checkpointer, …). A
    backend that exits between two readings moves from the live sum to the reaped one."""
    total = _proc_cpu(postmaster, children=True)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(stat[1]) == postmaster:
            total += (int(stat[11]) + int(stat[12])) / _TICKS
    return total


def _backends(postmaster: int) -> int:
    """Client backends still alive (or not yet reaped), by their process title."""
    count = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            title = (entry / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(stat[1]) == postmaster and (stat[0] == "Z" or b"127.0.0.1(" in title):
            count += 1
    return count


def _settle(postmaster: int) -> None:
    """Wait (up to 5 s) until every client backend has exited and been reaped: their CPU is
    then in the postmaster's children total, read whole."""
    deadline = time.time() + 5
    while _backends(postmaster) and time.time() < deadline:
        time.sleep(0.01)


def _postmaster_pid() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = int(cursor.fetchone()[0])
    return int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _cell(
    workload: str,
    stage_ids: list[str],
    seconds: float,
    base: int,
    postmaster: int,
    statements: bool = False,
) -> dict[str, Any]:
    from django.db import connections

    if statements:
        _statements_reset()
    connections.close_all()
    _settle(postmaster)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    start_at = time.time() + 0.5 + 0.02 * len(stage_ids)
    procs = [
        ctx.Process(target=_writer, args=(queue, workload, sid, start_at, seconds, base))
        for sid in stage_ids
    ]
    server_began = _server_cpu(postmaster)
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=seconds + 60) for _ in procs]
    for proc in procs:
        proc.join(30)
    _settle(postmaster)
    server_cpu = _server_cpu(postmaster) - server_began
    account = _statements() if statements else None
    latencies = [x for r in results for x in r["latencies"]]
    errors = [e for r in results for e in r["errors"]]
    done = max(1, len(latencies))
    client_cpu_us = sum(r["cpu"] for r in results) / done * 1e6
    pg_cpu_us = server_cpu / done * 1e6
    return {
        "txn_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(_pct(latencies, 50) * 1000, 3),
        "p99_ms": round(_pct(latencies, 99) * 1000, 3),
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "client_cpu_us": round(client_cpu_us),
        "pg_cpu_us": round(pg_cpu_us),
        "cpu_ceiling": round((os.cpu_count() or 1) / ((client_cpu_us + pg_cpu_us) / 1e6)),
        "_last": max(r["last"] for r in results),
        **({"statements": account} if account is not None else {}),
    }


def _log_check() -> dict[str, Any]:
    """Every logged event positioned, positions gapless."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(*), COUNT(position), MIN(position), MAX(position) FROM events_event"
        )
        rows, positioned, low, high = cursor.fetchone()
    return {
        "rows": rows,
        "unpositioned": rows - positioned,
        "gapless": positioned == 0 or (high - low + 1) == positioned,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--modes", nargs="+", default=["one-project", "across-projects"])
    parser.add_argument("--no-fsync", action="store_true", help="fsync=off (not production)")
    parser.add_argument(
        "--statements",
        action="store_true",
        help="print a per-statement account of each cell (pg_stat_statements)",
    )
    args = parser.parse_args()

    import tempfile

    with (
        BenchPostgres(
            durable=not args.no_fsync, max_connections=100, statements=args.statements
        ) as pg,
        tempfile.TemporaryDirectory(prefix="rf-benchvar-") as var,
    ):
        env = dict(os.environ, DATABASE_URL=pg.url, RESEARCHFLOW_VAR_DIR=var, REDIS_URL="")
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        _setup_django(pg.url, var)
        postmaster = _postmaster_pid()
        if args.statements:
            from django.db import connection

            with connection.cursor() as cursor:
                cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        from _common import emit_json, machine_info

        results: dict[str, Any] = {}
        base = 0
        for mode in args.modes:
            for writers in args.writers:
                stage_ids = _stages(writers, across=mode == "across-projects")
                row: dict[str, Any] = {}
                for workload in WORKLOADS:
                    cell = _cell(
                        workload, stage_ids, args.seconds, base, postmaster, args.statements
                    )
                    base = cell.pop("_last") + 1
                    row[workload] = cell
                plain = row["plain"]["txn_per_s"] or float("nan")
                row["event_vs_plain"] = round(row["service+event"]["txn_per_s"] / plain, 2)
                row["event_p99_vs_plain_p99"] = round(
                    row["service+event"]["p99_ms"] / row["plain"]["p99_ms"], 2
                )
                results[f"{mode}/{writers}"] = row
                print(
                    f"{mode:16} {writers:2} writers  "
                    + "  ".join(
                        f"{w}: {row[w]['txn_per_s']:8.0f}/s p50 {row[w]['p50_ms']:6.2f} "
                        f"p99 {row[w]['p99_ms']:6.2f} ms err {row[w]['errors']} "
                        f"cpu {row[w]['client_cpu_us']}+{row[w]['pg_cpu_us']} us"
                        for w in WORKLOADS
                    )
                    + f"  event/plain {row['event_vs_plain']}"
                    + f"  p99 ratio {row['event_p99_vs_plain_p99']}",
                    flush=True,
                )
                for workload in WORKLOADS:
                    for st in row[workload].get("statements", ()):
                        print(
                            f"    {workload:14} {st['calls']:7} calls  plan {st['plan_us']:7.1f}"
                            f"  exec {st['exec_us']:7.1f} us  rows {st['rows']:5}  "
                            f"wal {st['wal_bytes']:5} B  dirtied {st['dirtied']:5}  "
                            f"{st['query']}",
                            flush=True,
                        )
        log = _log_check()
        print(f"log: {log}", flush=True)
        emit_json(
            "postgres",
            {
                "machine": machine_info(),
                "postgres": pg.version,
                "durable": not args.no_fsync,
                "params": vars(args),
                "results": results,
                "log": log,
            },
        )


if __name__ == "__main__":
    main()
