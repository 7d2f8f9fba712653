"""Many idle authenticated sockets on one server process: memory per socket and accept rate,
under daphne and uvicorn, next to a bare `websockets` server (bench/bare_server.py, the floor).

    .venv/bin/python bench/connections.py                       # 10,000 sockets, all three
    .venv/bin/python bench/connections.py -n 5000 --targets uvicorn --concurrency 200

Per target: the server (SQLite, in-memory layer, pinned to core 0) gets one warm-up socket
(so the hub, Django and the consumer code are loaded), then RSS is read from
/proc/<pid>/status (VmRSS). Client processes on core 1 open N sockets with `--concurrency`
handshakes in flight; accepts/s = N / time from the first connect() to the last
`connection.established` (TCP accept + HTTP upgrade + ASGI connect + accept + the first
frame). Then every socket authenticates (REST token, STAGE_EVENTS) and the sockets sit idle;
RSS is read again after a settle time. Per socket = (RSS after - RSS before) / N. The
server's idle CPU with N sockets is reported too (per-socket timers cost even when idle).

`bare` is bench/bare_server.py with websockets' default keepalive (a ping every 20 s, as the
gateway's servers do): its `auth` answers `auth.success` and adds the socket to a set. The
summary gives each server's KiB per socket ÷ bare's, measured in the same run.
"""

from __future__ import annotations

import argparse
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
    cpu_seconds,
    emit_json,
    machine_info,
    median,
    raise_nofile,
    rss_kb,
)


