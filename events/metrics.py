"""Prometheus series for the event system (the seed's "metrics for message rates and latency").

With several worker processes, set PROMETHEUS_MULTIPROC_DIR (an empty directory shared by the
workers) before start-up; `/metrics` then aggregates every process (prometheus_client's
multiprocess mode). Label values are bounded sets (types, categories, codes), never ids.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

SOCKETS_OPEN = Gauge(
    "researchflow_ws_sockets_open", "WebSocket connections open", multiprocess_mode="livesum"
)
CONNECTS = Counter("researchflow_ws_connects_total", "WebSocket connections accepted")
CLOSES = Counter("researchflow_ws_closes_total", "WebSocket closes by close code", ["code"])
SSE_STREAMS_OPEN = Gauge(
    "researchflow_sse_streams_open",
    "Server-Sent Events streams open (GET /events/stream)",
    multiprocess_mode="livesum",
)
SSE_STREAMS = Counter("researchflow_sse_streams_total", "Server-Sent Events streams started")
SSE_CLOSES = Counter(
    "researchflow_sse_closes_total",
    "Server-Sent Events streams ended, by the socket close code named (client: the client left)",
    ["code"],
)
INBOUND = Counter(
    "researchflow_ws_inbound_messages_total", "Client messages received by type", ["type"]
)
EVENTS_PUBLISHED = Counter(
    "researchflow_events_published_total", "Events logged and handed on by type", ["type"]
)
EVENTS_REJECTED = Counter(
    "researchflow_events_rejected_total", "Events refused by schema validation", ["type"]
)
PHI_REJECTIONS = Counter(
    "researchflow_phi_rejections_total", "Events refused by the PHI guard by category", ["category"]
)
DELIVERED = Counter("researchflow_ws_messages_delivered_total", "Event frames sent to sockets")
COALESCED = Counter(
    "researchflow_ws_messages_coalesced_total", "stage.progress frames replaced by a newer one"
)
DROPPED = Counter(
    "researchflow_ws_messages_dropped_total", "Frames dropped (slow-consumer close)", ["reason"]
)
SLOW_CONSUMER_CLOSES = Counter(
    "researchflow_ws_slow_consumer_closes_total", "Sockets closed with 4008 (slow consumer)"
)
RESUME_REPLAYED = Counter(
    "researchflow_ws_resume_events_replayed_total", "Events replayed from the log on resume"
)
RESYNC_REQUIRED = Counter("researchflow_ws_resync_required_total", "resync.required messages sent")
GAPS_REPAIRED = Counter(
    "researchflow_hub_gap_events_repaired_total",
    "Events the hub fetched from the log because the channel layer lost or reordered them",
)
HUB_EVENTS_RECEIVED = Counter(
    "researchflow_hub_events_received_total",
    "Events a process's hubs took in from the channel layer or the log, in log order",
)
HUB_EVENTS_DISCARDED = Counter(
    "researchflow_hub_events_discarded_total",
    "Events a process's hubs took in but could offer to no local socket (none may see them)",
)
LAYER_ERRORS = Counter(
    "researchflow_channel_layer_errors_total", "Channel-layer send/receive errors", ["op"]
)
LAYER_EVENTS_RECEIVED = Counter(
    "researchflow_layer_events_received_total",
    "Events this process's hubs received from the channel layer (the shard groups they hear)",
)
LAYER_EVENTS_UNWANTED = Counter(
    "researchflow_layer_events_unwanted_total",
    "Of those, events of a shard no socket of the hub needed (in flight while it narrowed)",
)
PUBLISH_TO_SEND = Histogram(
    "researchflow_publish_to_send_seconds",
    "From the event's commit to its frame handed to the socket",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
STATS_PUBLISH_ERRORS = Counter(
    "researchflow_ws_stats_publish_errors_total",
    "Failed writes of this process's socket stats to Redis (GET /api/ws/stats/ cluster view)",
)
SHUTDOWN_SOCKETS_LEFT = Counter(
    "researchflow_ws_shutdown_sockets_left_total",
    "Sockets still open when a graceful shutdown's drain timed out (the server then drops them)",
)

# --- exposition ----------------------------------------------------------------------------

_LIVE_FILE = re.compile(r"^gauge_live\w+_(\d+)\.db$")


def multiprocess_dir() -> str | None:
    """The shared directory of multiprocess mode, if this process runs in it."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def render() -> tuple[bytes, str]:
    """The exposition text: every worker's series in multiprocess mode, else this process's."""
    path = multiprocess_dir()
    if path is None:
        return generate_latest(), CONTENT_TYPE_LATEST
    from prometheus_client import multiprocess

    sweep_dead_processes(path)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def sweep_dead_processes(path: str) -> None:
    """Forget the live gauges (sockets open) of workers that died without saying so.

    A worker that exits cleanly marks itself dead (`mark_this_process_dead`); one killed by
    SIGKILL or the OOM killer cannot, and its last "sockets open" would be summed for ever.
    Counters and histograms are kept: a dead worker's past still counts.
    """
    from prometheus_client import multiprocess

    for name in os.listdir(path) if os.path.isdir(path) else ():
        match = _LIVE_FILE.match(name)
        if match and not _alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                multiprocess.mark_process_dead(int(match.group(1)), path)


def mark_this_process_dead() -> None:
    """Called at the end of a graceful shutdown, so this worker's open sockets stop counting."""
    path = multiprocess_dir()
    if path is not None:
        from prometheus_client import multiprocess

        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(os.getpid(), path)


def clean_multiprocess_dir(path: str) -> None:
    """Remove the value files of an earlier run (prometheus_client requires a clean start)."""
    for name in glob.glob(os.path.join(path, "*.db")):
        with contextlib.suppress(OSError):
            os.remove(name)
