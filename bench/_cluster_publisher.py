"""A publisher process for bench/cluster.py (not run by hand): real state changes through
`runs.services`, one event per transaction, as a worker process commits them.

Django is set up from the environment bench/cluster.py gives it (its PostgreSQL, its Redis), so
each change goes the production way: the stage UPDATE and the log row in one transaction, the
sequencer's stamping after commit, then the background sender's PUBLISH on the Redis layer.

Each change is `report_progress(stage, 50, items_processed=<wall clock in µs just before the
call>)`: the resulting `stage.progress` event carries that time in `itemsProcessed`, which the
clients subtract from their receive time. It only grows, so every call is a real change.

stdin: one JSON object per line, `{"op": "run", "count": N, "rate": R, "projects": [...]}`
(R events/s in total, 0 = as fast as it can; stages of the given projects in turn) or
`{"op": "quit"}`; stdout: one JSON line per command.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def main() -> None:
    stages: dict[str, list[str]] = json.loads(sys.argv[1])  # project id -> stage ids
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "researchflow.settings")
    import django

    django.setup()
    from events.gateway.transport import flush_background_sender
    from runs import services

    def change(stage_id: str) -> None:
        services.report_progress(stage_id, 50, items_processed=int(time.time() * 1e6))

    # Warm up: imports, the database connection, the sender thread and its Redis connection.
    for stage_ids in stages.values():
        change(stage_ids[0])
    flush_background_sender(10)
    print(json.dumps({"ready": True, "pid": os.getpid()}), flush=True)

    for line in sys.stdin:
        cmd: dict[str, Any] = json.loads(line)
        if cmd["op"] == "quit":
            break
        # Interleave the projects: stage k of every project, then stage k+1, …
        per_project = [stages[p] for p in cmd["projects"]]
        order = [
            ids[k] for k in range(max(map(len, per_project))) for ids in per_project if k < len(ids)
        ]
        count, rate = int(cmd["count"]), float(cmd["rate"])
        calls: list[float] = []
        errors: list[str] = []
        cpu0 = time.process_time()
        t_start = time.time()
        for i in range(count):
            if rate > 0:
                delay = t_start + i / rate - time.time()
                if delay > 0:
                    time.sleep(delay)
            began = time.perf_counter()
            try:
                change(order[i % len(order)])
            except Exception as exc:  # counted and reported; the bench fails on any
                errors.append(type(exc).__name__)
                continue
            calls.append(time.perf_counter() - began)
        t_end = time.time()
        flush_background_sender(30)
        print(
            json.dumps(
                {
                    "events": len(calls),
                    "errors": len(errors),
                    "error_kinds": sorted(set(errors)),
                    "t_start": t_start,
                    "t_end": t_end,
                    "t_flushed": time.time(),
                    "call_p50_ms": _pct(calls, 50) * 1000,
                    "call_p99_ms": _pct(calls, 99) * 1000,
                    "cpu_s": time.process_time() - cpu0,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
