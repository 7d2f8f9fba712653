"""The floor: a bare `websockets` broadcast server speaking just enough of the /ws protocol.

    python bench/bare_server.py --port 8765

On connect it sends `connection.established`; an `auth` message gets `auth.success` and adds
the socket to the broadcast set. A `bench.control` socket may send
`{"type": "bench.burst", "count": N}`: the server then encodes each of N `stage.progress`
events ONCE (the same envelope and size as the gateway's frames, `itemsProcessed` = the
wall-clock µs at which the trigger arrived) and hands it to `websockets.broadcast` for
every socket, then answers the control socket with the ids. No database, no channel layer,
no per-socket queue: the cheapest correct thing Python can do, the floor the gateway is
compared with.

uvloop (as uvicorn uses), compression off, no keepalive pings (the bench is short) unless
`--ping-interval` is given (websockets' own default is 20 s; the connection bench turns it on,
as the gateway's servers ping every socket too).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import signal
import string
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from websockets import ConnectionClosed, broadcast
from websockets.asyncio.server import ServerConnection, serve

ALPHABET = string.digits + string.ascii_lowercase
PROJECT = "prj_" + "b" * 20
RUN = "run_" + "b" * 20
SUBSCRIBERS: set[ServerConnection] = set()
NEXT_ID = [1]


def iso_now() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def frame(msg_type: str, payload: dict[str, Any]) -> str:
    return orjson.dumps({"type": msg_type, "timestamp": iso_now(), "payload": payload}).decode()


def event_frame(event_id: int, created_us: int) -> str:
    payload = {
        "runId": RUN,
        "projectId": PROJECT,
        "stageId": "stg_" + "".join(secrets.choice(ALPHABET) for _ in range(20)),
        "stageName": "Analyse",
        "stageIndex": 2,
        "progress": event_id % 101,
        "statusMessage": "Processing 450 of 1000 rows",
        "itemsProcessed": created_us,
    }
    return orjson.dumps(
        {"id": event_id, "type": "stage.progress", "timestamp": iso_now(), "payload": payload}
    ).decode()


async def handler(ws: ServerConnection) -> None:
    await ws.send(
        frame(
            "connection.established",
            {
                "clientId": secrets.token_hex(16),
                "version": "1.0",
                "authenticated": False,
                "userId": None,
            },
        )
    )
    try:
        await serve_one(ws)
    except ConnectionClosed:
        pass
    finally:
        SUBSCRIBERS.discard(ws)


async def serve_one(ws: ServerConnection) -> None:
    async for raw in ws:
        msg = orjson.loads(raw)
        kind = msg.get("type")
        if kind == "auth":
            SUBSCRIBERS.add(ws)
            await ws.send(
                frame("auth.success", {"userId": "alice", "projectId": None, "runId": None})
            )
        elif kind == "bench.control":
            await ws.send(frame("bench.ok", {}))
        elif kind == "bench.burst":
            ids = []
            # Every event of a burst is "created" when the trigger arrives, so latency counts
            # the server's queueing too (as the gateway's clock starts at publish()).
            created_us = int(time.time() * 1e6)
            for _ in range(int(msg.get("count", 1))):
                event_id = NEXT_ID[0]
                NEXT_ID[0] += 1
                broadcast(SUBSCRIBERS, event_frame(event_id, created_us))
                ids.append(event_id)
                await asyncio.sleep(0)  # let the loop flush, as a server between events
            await ws.send(orjson.dumps({"type": "bench.done", "ids": ids}).decode())
        elif kind == "ping":
            await ws.send(frame("pong", {}))


async def main(port: int, ping_interval: float | None) -> None:
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(
        handler,
        "127.0.0.1",
        port,
        compression=None,
        ping_interval=ping_interval,
        max_queue=64,
        backlog=2048,
    ):
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--ping-interval", type=float, default=None)
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(main(args.port, args.ping_interval))
