"""Routing by project shard: the CPU a server process spends on events none of its sockets may
see (issue 13, part 1).

Redis, one SQLite log, two server processes: A with one socket scoped to project X, B with one
scoped to project Y (X and Y in different shards). A publisher process (bench/_publisher.py,
the production path of a worker: bus → log → Redis) publishes N events on Y; the bench waits
until B's socket has them all, and reports each process's CPU over the burst and
`foreign_ratio` = CPU(A) / CPU(B). With `--shards 1` every project is in one shard, so every
process hears every event: the behaviour before routing, for comparison in the same session.

    .venv/bin/python bench/routing.py                  # K=1 then K=16, 20,000 events each
    .venv/bin/python bench/routing.py --events 5000 --shards 16

Loopback only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BENCH_ENV,
    AppServer,
    Gateway,
    Publisher,
    RedisServer,
    cpu_seconds,
    emit_json,
    machine_info,
)


def _target(app: AppServer, project_id: str, run_id: str) -> Gateway:
    """What bench/_common.Publisher needs of a gateway (its env, a project and a run), for a
    server this bench started itself."""
    gateway = Gateway.__new__(Gateway)
    gateway.app, gateway.project_id, gateway.run_id = app, project_id, run_id
    return gateway


def _projects(app: AppServer, token: str, shards: int) -> tuple[str, str]:
    """Two projects in different shards (or, with one shard, any two)."""
    made: dict[int, str] = {}
    for n in range(40):
        project = app.api("POST", "/api/projects/", {"name": f"Routing bench {n}"}, token)
        shard = zlib.crc32(project["id"].encode()) % max(shards, 2)
        made.setdefault(shard, project["id"])
        if len(made) == 2:
            x, y = made.values()
            return x, y
    raise RuntimeError("could not make two projects in different shards")


async def _socket(url: str, token: str, project: str) -> Any:
    import websockets

    ws = await websockets.connect(url, open_timeout=10, compression=None, max_queue=None)
    await asyncio.wait_for(ws.recv(), 10)  # connection.established
    auth = {"token": token, "projectId": project, "eventCategories": ["STAGE_EVENTS"]}
    await ws.send(json.dumps({"type": "auth", "payload": auth}))
    reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert reply["type"] == "auth.success", reply
    return ws


async def _count_until(ws: Any, last_id: int, limit: float) -> int:
    got = 0
    deadline = time.monotonic() + limit
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"socket stopped after {got} events")
        message = json.loads(await asyncio.wait_for(ws.recv(), left))
        if "id" in message:
            got += 1
            if message["id"] >= last_id:
                return got


def run(shards: int, events: int, server: str) -> dict[str, Any]:
    with RedisServer() as redis, tempfile.TemporaryDirectory(prefix="rf-bench-routing-") as var:
        env = {
            **BENCH_ENV,
            "REDIS_URL": redis.url,
            "DATABASE_URL": f"sqlite:///{Path(var) / 'db.sqlite3'}",
            "WS_EVENT_SHARDS": str(shards),
        }
        a = AppServer(server, env=env, seed=False)
        a.manage("migrate", "--noinput")
        a.manage("seed_demo", "--force")
        a.migrate = False
        with a, AppServer(server, env=env, migrate=False, seed=False) as b:
            token = a.token("admin", BENCH_ENV["DEMO_PASSWORD"])
            x, y = _projects(a, token, shards)
            run_y = a.api(
                "POST", "/api/runs/", {"projectId": y, "name": "R", "stages": ["S"]}, token
            )
            assert a.proc is not None and b.proc is not None
            with Publisher(_target(a, y, run_y["id"])) as publisher:

                async def measure() -> dict[str, Any]:
                    on_x = await _socket(a.ws_url, token, x)
                    on_y = await _socket(b.ws_url, token, y)
                    await asyncio.sleep(0.5)  # both hubs settled and idle
                    assert a.proc is not None and b.proc is not None
                    cpu_a, cpu_b = cpu_seconds(a.proc.pid), cpu_seconds(b.proc.pid)
                    t0 = time.monotonic()
                    done = await asyncio.to_thread(publisher.burst, events)
                    got = await _count_until(on_y, int(done["ids"][-1]), 120)
                    await asyncio.sleep(0.3)  # A's share of the tail, if it hears Y
                    spent_a = cpu_seconds(a.proc.pid) - cpu_a
                    spent_b = cpu_seconds(b.proc.pid) - cpu_b
                    elapsed = time.monotonic() - t0
                    await on_x.close()
                    await on_y.close()
                    return {
                        "delivered_on_y": got,
                        "cpu_foreign_s": round(spent_a, 3),
                        "cpu_serving_s": round(spent_b, 3),
                        "foreign_ratio": round(spent_a / spent_b, 3) if spent_b else None,
                        "foreign_us_per_event": round(spent_a / events * 1e6, 2),
                        "serving_us_per_event": round(spent_b / events * 1e6, 2),
                        "seconds": round(elapsed, 2),
                    }

                result = asyncio.run(measure())
    return {"shards": shards, "events": events, "server": server, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--shards", default="1,16", help="K values to run, comma-separated")
    parser.add_argument("--server", default="daphne", choices=["daphne", "uvicorn"])
    args = parser.parse_args()
    print(json.dumps({"machine": machine_info()}))
    for shards in (int(k) for k in args.shards.split(",")):
        result = run(shards, args.events, args.server)
        print(
            f"K={shards:<3} {args.server}: foreign/serving CPU = {result['foreign_ratio']} "
            f"({result['cpu_foreign_s']} s / {result['cpu_serving_s']} s over "
            f"{result['events']} events; {result['foreign_us_per_event']} vs "
            f"{result['serving_us_per_event']} us/event)",
            flush=True,
        )
        emit_json("routing", {**result, "machine": machine_info()})


if __name__ == "__main__":
    main()
