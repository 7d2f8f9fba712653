"""Live-server helpers for the stalled-client tests (test_ws_stalled*.py): a publisher process
that commits stage.progress events one by one, and sockets that stop reading."""

from __future__ import annotations

import json
import socket
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from devtools.servers import AppServer

CLIENT_RCVBUF = 8 * 1024

# One event per transaction on the demo project's first run, `pace` seconds apart, from a
# process of its own (the server delivers them through its log check).
_PUBLISH = """
import json, time
from django.db import transaction
from events.bus import event_bus
from runs.models import Project, Run
project = Project.objects.get(name="Demo project")
run = Run.objects.filter(project=project).order_by("created_at").first()
ids = []
for i in range({events}):
    with transaction.atomic():
        record = event_bus.publish("stage.progress", {{
            "runId": run.pk, "projectId": project.pk, "stageId": "stg_%020d" % i,
            "stageName": "Analyse", "stageIndex": 2, "progress": i % 101,
            "statusMessage": "Processing 450 of 1000 rows", "itemsProcessed": i,
        }})
    ids.append(record.id)
    time.sleep({pace})
print("IDS " + json.dumps(ids))
"""


def publish(app: AppServer, events: int, pace: float) -> list[int]:
    """Publish `events` events (blocking: run it in a thread); their ids, in order."""
    out = app.manage("shell", "-c", _PUBLISH.format(events=events, pace=pace), timeout=300)
    ids: list[int] = json.loads(out.split("IDS ", 1)[1])
    assert len(ids) == events
    return ids


async def open_socket(
    app: AppServer, token: str, *, stalled: bool, **auth: Any
) -> ClientConnection:
    """An authenticated socket on STAGE_EVENTS (subscribed in the seed's order unless `auth`
    names the categories). A stalled one reads nothing after the answers: websockets stops
    reading once one frame waits (max_queue=1), and its kernel's receive buffer stays small
    (set before connecting, so the window never grows): what the server must hold is then
    not hidden in the client's kernel."""
    sock = None
    if stalled:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RCVBUF)
        sock.connect(("127.0.0.1", app.port))
        sock.setblocking(False)
    ws = await connect(app.ws_url, sock=sock, max_queue=1 if stalled else 1000, max_size=None)
    assert json.loads(await ws.recv())["type"] == "connection.established"
    await ws.send(json.dumps({"type": "auth", "payload": {"token": token, **auth}}))
    assert json.loads(await ws.recv())["type"] == "auth.success"
    if "eventCategories" not in auth:
        await ws.send(
            json.dumps({"type": "subscribe", "payload": {"eventCategory": "STAGE_EVENTS"}})
        )
        assert json.loads(await ws.recv())["type"] == "subscription.added"
    return ws
