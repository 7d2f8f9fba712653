"""permessage-deflate under uvicorn: bytes on the wire, server CPU and memory, off vs on.

    .venv/bin/python bench/compression.py                 # 200 clients, 200-event bursts, 3 reps
    .venv/bin/python bench/compression.py --clients 500 --events 100

Both runs use the same clients, all OFFERING permessage-deflate (the browser default); the
server without `--compression` declines, with it accepts. Events come from a separate
publisher process through the EventBus and Redis (as in bench/fanout.py). Measured per burst:
- server CPU: utime+stime delta of the server process (/proc/<pid>/stat);
- bytes: what the clients read from their sockets (TCP payload = WebSocket frames with
  their headers; no TCP/IP headers), cross-checked with the server's /proc/<pid>/io wchar
  delta (every byte it handed to write()/send());
- memory: server RSS delta per socket after the clients connected (zlib state per socket).
Clients parse with the websockets library in both runs (it inflates when needed).
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
    Clients,
    Gateway,
    Publisher,
    RedisServer,
    cpu_seconds,
    emit_json,
    io_wchar,
    machine_info,
    median,
    pct,
    pin,
    raise_nofile,
    rss_kb,
)


def run(compression: bool, args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(RedisServer())
        if redis.proc is not None:
            pin(redis.proc.pid, CLIENT_CORE)
        server = stack.enter_context(
            Gateway("uvicorn", redis_url=redis.url, compression=compression)
        )
        pub = stack.enter_context(Publisher(server))
        with Clients(server, 1, compression=True):
            time.sleep(0.3)
            rss0 = rss_kb(server.pid)
        clients = stack.enter_context(Clients(server, args.clients, compression=True))
        time.sleep(0.5)
        rss1 = rss_kb(server.pid)
        n = clients.connect_report["authed"]
        clients.arm()
        pub.burst(10)  # warm-up
        clients.wait(10, 60)
        bursts = []
        for rep in range(args.reps):
            clients.arm()
            cpu0, w0 = cpu_seconds(server.pid), io_wchar(server.pid)
            res = pub.burst(args.events)
            got = clients.wait(args.events, 120)
            cpu1, w1 = cpu_seconds(server.pid), io_wchar(server.pid)
            verdict = clients.verdict(res["ids"])
            deliveries = got["frames"]
            r = {
                "deliveries": deliveries,
                "server_cpu_s": cpu1 - cpu0,
                "server_cpu_us_per_delivery": (cpu1 - cpu0) / max(1, deliveries) * 1e6,
                "client_bytes": got["bytes"],
                "bytes_per_delivery": got["bytes"] / max(1, deliveries),
                "server_wchar": w1 - w0,
                "delivered_per_s": deliveries / max(1e-9, got["last_recv"] - res["t_start"]),
                "p50_ms": pct(got["latencies"], 50) * 1000,
                **verdict,
            }
            bursts.append(r)
            print(
                f"  [{'deflate' if compression else 'plain'}] burst {rep + 1}: {deliveries} "
                f"deliveries, {r['bytes_per_delivery']:.0f} B/delivery (server wrote "
                f"{r['server_wchar'] / max(1, deliveries):.0f} B/delivery), server CPU "
                f"{r['server_cpu_s']:.2f}s = {r['server_cpu_us_per_delivery']:.1f} us/delivery, "
                f"{r['delivered_per_s']:,.0f}/s, lost {r['lost']}",
                flush=True,
            )
        return {
            "compression": compression,
            "clients": n,
            "rss_kb": {"before": rss0, "after_connect": rss1},
            "kib_per_socket": (rss1 - rss0) / max(1, n),
            "bursts": bursts,
            "median_bytes_per_delivery": median([b["bytes_per_delivery"] for b in bursts]),
            "median_cpu_us_per_delivery": median([b["server_cpu_us_per_delivery"] for b in bursts]),
            "median_delivered_per_s": median([b["delivered_per_s"] for b in bursts]),
            "lost_total": sum(b["lost"] for b in bursts),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    raise_nofile()
    info = machine_info()
    print(
        f"compression: uvicorn, {args.clients} clients offering permessage-deflate, "
        f"{args.events}-event bursts x {args.reps}; server on core {SERVER_CORE}, clients on "
        f"core {CLIENT_CORE}; {info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, "
        f"{info['date_utc']}",
        flush=True,
    )
    plain = run(False, args)
    deflate = run(True, args)
    b_ratio = deflate["median_bytes_per_delivery"] / plain["median_bytes_per_delivery"]
    c_ratio = deflate["median_cpu_us_per_delivery"] / plain["median_cpu_us_per_delivery"]
    print("\nsummary (medians)")
    for r in (plain, deflate):
        print(
            f"  {'deflate' if r['compression'] else 'plain':8} "
            f"{r['median_bytes_per_delivery']:6.0f} "
            f"B/delivery, {r['median_cpu_us_per_delivery']:5.1f} us server CPU/delivery, "
            f"{r['median_delivered_per_s']:8,.0f} delivered/s, {r['kib_per_socket']:5.1f} KiB "
            "RSS/socket, "
            f"lost {r['lost_total']}"
        )
    print(
        f"  deflate/plain: bytes x{b_ratio:.2f} ({(1 - b_ratio) * 100:.0f}% saved), "
        f"server CPU x{c_ratio:.2f}, memory +"
        f"{deflate['kib_per_socket'] - plain['kib_per_socket']:.0f} KiB/socket"
    )
    emit_json(
        "compression",
        {
            "machine": info,
            "params": vars(args),
            "bytes_ratio": b_ratio,
            "cpu_ratio": c_ratio,
            "plain": plain,
            "deflate": deflate,
        },
    )


if __name__ == "__main__":
    main()
