"""A Redis outage while a server publishes: two log lines per failing operation (one when it
starts failing, one when it recovers), no traceback flood, the failures counted in metrics,
and every event still delivered (the hub repairs from the log)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator

import pytest
from websockets.sync.client import connect

from devtools.servers import DEMO_PASSWORDS, AppServer, RedisServer, wait_for_port

pytestmark = pytest.mark.e2e

RATE = 50  # events/s, the measurement
OUTAGE = 2.0  # seconds Redis is down


class RestartableRedis(RedisServer):
    def __enter__(self) -> RestartableRedis:
        super().__enter__()
        return self

    def down(self) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(10)

    def up(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, proc=self.proc)


@pytest.fixture
def servers() -> Iterator[tuple[RestartableRedis, AppServer]]:
    with (
        RestartableRedis() as redis,
        AppServer(env={"REDIS_URL": redis.url, "WS_GAP_CHECK_INTERVAL": "1"}) as app,
    ):
        yield redis, app


def metric(app: AppServer, token: str, name: str, op: str) -> float:
    req = urllib.request.Request(app.url + "/metrics", headers={"Authorization": f"Token {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read().decode()
    found = re.search(rf'^{name}{{op="{op}"}} ([0-9.e+]+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_a_redis_outage_logs_once_and_once_on_recovery_and_loses_nothing(
    servers: tuple[RestartableRedis, AppServer],
) -> None:
    redis, app = servers
    token = app.token("admin", DEMO_PASSWORDS["admin"])
    project = app.api("GET", "/api/projects/", token=token)["results"][0]["id"]
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    ws = connect(app.ws_url, open_timeout=10, additional_headers={"Origin": app.url})
    assert json.loads(ws.recv(10))["type"] == "connection.established"
    ws.send(
        json.dumps({"type": "auth", "payload": {"token": token, "eventTypes": ["run.created"]}})
    )
    assert json.loads(ws.recv(10))["type"] == "auth.success"

    created: list[str] = []
    stop = threading.Event()

    def publish() -> None:
        # POST /api/runs at RATE per second: each commits a run.created in the server.
        n = 0
        while not stop.is_set():
            n += 1
            try:
                run = app.api(
                    "POST",
                    "/api/runs/",
                    {"projectId": project, "name": f"r{n}", "stages": ["a"]},
                    token,
                )
                created.append(run["id"])
            except urllib.error.HTTPError:
                pass  # a refused write logs no event; what counts is what was created
            stop.wait(1 / RATE)

    log_before = app.log.stat().st_size
    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        deadline = time.monotonic() + 10
        while len(created) < RATE // 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        redis.down()
        down_at = time.monotonic()
        while time.monotonic() - down_at < OUTAGE:
            time.sleep(0.05)  # the outage itself is what is measured: a fixed length
        redis.up()
        time.sleep(1.0)  # publishing goes on a while after the restart
    finally:
        stop.set()
        publisher.join(30)

    seen: set[str] = set()
    deadline = time.monotonic() + 20
    while set(created) - seen and time.monotonic() < deadline:
        try:
            frame = json.loads(ws.recv(max(0.01, deadline - time.monotonic())))
        except TimeoutError:
            break
        if frame.get("type") == "run.created":
            seen.add(frame["payload"]["runId"])
    ws.close()
    assert not set(created) - seen, f"{len(set(created) - seen)} of {len(created)} lost"

    with open(app.log, "rb") as f:
        f.seek(log_before)
        text = f.read().decode(errors="replace")
    lines = text.splitlines()
    failing = [line for line in lines if "channel layer send failing" in line]
    recovered = [line for line in lines if "channel layer send recovered" in line]
    print(
        f"\n{len(created)} events, outage {OUTAGE}s: {len(lines)} log lines, {len(text)} bytes; "
        f"{text.count('Traceback')} tracebacks; send failing={len(failing)} "
        f"recovered={len(recovered)}; "
        + " | ".join(line for line in lines if "channel layer" in line)
    )
    (app.tmp.parent / "rf-outage-last.log").write_text(text)  # for reading after a failure
    assert "Traceback" not in text
    assert len(failing) == 1 and len(recovered) == 1, lines[-20:]
    receive = [line for line in lines if "channel layer receive" in line]
    assert len(receive) <= 2, receive  # its outage (and recovery), if the receive side saw it
    assert metric(app, token, "researchflow_channel_layer_errors_total", "send") >= 1
