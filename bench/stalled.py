"""Stalled clients: what 1,000 sockets that stop reading cost next to 1,000 healthy ones.

    .venv/bin/python bench/stalled.py                        # 1,000 + 1,000, 20 events/s, 3 cycles
    .venv/bin/python bench/stalled.py --healthy 200 --stalled 200 --rate 50 --seconds 40
    .venv/bin/python bench/stalled.py --unbounded            # no byte bounds: the old behaviour

Shape (2 cores, loopback): the gateway (uvicorn, Redis layer) pinned to core 0; the publisher,
the healthy clients (bench/_common.py's fast client), the stalled clients and redis-server to
core 1. Every loop is bounded in count and in time.

The healthy clients stay connected throughout; then, --cycles times (the machines are noisy:
compare within a cycle, quote the median of the cycles):
1. Baseline: the healthy clients alone, a steady R events/s for S0 seconds: p50/p99 latency
   (publish call → bytes read by the client), loss. Then the control (unless --no-control):
   as many extra healthy, reading sockets as there will be stalled ones, for S seconds; the
   same figures for the first clients.
2. The stalled clients connect, authenticate, subscribe (the seed's order), then stop reading
   (their transports pause reading; their kernel receive buffers fill, then the server's).
3. The same steady rate for S seconds (long enough for the bounds to fill and the server to
   close them): healthy p50/p99 and loss again; meanwhile, every 0.5 s, the server's RSS, the
   bytes its kernel holds in the send queues of its sockets (`ss`), and how many sockets it
   has closed with 4008 (/metrics).
4. The stalled clients read again: each must find a 4008 close after the events it had room
   for; then each resumes (auth with `lastEventId`) and must get every later event of phase 3,
   in order, with no gap and no duplicate; then it disconnects.

The server's WS_CLOSE_TIMEOUT is raised past phase 3 (--close-timeout) so that the stalled
clients, which read only in phase 4, can still find their 4008: with the default (10 s) a
client that reads later finds a reset instead (tests/test_ws_stalled_peer.py covers that).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    CLIENT_CORE,
    Clients,
    Gateway,
    Publisher,
    RedisServer,
    emit_json,
    machine_info,
    median,
    pct,
    pin,
    raise_nofile,
    rss_kb,
)

METRICS_TOKEN = "bench-metrics-token-" + "m" * 24
UNBOUNDED = {
    # What the gateway did before the byte bounds: a frame count only, the transport at
    # asyncio's default (64 KiB) and the kernel's autotuning (up to net.ipv4.tcp_wmem's max).
    "WS_SEND_BUFFER_BYTES": str(1 << 40),
    "WS_TRANSPORT_BUFFER_BYTES": "65536",
    "WS_SOCKET_SNDBUF": "0",
}


# --- the stalled clients (a process of their own) ------------------------------------------


class StalledConn(asyncio.Protocol):
    """One socket through websockets' sans-I/O client: handshake, auth, subscribe, then
    `stall()` pauses reading until `drain()`, which reads to the close."""

    def __init__(self, url: str) -> None:
        from websockets.client import ClientProtocol
        from websockets.uri import parse_uri

        self.proto = ClientProtocol(parse_uri(url), max_size=2**20)
        self.transport: asyncio.Transport | None = None
        self.inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.ids: list[int] = []
        self.bytes_after_stall = 0
        self.stalled = False
        self.close_code: int | None = None
        self.until = 0  # set `reached` once an event id >= this has arrived
        self.reached = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.proto.send_request(self.proto.connect())
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.inbox.put_nowait(None)

    def data_received(self, data: bytes) -> None:
        from websockets.frames import Close, Opcode

        self.proto.receive_data(data)
        for ev in self.proto.events_received():
            opcode = getattr(ev, "opcode", None)
            if opcode is Opcode.TEXT:
                msg = json.loads(ev.data)
                if "id" in msg:
                    self.ids.append(msg["id"])
                    if self.until and msg["id"] >= self.until:
                        self.reached.set()
                    if self.stalled:
                        self.bytes_after_stall += len(ev.data)
                else:
                    self.inbox.put_nowait(msg)
            elif opcode is Opcode.CLOSE:
                self.close_code = Close.parse(ev.data).code
        self._flush()

    def _flush(self) -> None:
        out = self.proto.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))

    def send(self, msg: dict[str, Any]) -> None:
        self.proto.send_text(json.dumps(msg).encode())
        self._flush()

    async def expect(self, kind: str, timeout: float = 60) -> dict[str, Any]:  # noqa: ASYNC109
        while True:
            msg = await asyncio.wait_for(self.inbox.get(), timeout)
            if msg is None:
                raise ConnectionError(f"closed while waiting for {kind}")
            if msg["type"] == kind:
                return msg
            if msg["type"] in ("auth.failed", "error"):
                raise RuntimeError(f"{msg['type']}: {msg.get('payload')}")

    def stall(self) -> None:
        self.stalled = True
        assert self.transport is not None
        self.transport.pause_reading()

    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109
        assert self.transport is not None
        self.transport.resume_reading()
        with contextlib.suppress(TimeoutError):
            while (await asyncio.wait_for(self.inbox.get(), timeout)) is not None:
                pass


def stalled_worker(
    ctl: Any, host: str, port: int, token: str, n: int, core: int, rcvbuf: int
) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    raise_nofile()
    loop = asyncio.new_event_loop()
    url = f"ws://{host}:{port}/ws"

    async def open_one(sem: asyncio.Semaphore, errors: list[str], **auth: Any) -> StalledConn:
        async with sem:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if rcvbuf:  # before connect: the window a client advertises never grows past it
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await loop.sock_connect(sock, (host, port))
            _t, conn = await loop.create_connection(lambda: StalledConn(url), sock=sock)
            try:
                await conn.expect("connection.established")
                conn.send({"type": "auth", "payload": {"token": token, **auth}})
                await conn.expect("auth.success")
                if "lastEventId" not in auth:
                    conn.send({"type": "subscribe", "payload": {"eventCategory": "STAGE_EVENTS"}})
                    await conn.expect("subscription.added")
            except Exception as exc:
                errors.append(type(exc).__name__ + ": " + str(exc)[:100])
            return conn

    async def cycle(sem: asyncio.Semaphore) -> None:
        errors: list[str] = []
        conns = list(await asyncio.gather(*(open_one(sem, errors) for _ in range(n))))
        for conn in conns:
            conn.stall()
        ctl.send({"stalled": len(conns) - len(errors), "errors": errors[:3]})
        # ("drain", published ids): read to the close, then resume each and check.
        _, published = await loop.run_in_executor(None, ctl.recv)
        t0 = time.monotonic()
        await asyncio.gather(*(c.drain(10) for c in conns))
        drained_s = time.monotonic() - t0
        codes: dict[str, int] = {}
        for c in conns:
            codes[str(c.close_code)] = codes.get(str(c.close_code), 0) + 1
            if c.transport is not None:
                c.transport.close()
        before = [sum(1 for i in c.ids if i >= published[0]) for c in conns]
        sizes = [c.bytes_after_stall for c in conns]

        async def resume(c: StalledConn) -> bool:
            last = c.ids[-1] if c.ids else published[0] - 1
            r = await open_one(sem, errors, lastEventId=last, eventCategories=["STAGE_EVENTS"])
            if last < published[-1]:
                r.until = published[-1]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(r.reached.wait(), 120)
            assert r.transport is not None
            r.transport.close()
            mine = [i for i in c.ids if i >= published[0]]
            return mine + r.ids == published

        t1 = time.monotonic()
        complete = await asyncio.gather(*(resume(c) for c in conns))
        ctl.send(
            {
                "close_codes": codes,
                "drain_s": drained_s,
                "events_read_before_close_p50": pct(before, 50),
                "events_read_before_close_max": max(before, default=0),
                "bytes_read_before_close_p50": pct(sizes, 50),
                "bytes_read_before_close_max": max(sizes, default=0),
                "resumed_complete": sum(complete),
                "resume_s": time.monotonic() - t1,
                "errors": errors[:3],
            }
        )

    async def main() -> None:
        sem = asyncio.Semaphore(50)
        # "open" starts a cycle, "quit" ends the process.
        while await loop.run_in_executor(None, ctl.recv) == "open":
            await cycle(sem)

    try:
        loop.run_until_complete(asyncio.wait_for(main(), 3600))
    finally:
        loop.close()


# --- the server's side, sampled while the stalled sockets fill ----------------------------


def kernel_send_queues(port: int) -> tuple[int, int]:
    """(bytes in the send queues of the server's sockets, the largest), from `ss`."""
    out = subprocess.run(
        ["ss", "-tnH", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    queues = [int(line.split()[1]) for line in out.splitlines() if line.strip()]
    return sum(queues), max(queues, default=0)


def slow_consumer_closes(url: str) -> float:
    req = urllib.request.Request(
        url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read().decode()
    match = re.search(r"^researchflow_ws_slow_consumer_closes_total ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


class Sampler(threading.Thread):
    def __init__(self, gw: Gateway, stalled: int) -> None:
        super().__init__(daemon=True)
        self.gw = gw
        self.stalled = stalled
        self.samples: list[dict[str, float]] = []
        self.stop = threading.Event()
        self.t0 = time.time()

    def run(self) -> None:
        closes = 0.0
        while not self.stop.wait(0.5):
            queued, largest = kernel_send_queues(self.gw.app.port)
            # A busy server may answer /metrics late: keep the last count rather than stop.
            with contextlib.suppress(OSError):
                closes = slow_consumer_closes(self.gw.app.url)
            self.samples.append(
                {
                    "t": time.time() - self.t0,
                    "rss_kb": rss_kb(self.gw.pid),
                    "kernel_send_queue_bytes": queued,
                    "kernel_send_queue_max": largest,
                    "closes_4008": closes,
                }
            )

    def all_closed_after(self, before: float) -> float | None:
        for s in self.samples:
            if s["closes_4008"] - before >= self.stalled:
                return s["t"]
        return None


def steady(pub: Publisher, clients: Clients, rate: float, seconds: float) -> dict[str, Any]:
    clients.arm()
    res = pub.rate(rate, seconds)
    got = clients.wait(len(res["ids"]), timeout=60)
    verdict = clients.verdict(res["ids"])
    lat = got["latencies"]
    return {
        "ids": res["ids"],
        "events": len(res["ids"]),
        "p50_ms": pct(lat, 50) * 1000,
        "p99_ms": pct(lat, 99) * 1000,
        "max_ms": max(lat) * 1000 if lat else float("nan"),
        **verdict,
    }


def _without_ids(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "ids"}


def one_cycle(
    gw: Gateway, pub: Publisher, clients: Clients, ctl: Any, args: argparse.Namespace
) -> dict[str, Any]:
    base = steady(pub, clients, args.rate, args.baseline_seconds)
    print(
        f"  healthy alone:        p50 {base['p50_ms']:.1f} ms, p99 {base['p99_ms']:.1f} ms, "
        f"lost {base['lost']}",
        flush=True,
    )
    control: dict[str, Any] | None = None
    if args.control:
        # The fair comparison: until it is closed, a stalled socket is offered every event like
        # a healthy one, so 1,000 stalled sockets next to 1,000 healthy ones are at least 2,000
        # sockets' fan-out. The same number of extra *reading* sockets shows that part alone.
        with Clients(gw, args.stalled) as extra:
            print(
                f"  control: {extra.connect_report['authed']}/{args.stalled} extra healthy",
                flush=True,
            )
            control = steady(pub, clients, args.rate, args.seconds)
        print(
            f"  next to extra healthy: p50 {control['p50_ms']:.1f} ms, "
            f"p99 {control['p99_ms']:.1f} ms, lost {control['lost']}",
            flush=True,
        )
    ctl.send("open")
    opened = ctl.recv() if ctl.poll(300) else {"stalled": 0, "errors": ["timeout"]}
    print(f"  stalled: {opened['stalled']}/{args.stalled} subscribed, then stopped", flush=True)
    rss_before = rss_kb(gw.pid)
    closes_before = slow_consumer_closes(gw.app.url)

    sampler = Sampler(gw, args.stalled)
    sampler.start()
    loaded = steady(pub, clients, args.rate, args.seconds)
    sampler.stop.set()
    sampler.join(30)
    print(
        f"  next to the stalled:  p50 {loaded['p50_ms']:.1f} ms, p99 {loaded['p99_ms']:.1f} ms, "
        f"lost {loaded['lost']}",
        flush=True,
    )
    samples = sampler.samples
    for phase, figures in (("control", control), ("with stalled", loaded)):
        if figures and figures["closed_clients"]:
            # Healthy sockets must never be closed here: say what the server said about it.
            print(
                f"  !! {figures['closed_clients']} healthy clients closed in the {phase} phase; "
                f"server log tail:\n{gw.log_tail(4000)}",
                file=sys.stderr,
                flush=True,
            )
    ctl.send(("drain", loaded["ids"]))
    after = ctl.recv() if ctl.poll(900) else {"errors": ["timeout"]}
    print(
        f"  stalled read: {after.get('close_codes')}; resumed complete "
        f"{after.get('resumed_complete')}/{args.stalled}",
        flush=True,
    )
    return {
        "baseline": _without_ids(base),
        "control": _without_ids(control) if control else None,
        "with_stalled": _without_ids(loaded),
        "p50_ratio": loaded["p50_ms"] / base["p50_ms"],
        "p99_ratio": loaded["p99_ms"] / base["p99_ms"],
        "p50_ratio_to_control": loaded["p50_ms"] / control["p50_ms"] if control else None,
        "p99_ratio_to_control": loaded["p99_ms"] / control["p99_ms"] if control else None,
        "rss_kb_before_stall": rss_before,
        "rss_kb_peak": max((s["rss_kb"] for s in samples), default=0),
        "rss_kb_end": samples[-1]["rss_kb"] if samples else 0,
        "kernel_send_queue_bytes_peak": max(
            (s["kernel_send_queue_bytes"] for s in samples), default=0
        ),
        "kernel_send_queue_max_per_socket": max(
            (s["kernel_send_queue_max"] for s in samples), default=0
        ),
        "all_4008_within_s": sampler.all_closed_after(closes_before),
        "closes_4008": (samples[-1]["closes_4008"] - closes_before) if samples else 0,
        "stalled": after,
        "samples": samples[:: max(1, len(samples) // 20)],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--healthy", type=int, default=1000)
    parser.add_argument("--stalled", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=20.0, help="events/s")
    parser.add_argument("--cycles", type=int, default=3, help="baseline + stalled phases")
    parser.add_argument(
        "--client-rcvbuf",
        type=int,
        default=16384,
        help="SO_RCVBUF of the stalled clients (0: autotuned, which on loopback hides ~250 KB "
        "per socket in the client's kernel)",
    )
    parser.add_argument("--baseline-seconds", type=float, default=30.0, help="phase 1")
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="phase 3: long enough to fill the bounds"
    )
    parser.add_argument(
        "--close-timeout",
        type=float,
        default=None,
        help="the server's WS_CLOSE_TIMEOUT (default: phase 3 + 120 s, see the module doc)",
    )
    parser.add_argument(
        "--no-control",
        dest="control",
        action="store_false",
        help="skip the control phase (as many extra healthy sockets as stalled ones)",
    )
    parser.add_argument("--unbounded", action="store_true", help="no byte bounds (before)")
    args = parser.parse_args()
    raise_nofile()
    close_timeout = args.close_timeout or args.seconds + 120
    # The healthy clients (bench/_common.py's) never send the protocol's ping: the server closes
    # a socket silent for WS_HEARTBEAT_TIMEOUT (600 s in BENCH_ENV) with 1001, which a run of
    # several cycles outlasts. So the run's whole length, with room to spare.
    run_seconds = args.cycles * (args.baseline_seconds + 2 * args.seconds + 300)
    env = {
        "METRICS_TOKEN": METRICS_TOKEN,
        "WS_RATE_LIMIT": "1000",
        "WS_CLOSE_TIMEOUT": str(close_timeout),
        "WS_HEARTBEAT_TIMEOUT": str(max(600.0, run_seconds)),
    }
    if args.unbounded:
        env.update(UNBOUNDED)
    cycles: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(RedisServer())
        if redis.proc is not None:
            pin(redis.proc.pid, CLIENT_CORE)
        gw = stack.enter_context(Gateway("uvicorn", redis_url=redis.url, env=env))
        pub = stack.enter_context(Publisher(gw))
        clients = stack.enter_context(Clients(gw, args.healthy))
        print(f"healthy: {clients.connect_report['authed']}/{args.healthy} authed", flush=True)

        parent, child = mp.get_context("fork").Pipe()
        host, port = gw.host_port
        worker = mp.get_context("fork").Process(
            target=stalled_worker,
            args=(child, host, port, gw.token, args.stalled, CLIENT_CORE, args.client_rcvbuf),
            daemon=True,
        )
        worker.start()
        for n in range(args.cycles):
            print(f"cycle {n + 1}/{args.cycles}", flush=True)
            cycles.append(one_cycle(gw, pub, clients, parent, args))
        parent.send("quit")
        worker.join(30)

    result = {
        "machine": machine_info(),
        "args": vars(args),
        "env": env,
        "median_p50_ratio": median([c["p50_ratio"] for c in cycles]),
        "median_p99_ratio": median([c["p99_ratio"] for c in cycles]),
        "median_p50_ratio_to_control": median(
            [c["p50_ratio_to_control"] for c in cycles if c["control"]]
        ),
        "median_p99_ratio_to_control": median(
            [c["p99_ratio_to_control"] for c in cycles if c["control"]]
        ),
        "cycles": cycles,
    }
    printed = {k: v for k, v in result.items() if k != "cycles"}
    printed["cycles"] = [{k: v for k, v in c.items() if k != "samples"} for c in cycles]
    print(json.dumps(printed, indent=1), flush=True)
    emit_json("stalled", result)


if __name__ == "__main__":
    main()
