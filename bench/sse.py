"""SSE fan-out: N Server-Sent Events clients (`GET /events/stream`) against N WebSocket clients
of the same server, the same bursts, in one run; the ratio of delivered/s.

    .venv/bin/python bench/sse.py                          # 1,000 clients, 100-event bursts
    .venv/bin/python bench/sse.py --servers uvicorn,daphne --reps 5

Shape as bench/fanout.py (2 cores): the server under test pinned to core 0; the client
process, the trigger and redis-server to core 1. Events go the production way (a separate
process publishes through the EventBus and Redis; the server's hub offers each once). Per
server the phases alternate, WebSocket then SSE, `--reps` times each, every phase with its own
N clients (connected, warmed with a 10-event burst, measured, closed), so both paths see the
same server, the same log and the same drift of a shared machine.

Per burst of E events to N clients (E*N deliveries expected): delivered/s = deliveries / (last
byte read by any client - the trigger's start), latency = client receive time - the time in
the event just before publish(), lost = expected - received (every client must get every id
exactly once). The SSE client is as lean as the WebSocket one (bench/_common.py): it decodes
the chunked body and the SSE blocks by hand, and JSON-decodes only each event's `data` line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    CATEGORIES,
    CLIENT_CORE,
    SERVER_CORE,
    Clients,
    Gateway,
    Publisher,
    RedisServer,
    Stats,
    cpu_seconds,
    emit_json,
    machine_info,
    median,
    pct,
    pin,
    raise_nofile,
)


class SSEConn(asyncio.Protocol):
    """One stream: the request, the response head, then the chunked body read by hand."""

    def __init__(self, owner: SSEPool) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.in_body = False
        self.raw = b""  # chunked framing not yet decoded
        self.need = 0  # bytes of the current chunk (with its CRLF) still to come; 0: a size line
        self.text = b""  # decoded body not yet split into SSE blocks
        self.authed: asyncio.Future[float] = owner.loop.create_future()
        self.closed = False
        self.last_id = 0
        self.ids: list[int] = []
        self.dups = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.owner.request)  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.authed.done():
            self.authed.set_exception(ConnectionError("closed before auth.success"))

    def data_received(self, data: bytes) -> None:
        stats = self.owner.stats
        now = time.time()
        stats.bytes += len(data)
        stats.last_recv = now
        if not self.in_body:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            status = self.head.split(b" ", 2)[1]
            if status != b"200":
                self.owner.errors.append(self.head[:200].decode("latin1"))
                self.close()
                return
            data, self.in_body = self.head[end + 4 :], True
        raw = self.raw + data if self.raw else data
        pos, n, out = 0, len(raw), []
        while pos < n:
            if self.need == 0:
                nl = raw.find(b"\r\n", pos)
                if nl < 0:
                    break
                size = int(raw[pos:nl].split(b";", 1)[0], 16)
                pos = nl + 2
                if size == 0:
                    self.closed = True
                    break
                self.need = size + 2
            take = min(self.need, n - pos)
            out.append(raw[pos : pos + take])
            pos += take
            self.need -= take
        self.raw = raw[pos:]
        body = b"".join(out).replace(b"\r\n", b"")  # chunk CRLFs (the SSE text uses \n only)
        text = self.text + body if self.text else body
        *blocks, self.text = text.split(b"\n\n")
        for block in blocks:
            at = block.find(b"data: ")
            if at >= 0:
                self._frame(block[at + 6 :], now)

    def _frame(self, raw: bytes, now: float) -> None:
        import orjson

        msg = orjson.loads(raw)
        event_id = msg.get("id")
        if event_id is not None:
            stats = self.owner.stats
            stats.frames += 1
            if not stats.first_recv:
                stats.first_recv = now
            if event_id <= self.last_id:
                self.dups += 1
            else:
                self.last_id = event_id
            self.ids.append(event_id)
            sent = msg["payload"].get("itemsProcessed")
            if sent:
                stats.latencies.append(now - sent / 1e6)
        elif msg.get("type") == "auth.success" and not self.authed.done():
            self.authed.set_result(now)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class SSEPool:
    """`bench/_common.ClientPool`'s surface for streams (arm, complete, verdict)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, host: str, port: int, token: str) -> None:
        self.loop = loop
        self.host = host
        self.port = port
        query = urllib.parse.urlencode({"categories": ",".join(CATEGORIES)})
        self.request = (
            f"GET /events/stream?{query} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Accept: text/event-stream\r\nAuthorization: Token {token}\r\n\r\n"
        ).encode()
        self.clients: list[SSEConn] = []
        self.stats = Stats()
        self.errors: list[str] = []

    async def open_many(self, n: int, concurrency: int, deadline_s: float) -> dict[str, Any]:
        sem = asyncio.Semaphore(concurrency)
        times: list[float] = []
        failures: list[str] = []
        deadline = time.monotonic() + deadline_s

        async def one() -> None:
            async with sem:
                t0 = time.time()
                conn: SSEConn | None = None
                try:
                    remaining = max(0.1, deadline - time.monotonic())
                    _t, conn = await asyncio.wait_for(
                        self.loop.create_connection(lambda: SSEConn(self), self.host, self.port),
                        remaining,
                    )
                    self.clients.append(conn)
                    t_auth = await asyncio.wait_for(
                        conn.authed, max(0.1, deadline - time.monotonic())
                    )
                    times.append(t_auth - t0)
                except Exception as exc:
                    failures.append(type(exc).__name__ + ": " + str(exc)[:100])
                    if conn is not None:
                        conn.close()

        t0 = time.time()
        await asyncio.gather(*(one() for _ in range(n)))
        return {
            "requested": n,
            "established": len(times),
            "authed": len(times),
            "failed": len(failures),
            "failures_sample": sorted(set(failures))[:5],
            "elapsed_s": time.time() - t0,
            "handshake_p50_ms": pct(times, 50) * 1000 if times else None,
            "handshake_p99_ms": pct(times, 99) * 1000 if times else None,
            "auth_p50_ms": None,
        }

    def arm(self) -> None:
        self.stats.reset()
        for c in self.clients:
            c.ids = []
            c.dups = 0

    def complete(self, expected: int) -> bool:
        return all(len(c.ids) >= expected for c in self.clients if not c.closed)

    def verdict(self, expected_ids: list[int]) -> dict[str, Any]:
        want = set(expected_ids)
        lost = extra = dups = closed = 0
        for c in self.clients:
            seen = set(c.ids)
            lost += len(want - seen)
            extra += len(seen - want)
            dups += len(c.ids) - len(seen)
            closed += c.closed
        return {"lost": lost, "extra": extra, "duplicates": dups, "closed_clients": closed}