def run_target(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    target: Gateway | BareServer = (
        BareServer(ping_interval=20.0) if kind == "bare" else Gateway(kind)
    )
    with target as server:
        with Clients(server, 1, core=CLIENT_CORE) as warm:
            assert warm.connect_report["authed"] == 1, warm.connect_report
            time.sleep(0.5)
            rss0 = rss_kb(server.pid)
            traced = kind.endswith("-tm")
            if traced:
                trigger = Path(f"/tmp/rf-bench-tracemalloc-{server.pid}.trigger")
                trigger.touch()  # tracemalloc baseline
                for _ in range(300):
                    if not trigger.exists():
                        break
                    time.sleep(0.1)
                time.sleep(0.5)
                rss0 = rss_kb(server.pid)
            profiler = (
                Profiler(server.pid, Path(args.profile) / f"connections-{kind}.txt")
                if args.profile
                else None
            )
            cpu0 = cpu_seconds(server.pid)
            clients = Clients(
                server,
                args.sockets,
                procs=args.client_procs,
                core=CLIENT_CORE,
                concurrency=args.concurrency,
                auth=False,
                connect_timeout=args.timeout,
            )
            with clients:
                conn = clients.connect_report
                cpu1 = cpu_seconds(server.pid)
                rss_open = rss_kb(server.pid)
                accepts = conn["established"] / max(1e-9, conn["elapsed_s"])
                print(
                    f"  [{kind}] {conn['established']}/{args.sockets} sockets established in "
                    f"{conn['elapsed_s']:.1f}s = {accepts:,.0f} accepts/s (handshake p50 "
                    f"{conn['handshake_p50_ms']:.0f} ms, p99 {conn['handshake_p99_ms']:.0f} ms; "
                    f"failed {conn['failed']} {conn['failures_sample'][:2]}); server CPU "
                    f"{(cpu1 - cpu0) / max(1, conn['established']) * 1e6:.0f} us/accept",
                    flush=True,
                )
                auth = clients.auth_all(args.concurrency, args.timeout)
                print(
                    f"  [{kind}] {auth['authed']} authenticated in {auth['elapsed_s']:.1f}s "
                    f"({auth['authed'] / max(1e-9, auth['elapsed_s']):,.0f}/s, failed "
                    f"{auth['failed']})",
                    flush=True,
                )
                if profiler is not None:
                    profiler.stop()
                time.sleep(args.settle)
                rss1 = rss_kb(server.pid)
                idle_profiler = (
                    Profiler(server.pid, Path(args.profile) / f"connections-idle-{kind}.txt")
                    if args.profile
                    else None
                )
                c0 = cpu_seconds(server.pid)
                time.sleep(args.idle)
                idle_cpu = (cpu_seconds(server.pid) - c0) / args.idle * 100
                if idle_profiler is not None:
                    idle_profiler.stop()
                still_open = clients.count_open()
                if traced:
                    Path(f"/tmp/rf-bench-tracemalloc-{server.pid}.trigger").touch()
                    dump = Path(f"/tmp/rf-bench-tracemalloc-{server.pid}.txt")
                    for _ in range(600):
                        if dump.exists():
                            break
                        time.sleep(0.2)
                    time.sleep(0.5)
                    if dump.exists():
                        print(f"  [{kind}] tracemalloc growth for {args.sockets} sockets:")
                        print("\n".join("    " + ln for ln in dump.read_text().splitlines()))
                        dump.unlink()
                n = conn["established"]
                per_socket_kb = (rss1 - rss0) / max(1, n)
                print(
                    f"  [{kind}] RSS {rss0 / 1024:.0f} MiB -> {rss_open / 1024:.0f} MiB (open) -> "
                    f"{rss1 / 1024:.0f} MiB (authenticated, idle): {per_socket_kb:.1f} KiB per "
                    f"socket; idle server CPU {idle_cpu:.1f}% of a core; {still_open} still open",
                    flush=True,
                )
        return {
            "target": kind,
            "sockets": n,
            "accepts_per_s": accepts,
            "connect": conn,
            "auth": auth,
            "rss_kb": {"before": rss0, "open": rss_open, "authenticated": rss1},
            "kib_per_socket": per_socket_kb,
            "kib_per_socket_unauthenticated": (rss_open - rss0) / max(1, n),
            "idle_cpu_pct": idle_cpu,
            "still_open": still_open,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--sockets", type=int, default=10_000)
    parser.add_argument("--targets", default="bare,uvicorn,daphne")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=100, help="handshakes in flight")
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument(
        "--idle",
        type=float,
        default=20.0,
        help="seconds to sample idle CPU (>= the 20 s server ping interval, so pings count)",
    )
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument(
        "--profile", default="", help="a directory: py-spy the server while sockets connect"
    )
    args = parser.parse_args()
    limit = raise_nofile()
    if limit < args.sockets + 1000:
        sys.exit(f"RLIMIT_NOFILE is {limit}: too low for {args.sockets} sockets")
    info = machine_info()
    print(
        f"connections: {args.sockets} idle authenticated sockets per server; server on core "
        f"{SERVER_CORE}, {args.client_procs} client process(es) on core {CLIENT_CORE}; "
        f"{info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, {info['date_utc']}",
        flush=True,
    )
    results: dict[str, list[dict[str, Any]]] = {}
    for kind in [t.strip() for t in args.targets.split(",") if t.strip()]:
        for _ in range(args.reps):
            results.setdefault(kind, []).append(run_target(kind, args))
    print("\nsummary (medians)")
    summary = {}
    for kind, runs in results.items():
        kib = median([r["kib_per_socket"] for r in runs])
        acc = median([r["accepts_per_s"] for r in runs])
        idle = median([r["idle_cpu_pct"] for r in runs])
        summary[kind] = {"kib_per_socket": kib, "accepts_per_s": acc, "idle_cpu_pct": idle}
    bare = summary.get("bare", {}).get("kib_per_socket")
    for kind, figures in summary.items():
        kib = figures["kib_per_socket"]
        ratio = ""
        if bare and kind != "bare":
            figures["x_bare"] = kib / bare
            met = "MET" if kib <= 1.3 * bare else "NOT MET"
            ratio = f" = x{kib / bare:.2f} bare ({met} <= x1.3),"
        print(
            f"  {kind:8} {kib:6.1f} KiB/socket{ratio} {figures['accepts_per_s']:7,.0f} "
            f"accepts/s, idle CPU {figures['idle_cpu_pct']:.1f}% with "
            f"{results[kind][0]['sockets']} sockets"
        )
    emit_json(
        "connections",
        {"machine": info, "params": vars(args), "summary": summary, "runs": results},
    )


if __name__ == "__main__":
    main()
