"""The trigger process for bench/fanout.py and bench/compression.py (not run by hand).

Gateway mode: Django set up with the server's own env (same SQLite file in WAL mode,
REDIS_URL), events published through `events.bus.event_bus.publish` - validate, PHI guard,
log row, commit, then the background sender's PUBLISH on the Redis pub/sub layer - exactly
the production path of a worker process. Bare mode (`--bare ws://...`): a control message
to bench/bare_server.py, which encodes and broadcasts itself.

Each event is a `stage.progress` whose `itemsProcessed` carries the wall-clock time (µs since
the epoch) taken just before `publish()` was called: clients subtract it from their receive
time, so latency is publish-call → bytes read by the client, across processes on one host.
Every event names its own stage id, so the per-socket progress coalescing (newer progress
for the same stage supersedes a queued one) never applies and every event must arrive.

stdin: `burst N` | `rate PER_SECOND SECONDS` | `quit`; stdout: one JSON line per command.

`--exit-after-burst`: a worker script that publishes and exits. No warm-up event, no explicit
flush: after its one `burst` it leaves the interpreter, and what its background sender still
holds goes out through the flush at exit (events/gateway/transport.py), as for any script.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import string
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ALPHABET = string.digits + string.ascii_lowercase


def rand_id(prefix: str) -> str:
    return prefix + "_" + "".join(secrets.choice(ALPHABET) for _ in range(20))


def make_payload(project: str, run: str, i: int) -> dict[str, Any]:
    return {
        "runId": run,
        "projectId": project,
        "stageId": rand_id("stg"),
        "stageName": "Analyse",
        "stageIndex": 2,
        "progress": i % 101,
        "statusMessage": "Processing 450 of 1000 rows",
        "itemsProcessed": int(time.time() * 1e6),
    }


class GatewayTrigger:
    def __init__(self, project: str, run: str, *, warm: bool = True, stages: int = 0) -> None:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "researchflow.settings")
        import django

        django.setup()
        from events.bus import event_bus
        from events.gateway.transport import flush_background_sender
        from runs import services

        self.services = services

        self.bus = event_bus
        self.flush = flush_background_sender
        self.project = project
        self.run = run
        self.i = 0
        self.stages = _running_stages(project, stages) if stages else []
        self.published: list[int] = []
        if self.stages:
            event_bus.subscribe("stage.progress", lambda e: self.published.append(e["id"]))
        if warm:
            # Warm up: imports, the DB connection, the sender thread and its Redis connection.
            self.one()
            self.flush(10)
        else:
            from django.db import connection

            connection.ensure_connection()

    def one(self) -> int:
        self.i += 1
        if self.stages:
            # The production path of a pipeline: a state change and its event, each on its
            # own stage (nothing coalesces). Its id is known once the stamper has positioned
            # it (ids(), after the burst).
            stage = self.stages[self.i % len(self.stages)]
            self.services.report_progress(stage, 50, items_processed=int(time.time() * 1e6))
            return 0
        return int(
            self.bus.publish("stage.progress", make_payload(self.project, self.run, self.i)).id
        )

    def ids(self, returned: list[int]) -> list[int]:
        """The published ids of the last burst, in order."""
        if not self.stages:
            return returned
        flush = getattr(self.bus, "flush", None)  # trees before the stamper delivered at commit
        if flush is not None:
            flush(30)
        done, self.published = self.published, []
        return done

    def done(self) -> None:
        self.flush(30)


def _running_stages(project_id: str, count: int) -> list[str]:
    """`count` running stages of one running run in the project (for --stages)."""
    from django.contrib.auth.models import User

    from runs import services
    from runs.models import Project

    project = Project.objects.get(pk=project_id)
    owner = User.objects.get(username="alice")
    run = services.create_run(project, "Fan-out bench", [f"S{n}" for n in range(count)], owner)
    services.start_run(run.pk)
    stage_ids = list(run.stages.order_by("position").values_list("pk", flat=True))
    for stage_id in stage_ids:
        services.start_stage(stage_id)
    return stage_ids


class BareTrigger:
    def __init__(self, url: str) -> None:
        import warnings

        from websockets.sync.client import connect

        warnings.filterwarnings("ignore", category=DeprecationWarning)
        self.ws = connect(url, compression=None, open_timeout=10)
        self.ws.recv(10)  # connection.established
        self.ws.send(json.dumps({"type": "bench.control"}))
        self.ws.recv(10)

    def one(self) -> int:
        self.ws.send('{"type":"bench.burst","count":1}')
        return int(json.loads(self.ws.recv(30))["ids"][0])

    def burst(self, n: int) -> list[int]:
        self.ws.send(json.dumps({"type": "bench.burst", "count": n}))
        return list(json.loads(self.ws.recv(120))["ids"])

    def ids(self, returned: list[int]) -> list[int]:
        return returned

    def done(self) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--project", default="")
    parser.add_argument("--run", default="")
    parser.add_argument("--bare", default="")
    parser.add_argument("--exit-after-burst", action="store_true")
    parser.add_argument(
        "--stages", type=int, default=0, help="report progress on N real stages instead"
    )
    args = parser.parse_args()
    exiting = args.exit_after_burst
    trigger: Any = (
        BareTrigger(args.bare)
        if args.bare
        else GatewayTrigger(args.project, args.run, warm=not exiting, stages=args.stages)
    )
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "quit":
            break
        t0 = time.time()
        if parts[0] == "burst":
            n = int(parts[1])
            if isinstance(trigger, BareTrigger):
                ids = trigger.burst(n)
            else:
                ids = [trigger.one() for _ in range(n)]
            t1 = time.time()
            ids = trigger.ids(ids)
            if not exiting:
                trigger.done()
        elif parts[0] == "rate":
            per_s, seconds = float(parts[1]), float(parts[2])
            count = int(per_s * seconds)
            ids = []
            late = 0
            for k in range(count):
                due = t0 + k / per_s
                delay = due - time.time()
                if delay > 0:
                    time.sleep(delay)
                else:
                    late += 1
                ids.append(trigger.one())
            t1 = time.time()
            ids = trigger.ids(ids)
            trigger.done()
        else:
            print(json.dumps({"error": f"unknown command {parts[0]}"}), flush=True)
            continue
        print(
            json.dumps({"ids": ids, "t_start": t0, "t_published": t1, "t_flushed": time.time()}),
            flush=True,
        )
        if exiting:
            break  # the interpreter's exit flushes the sender


if __name__ == "__main__":
    main()
