"""Patches of the servers' internals, installed from one place for the server that is running.

Each module here patches one thing in daphne, autobahn, Twisted or uvicorn, names the releases
it was written for (`WRITTEN_FOR`) and refuses any other at `install()` (versions.py). A
server's patches are checked all together before any is applied, so a refused start leaves
nothing half-patched; the other server's modules are not touched (under uvicorn, daphne and
autobahn stay as they ship).

`researchflow/asgi.py` runs `install_for(serving())` when the server loads the application;
`manage.py serve` runs `check(server)` before it starts one, so a wrong release fails there,
once, before any worker starts.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import ModuleType

from django.core.exceptions import ImproperlyConfigured

from . import (
    autobahn_debug_log,
    daphne_close,
    daphne_handshake,
    daphne_send_buffer,
    daphne_stalled_peer,
    uvicorn_handshake,
    uvicorn_keepalive,
    uvicorn_lean_state,
    uvicorn_logs,
    uvicorn_send_buffer,
    uvicorn_stalled_peer,
)
from .versions import require

PATCHES: dict[str, tuple[ModuleType, ...]] = {
    # daphne_stalled_peer wraps the serverClose that daphne_close installed: after it.
    "daphne": (
        daphne_close,
        autobahn_debug_log,
        daphne_handshake,
        daphne_send_buffer,
        daphne_stalled_peer,
    ),
    "uvicorn": (
        uvicorn_handshake,
        uvicorn_keepalive,
        uvicorn_lean_state,
        uvicorn_logs,
        uvicorn_send_buffer,
        uvicorn_stalled_peer,
    ),
}

# Modules only a serving daphne imports before it loads the application: its command line
# (what `manage.py serve` runs) and its `runserver`. `daphne.server` is no sign: daphne's
# AppConfig imports it in every process that has "daphne" in INSTALLED_APPS.
_DAPHNE_ENTRY_POINTS = ("daphne.cli", "daphne.management.commands.runserver")


def serving() -> str:
    """The server this process runs under: "daphne" once one of daphne's entry points has
    loaded, otherwise "uvicorn" (`serve --server uvicorn` and its workers, and the in-process
    servers of tests and benchmarks)."""
    if any(name in sys.modules for name in _DAPHNE_ENTRY_POINTS):
        return "daphne"
    return "uvicorn"


def check(server: str) -> None:
    """Raise ImproperlyConfigured unless every patch `server` needs fits the installed releases."""
    for patch in _patches(server):
        require(patch.__name__, patch.WRITTEN_FOR, patch.CHECKED_BY)


def install_for(server: str) -> None:
    """Check, then install, the patches of `server` (idempotent)."""
    check(server)
    for patch in _patches(server):
        install: Callable[[], None] = patch.install
        install()


def _patches(server: str) -> tuple[ModuleType, ...]:
    try:
        return PATCHES[server]
    except KeyError:
        raise ImproperlyConfigured(
            f"no server patches for {server!r}: expected one of {sorted(PATCHES)}"
        ) from None
