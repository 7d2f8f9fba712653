"""A worker script for tests/test_exit_flush.py: publishes N events through the bus (a real
Redis layer, no server in this process) and exits without calling flush_background_sender().

    python tests/exit_publisher.py COUNT [--in-child] [--hold]

`--in-child` publishes from a multiprocessing child (fork), which ends with os._exit and
skips atexit. `--hold` stretches the sender's hand-off interval to a minute, so all but the
first event are still buffered at exit, whatever the timing (only a flush at exit sends them).
Prints the first and last event id published.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "researchflow.settings")


def publish(count: int, hold: bool) -> None:
    import django

    django.setup()
    from events.bus import event_bus
    from events.gateway import transport

    if hold:
        transport.HAND_OFF_INTERVAL = 60.0
    from runs.models import Run

    run = Run.objects.select_related("project").order_by("pk").first()
    assert run is not None, "seed_demo first"
    stage = run.stages.order_by("position").first()
    assert stage is not None
    ids = []
    for i in range(count):
        payload = {
            "runId": run.pk,
            "projectId": run.project_id,
            "stageId": stage.pk,
            "stageName": stage.name,
            "stageIndex": stage.position,
            "progress": i % 101,
            "statusMessage": f"step {i}",
        }
        ids.append(int(event_bus.publish("stage.progress", payload).id))
    print(ids[0], ids[-1], flush=True)


def main() -> None:
    count, flags = int(sys.argv[1]), sys.argv[2:]
    hold = "--hold" in flags
    if "--in-child" in flags:
        child = multiprocessing.get_context("fork").Process(target=publish, args=(count, hold))
        child.start()
        child.join()
        sys.exit(child.exitcode)
    publish(count, hold)


if __name__ == "__main__":
    main()
