"""Fan-out: N WebSocket clients, a burst of events, deliveries/s, latency and loss - for the
gateway under daphne, under uvicorn, and for a bare `websockets` broadcast server, in one run.

    .venv/bin/python bench/fanout.py                      # 1,000 clients, 200-event bursts
    .venv/bin/python bench/fanout.py --clients 500 --reps 5 --targets uvicorn,bare

Shape (2 cores): the server under test is pinned to core 0; the client process (one asyncio
+ uvloop process holding every socket), the trigger process and redis-server to core 1.
Gateway events go the production way: a separate process publishes through the EventBus
(validate, PHI guard, SQLite log row and commit, Redis pub/sub), the server's hub receives
each once and dispatches to its local sockets. Clients authenticate with alice's REST token
and subscribe to STAGE_EVENTS in the auth message.

Measures, per burst of E events to N clients (expected E*N deliveries):
- delivered/s = deliveries / (last byte read by any client - the trigger's start time);
- latency = client receive wall time - the time embedded in the event just before publish();
- lost = expected - received (every client must get every published id exactly once);
  duplicates and unexpected ids are counted separately.
Steady mode: R events/s for S seconds to the same clients; p50/p99/max latency.

`--database postgres`: each gateway target gets its own PostgreSQL (bench/_pg.py, durable),
and the publisher reports progress through `runs.services.report_progress` on `--events`
distinct running stages: the production write path (the change and its log row in one
statement, positions stamped after commit, Redis pub/sub), one stage per event so nothing
coalesces. The bare server is unchanged (it has no database).

A target `uvicorn+exit` (or `daphne+exit`) publishes each measured burst from a fresh process
that exits right after it, with no explicit flush: a worker script (issue 13 part 2). Its
events must go out through the flush at interpreter exit, over the live path, not wait for
the servers' next log check (WS_GAP_CHECK_INTERVAL).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    CLIENT_CORE,
    SERVER_CORE,
    BareServer,
    Clients,
    Gateway,
    Profiler,
    Publisher,
    RedisServer,
    cpu_seconds,
    emit_json,
    machine_info,
    median,
    pct,
    pin,
    pin_tree,
    raise_nofile,
    rss_kb,
)
from _pg import BenchPostgres


def measure_burst(
    pub: Publisher, clients: Clients, server_pid: int, events: int, n: int
) -> dict[str, Any]:
    client_cpu0 = clients.arm()
    cpu0 = cpu_seconds(server_pid)
    res = pub.burst(events)
    got = clients.wait(events, timeout=120)
    cpu1 = cpu_seconds(server_pid)
    verdict = clients.verdict(res["ids"])
    duration = max(1e-9, got["last_recv"] - res["t_start"])
    lat = got["latencies"]
    return {
        "expected": events * n,
        "delivered": got["frames"],
        "delivered_per_s": got["frames"] / duration,
        "duration_s": duration,
        "publish_s": res["t_published"] - res["t_start"],
        "p50_ms": pct(lat, 50) * 1000,
        "p99_ms": pct(lat, 99) * 1000,
        "max_ms": max(lat) * 1000 if lat else float("nan"),
        "server_cpu_s": cpu1 - cpu0,
        "server_cpu_us_per_delivery": (cpu1 - cpu0) / max(1, got["frames"]) * 1e6,
        "client_cpu_s": got["cpu"] - client_cpu0,
        "bytes": got["bytes"],
        **verdict,
    }


def measure_steady(
    pub: Publisher, clients: Clients, server_pid: int, rate: float, seconds: float, n: int
) -> dict[str, Any]:
    clients.arm()
    cpu0 = cpu_seconds(server_pid)
    t0 = time.time()
    res = pub.rate(rate, seconds)
    count = len(res["ids"])
    got = clients.wait(count, timeout=60)
    cpu1 = cpu_seconds(server_pid)
    verdict = clients.verdict(res["ids"])
    lat = got["latencies"]
    return {
        "rate": rate,
        "seconds": seconds,
        "events": count,
        "achieved_rate": count / max(1e-9, res["t_published"] - res["t_start"]),
        "expected": count * n,
        "delivered": got["frames"],
        "p50_ms": pct(lat, 50) * 1000,
        "p99_ms": pct(lat, 99) * 1000,
        "max_ms": max(lat) * 1000 if lat else float("nan"),
        "server_cpu_pct": (cpu1 - cpu0) / max(1e-9, time.time() - t0) * 100,
        **verdict,
    }


def pin_postgres(pg: BenchPostgres) -> None:
    """The cluster's processes on the clients' core, away from the server under test."""
    pid_file = pg.data / "postmaster.pid"
    postmaster = int(pid_file.read_text().split()[0])
    pin_tree(postmaster, CLIENT_CORE)


def run_target(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    stack = contextlib.ExitStack()
    server_kind, _, variant = kind.partition("+")
    exiting = variant == "exit"
    with stack:
        if kind == "bare":
            server: Gateway | BareServer = stack.enter_context(BareServer())
        else:
            redis = stack.enter_context(RedisServer())
            if redis.proc is not None:
                pin(redis.proc.pid, CLIENT_CORE)
            env = {}
            if args.database == "postgres":
                pg = stack.enter_context(BenchPostgres(durable=True))
                pin_postgres(pg)
                env["DATABASE_URL"] = pg.url
            server = stack.enter_context(Gateway(server_kind, redis_url=redis.url, env=env))
        stages = args.events if args.database == "postgres" and kind != "bare" else 0
        pub = stack.enter_context(Publisher(server, stages=stages))
        profiler = None
        rss0 = rss_kb(server.pid)
        clients = stack.enter_context(
            Clients(server, args.clients, procs=args.client_procs, concurrency=args.concurrency)
        )
        conn = clients.connect_report
        print(
            f"  [{kind}] {conn['authed'] or conn['established']}/{args.clients} clients ready "
            f"in {conn['elapsed_s']:.1f}s (failed {conn['failed']})",
            flush=True,
        )
        if conn["failed"]:
            print(f"  [{kind}] failures: {conn['failures_sample']} {conn['errors']}", flush=True)
        n_ok = conn["authed"] if conn["authed"] is not None else conn["established"]
        # Warm-up burst (not measured): first-time code paths, Redis subscription, JIT-free
        # but cache-warm CPython.
        measure_burst(pub, clients, server.pid, 10, n_ok)
        if args.profile and kind != "bare":
            profiler = Profiler(server.pid, Path(args.profile) / f"fanout-{kind}.txt")
        bursts = []
        for rep in range(args.reps):
            if exiting:
                with Publisher(server, exiting=True, stages=stages) as script:
                    r = measure_burst(script, clients, server.pid, args.events, n_ok)
            else:
                r = measure_burst(pub, clients, server.pid, args.events, n_ok)
            bursts.append(r)
            print(
                f"  [{kind}] burst {rep + 1}: {r['delivered']}/{r['expected']} delivered, "
                f"{r['delivered_per_s']:,.0f}/s, p50 {r['p50_ms']:.1f} ms, p99 "
                f"{r['p99_ms']:.1f} ms, "
                f"lost {r['lost']}, dup {r['duplicates']}, server CPU {r['server_cpu_s']:.2f}s "
                f"({r['server_cpu_us_per_delivery']:.1f} us/delivery), client CPU "
                f"{r['client_cpu_s']:.2f}s",
                flush=True,
            )
        if profiler is not None:
            profiler.stop()
        steady = None
        if args.steady_seconds > 0:
            if args.profile and kind != "bare":
                profiler = Profiler(server.pid, Path(args.profile) / f"fanout-{kind}-steady.txt")
            steady = measure_steady(
                pub, clients, server.pid, args.steady_rate, args.steady_seconds, n_ok
            )
            if profiler is not None:
                profiler.stop()
            print(
                f"  [{kind}] steady {steady['rate']:g}/s x {steady['seconds']:g}s: "
                f"{steady['delivered']}/{steady['expected']} delivered, p50 "
                f"{steady['p50_ms']:.1f} ms, "
                f"p99 {steady['p99_ms']:.1f} ms, max {steady['max_ms']:.1f} ms, lost "
                f"{steady['lost']}, "
                f"server CPU {steady['server_cpu_pct']:.0f}%",
                flush=True,
            )
        rss1 = rss_kb(server.pid)
        return {
            "target": kind,
            "clients": n_ok,
            "connect": conn,
            "bursts": bursts,
            "median_delivered_per_s": median([b["delivered_per_s"] for b in bursts]),
            "median_p50_ms": median([b["p50_ms"] for b in bursts]),
            "median_p99_ms": median([b["p99_ms"] for b in bursts]),
            "median_server_cpu_us_per_delivery": median(
                [b["server_cpu_us_per_delivery"] for b in bursts]
            ),
            "lost_total": sum(b["lost"] for b in bursts),
            "duplicates_total": sum(b["duplicates"] for b in bursts),
            "steady": steady,
            "server_rss_kb": {"before_clients": rss0, "after": rss1},
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--events", type=int, default=200, help="events per burst")
    parser.add_argument("--reps", type=int, default=3, help="bursts per target")
    parser.add_argument("--targets", default="daphne,uvicorn,bare")
    parser.add_argument(
        "--database", choices=("sqlite", "postgres"), default="sqlite", help="the gateway's log"
    )
    parser.add_argument("--client-procs", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=100, help="handshakes in flight")
    parser.add_argument("--steady-rate", type=float, default=50.0)
    parser.add_argument("--steady-seconds", type=float, default=10.0, help="0 to skip")
    parser.add_argument(
        "--profile", default="", help="a directory: py-spy the gateway (bursts, steady)"
    )
    args = parser.parse_args()
    raise_nofile()
    info = machine_info()
    print(
        f"fanout: {args.clients} clients x {args.events}-event bursts x {args.reps}; "
        f"server on core {SERVER_CORE}, clients/trigger/redis on core {CLIENT_CORE}; "
        f"{info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, {info['date_utc']}",
        flush=True,
    )
    results: dict[str, Any] = {}
    for kind in [t.strip() for t in args.targets.split(",") if t.strip()]:
        results[kind] = run_target(kind, args)

    print("\nsummary (medians of the bursts)")
    print(
        f"  {'target':8} {'delivered/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'lost':>6} "
        f"{'us/deliv':>9} {'steady p99':>10}"
    )
    for kind, r in results.items():
        steady = r["steady"]["p99_ms"] if r["steady"] else float("nan")
        print(
            f"  {kind:8} {r['median_delivered_per_s']:>12,.0f} {r['median_p50_ms']:>8.1f} "
            f"{r['median_p99_ms']:>8.1f} {r['lost_total']:>6} "
            f"{r['median_server_cpu_us_per_delivery']:>9.2f} {steady:>10.1f}"
        )
    ratios = {}
    if "bare" in results:
        bare = results["bare"]["median_delivered_per_s"]
        for kind in ("daphne", "uvicorn", "daphne+exit", "uvicorn+exit"):
            if kind in results:
                ratios[f"{kind}/bare"] = results[kind]["median_delivered_per_s"] / bare
                print(f"  {kind}/bare delivered/s ratio: {ratios[f'{kind}/bare']:.2f}")
    if "uvicorn" in results:
        u = results["uvicorn"]
        ok_ratio = ratios.get("uvicorn/bare", 0) >= 0.70
        print(
            f"  targets: uvicorn >= 70% of bare: {'MET' if ok_ratio else 'NOT MET'}; "
            f"zero lost: {'MET' if u['lost_total'] == 0 else 'NOT MET'}; steady p99 < 50 ms: "
            + ("MET" if u["steady"] and u["steady"]["p99_ms"] < 50 else "NOT MET")
        )
    emit_json(
        "fanout",
        {
            "machine": info,
            "params": vars(args),
            "ratios": ratios,
            "results": {
                k: {kk: vv for kk, vv in v.items() if kk != "bursts"} | {"bursts": v["bursts"]}
                for k, v in results.items()
            },
        },
    )


if __name__ == "__main__":
    main()