def sse_client_worker(
    ctl: Any,
    host: str,
    port: int,
    token: str,
    n: int,
    core: int | None,
    compression: bool,
    concurrency: int,
    auth: bool,
    connect_timeout: float,
) -> None:
    """`bench/_common.client_worker` for streams: the same arguments and pipe commands."""
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    raise_nofile()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    pool = SSEPool(loop, host, port, token)

    def reply(obj: Any) -> None:
        os.set_blocking(ctl.fileno(), True)
        ctl.send(obj)

    async def main() -> None:
        report = await pool.open_many(n, concurrency, connect_timeout)
        report["errors"] = pool.errors[:3]
        reply(report)
        commands: asyncio.Queue[Any] = asyncio.Queue()
        loop.add_reader(ctl.fileno(), lambda: commands.put_nowait(ctl.recv()))
        while True:
            cmd = await commands.get()
            op = cmd[0]
            if op == "arm":
                pool.arm()
                reply({"armed": True, "cpu": time.process_time()})
            elif op == "wait":
                _, expected, timeout, quiet = cmd
                end = time.monotonic() + timeout
                while time.monotonic() < end and not pool.complete(expected):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                await asyncio.sleep(quiet)
                s = pool.stats
                reply(
                    {
                        "complete": pool.complete(expected),
                        "frames": s.frames,
                        "bytes": s.bytes,
                        "first_recv": s.first_recv,
                        "last_event_recv": s.last_recv if s.frames else 0.0,
                        "latencies": s.latencies.tobytes(),
                        "cpu": time.process_time(),
                        "odd_frames": 0,
                    }
                )
            elif op == "verdict":
                reply(pool.verdict(cmd[1]))
            elif op == "count_open":
                reply(len([c for c in pool.clients if not c.closed]))
            elif op == "close":
                for c in pool.clients:
                    c.close()
                await asyncio.sleep(0.2)
                reply({"closed": True})
                return

    try:
        loop.run_until_complete(asyncio.wait_for(main(), 3600))
    finally:
        loop.close()


def burst(pub: Publisher, clients: Clients, server_pid: int, events: int, n: int) -> dict[str, Any]:
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
        "p50_ms": pct(lat, 50) * 1000,
        "p99_ms": pct(lat, 99) * 1000,
        "server_cpu_us_per_delivery": (cpu1 - cpu0) / max(1, got["frames"]) * 1e6,
        "client_cpu_s": got["cpu"] - client_cpu0,
        "bytes_per_delivery": got["bytes"] / max(1, got["frames"]),
        **verdict,
    }


