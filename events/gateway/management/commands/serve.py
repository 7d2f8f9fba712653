"""Serve HTTP + WebSocket: daphne (the default, `make run`) or uvicorn (production).

    python manage.py serve                      # daphne on $PORT
    python manage.py serve --server uvicorn --workers 4 --compression

Several uvicorn workers share Prometheus series through a directory (prometheus_client's
multiprocess mode): unless PROMETHEUS_MULTIPROC_DIR is set already, this command makes one per
run and removes it at exit. The variable must be in the environment before any worker imports
prometheus_client, which is why it is set here, in the parent, before the workers start.

SIGTERM closes open WebSockets with 1001 after their queued frames (gateway/shutdown.py), then
the server shuts down as usual.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from events import metrics
from events.gateway import servers
from events.gateway.servers.uvicorn_handshake import HeadDeadlineProtocol

APP = "researchflow.asgi:application"


def uvicorn_options(*, compression: bool) -> dict[str, Any]:
    """How the project runs under uvicorn (besides app, host, port and workers); the
    benchmark's variant server starts from the same options."""
    return {
        # httptools (uvicorn's default when installed), with a deadline for the request head
        # (WS_HANDSHAKE_TIMEOUT): uvicorn has none of its own.
        "http": HeadDeadlineProtocol,
        # The sans-I/O implementation, not the legacy (deprecated) "websockets" one: it
        # accepts faster and holds less per socket and per frame, and it negotiates
        # permessage-deflate. The gateway's uvicorn patches (servers/uvicorn.py) assume it.
        "ws": "websockets-sansio",
        "ws_max_size": settings.WS_MAX_FRAME_BYTES,
        "ws_per_message_deflate": compression,
        "ws_ping_interval": settings.WS_PING_INTERVAL,
        "ws_ping_timeout": settings.WS_PING_TIMEOUT,
        "lifespan": "off",
        # uvicorn rewrites the client address and scheme from X-Forwarded-* when the peer is
        # in FORWARDED_ALLOW_IPS (default 127.0.0.1): only when we trust a proxy at all, or a
        # local client could name any address (researchflow/client_address.py decides).
        "proxy_headers": settings.TRUSTED_PROXY_COUNT > 0,
        "timeout_graceful_shutdown": 10,
        "log_level": "warning",
    }


class Command(BaseCommand):
    help = "Serve the project (HTTP + /ws) on PORT with daphne or uvicorn."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--server", choices=["daphne", "uvicorn"], default="daphne")
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=settings.PORT)
        parser.add_argument(
            "--workers",
            type=int,
            default=1,
            help="uvicorn worker processes; more than one needs REDIS_URL (shared events)",
        )
        parser.add_argument(
            "--compression",
            action="store_true",
            help="negotiate permessage-deflate (uvicorn only; costs ~2x CPU per frame)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        host, port = options["host"], options["port"]
        # The server's patches refuse releases they were not written for: say so here, once,
        # before a server or its workers start (each checks again as it loads the app).
        servers.check(options["server"])
        # Read by researchflow/asgi.py in this process and in every uvicorn worker.
        os.environ["RESEARCHFLOW_GC_TUNING"] = "1"
        if options["server"] == "daphne":
            if options["workers"] != 1 or options["compression"]:
                self.stderr.write("daphne serves one process and cannot negotiate compression")
            from daphne.cli import CommandLineInterface

            self.stdout.write(f"daphne serving http://{host}:{port}/ (WebSocket at /ws)")
            CommandLineInterface().run(
                # -v 0: no access log. daphne's writes every request's raw path to stdout
                # (client text); uvicorn's is off at log level "warning" too. The proxy's access
                # log is the one to keep (docs/operations.md).
                [
                    "-b",
                    host,
                    "-p",
                    str(port),
                    # Whole seconds (daphne's options are integers); a missing pong
                    # closes with 4008 (servers/daphne_stalled_peer.py).
                    "--ping-interval",
                    str(max(1, round(settings.WS_PING_INTERVAL))),
                    "--ping-timeout",
                    str(max(1, round(settings.WS_PING_TIMEOUT))),
                    "-v",
                    "0",
                    APP,
                ]
            )
            return
        if options["workers"] > 1 and not settings.REDIS_URL:
            self.stderr.write("error: --workers > 1 needs REDIS_URL so workers share events")
            raise SystemExit(2)
        import uvicorn

        own_dir = None
        if options["workers"] > 1:
            if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
                path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
                os.makedirs(path, exist_ok=True)
            else:
                path = own_dir = tempfile.mkdtemp(prefix="researchflow-prometheus-")
                os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
            metrics.clean_multiprocess_dir(path)  # values of a previous run would be summed in
        self.stdout.write(f"uvicorn serving http://{host}:{port}/ (WebSocket at /ws)")
        try:
            self._uvicorn(uvicorn, host, port, options)
        finally:
            if own_dir is not None:
                shutil.rmtree(own_dir, ignore_errors=True)

    def _uvicorn(self, uvicorn: Any, host: str, port: int, options: dict[str, Any]) -> None:
        uvicorn.run(
            APP,
            host=host,
            port=port,
            workers=options["workers"],
            **uvicorn_options(compression=options["compression"]),
        )
