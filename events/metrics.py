"""Prometheus series for the event system (the seed's "metrics for message rates and latency").

With several worker processes, set PROMETHEUS_MULTIPROC_DIR (an empty directory shared by the
workers) before start-up; `/metrics` then aggregates every process (prometheus_client's
multiprocess mode). Label values are bounded sets (types, categories, codes), never ids.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SOCKETS_OPEN = Gauge(
    "researchflow_ws_sockets_open", "WebSocket connections open", multiprocess_mode="livesum"
)
CONNECTS = Counter("researchflow_ws_connects_total", "WebSocket connections accepted")
CLOSES = Counter("researchflow_ws_closes_total", "WebSocket closes by close code", ["code"])
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
RESYNC_REQUIRED = Counter(
    "researchflow_ws_resync_required_total", "resync.required messages sent"
)
GAPS_REPAIRED = Counter(
    "researchflow_hub_gap_events_repaired_total",
    "Events the hub fetched from the log because the channel layer lost or reordered them",
)
LAYER_ERRORS = Counter(
    "researchflow_channel_layer_errors_total", "Channel-layer send/receive errors", ["op"]
)
PUBLISH_TO_SEND = Histogram(
    "researchflow_publish_to_send_seconds",
    "From the event's commit to its frame handed to the socket",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