def phase(path: str, server: Gateway, pub: Publisher, args: argparse.Namespace) -> dict[str, Any]:
    worker = sse_client_worker if path == "sse" else None
    with Clients(server, args.clients, concurrency=args.concurrency, worker=worker) as clients:
        conn = clients.connect_report
        n_ok = conn["authed"] or 0
        if conn["failed"]:
            print(f"    [{path}] failures: {conn['failures_sample']} {conn['errors']}", flush=True)
        burst(pub, clients, server.pid, 10, n_ok)  # warm-up, not measured
        r = burst(pub, clients, server.pid, args.events, n_ok)
        r["clients"] = n_ok
        r["connect_s"] = conn["elapsed_s"]
    print(
        f"    [{path:3}] {n_ok} clients (ready in {r['connect_s']:.1f}s): "
        f"{r['delivered']}/{r['expected']} delivered, {r['delivered_per_s']:,.0f}/s, "
        f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, lost {r['lost']}, dup "
        f"{r['duplicates']}, {r['server_cpu_us_per_delivery']:.1f} us/delivery, "
        f"{r['bytes_per_delivery']:.0f} B/delivery",
        flush=True,
    )
    return r


def run_server(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(RedisServer())
        if redis.proc is not None:
            pin(redis.proc.pid, CLIENT_CORE)
        server = stack.enter_context(Gateway(kind, redis_url=redis.url))
        pub = stack.enter_context(Publisher(server))
        phases: dict[str, list[dict[str, Any]]] = {"ws": [], "sse": []}
        for rep in range(args.reps):
            print(f"  [{kind}] round {rep + 1} of {args.reps}", flush=True)
            for path in ("ws", "sse"):
                phases[path].append(phase(path, server, pub, args))
    out: dict[str, Any] = {"phases": phases}
    for path, runs in phases.items():
        out[path] = {
            "median_delivered_per_s": median([r["delivered_per_s"] for r in runs]),
            "median_p50_ms": median([r["p50_ms"] for r in runs]),
            "median_p99_ms": median([r["p99_ms"] for r in runs]),
            "median_server_cpu_us_per_delivery": median(
                [r["server_cpu_us_per_delivery"] for r in runs]
            ),
            "median_bytes_per_delivery": median([r["bytes_per_delivery"] for r in runs]),
            "lost_total": sum(r["lost"] for r in runs),
            "duplicates_total": sum(r["duplicates"] for r in runs),
        }
    ratios = [
        s["delivered_per_s"] / w["delivered_per_s"]
        for w, s in zip(phases["ws"], phases["sse"], strict=True)
    ]
    out["sse_over_ws"] = median(ratios)
    out["sse_over_ws_per_round"] = ratios
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--events", type=int, default=100, help="events per burst")
    parser.add_argument("--reps", type=int, default=3, help="rounds (a WS and an SSE phase each)")
    parser.add_argument("--servers", default="uvicorn")
    parser.add_argument("--concurrency", type=int, default=100, help="handshakes in flight")
    args = parser.parse_args()
    raise_nofile()
    info = machine_info()
    print(
        f"sse: {args.clients} clients x {args.events}-event bursts x {args.reps} rounds; "
        f"server on core {SERVER_CORE}, clients/trigger/redis on core {CLIENT_CORE}; "
        f"{info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, {info['date_utc']}",
        flush=True,
    )
    results = {kind: run_server(kind, args) for kind in args.servers.split(",") if kind}
    print("\nsummary (medians of the rounds)")
    print(
        f"  {'server':8} {'path':4} {'delivered/s':>12} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'lost':>5} {'us/deliv':>9} {'B/deliv':>8}"
    )
    for kind, r in results.items():
        for path in ("ws", "sse"):
            p = r[path]
            print(
                f"  {kind:8} {path:4} {p['median_delivered_per_s']:>12,.0f} "
                f"{p['median_p50_ms']:>8.1f} {p['median_p99_ms']:>8.1f} {p['lost_total']:>5} "
                f"{p['median_server_cpu_us_per_delivery']:>9.2f} "
                f"{p['median_bytes_per_delivery']:>8.0f}"
            )
        print(f"  {kind}: SSE / WebSocket delivered/s = {r['sse_over_ws']:.2f} (median of rounds)")
    emit_json("sse", {"machine": info, "params": vars(args), "results": results})


if __name__ == "__main__":
    main()
