"""events/gateway/servers/: each patch fits the release it names, is installed only for the
server that runs, and a release it was not written for stops the start."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from autobahn.websocket import protocol
from autobahn.websocket.protocol import WebSocketProtocol
from django.core.exceptions import ImproperlyConfigured

from events.gateway import layers, servers
from events.gateway.servers import autobahn_debug_log, daphne_close, versions

ROOT = Path(__file__).resolve().parent.parent


# --- daphne_close: daphne's serverClose sends the protocol's close codes -------------------


def test_daphne_still_closes_through_send_close_which_checks_the_range() -> None:
    import daphne.ws_protocol

    # daphne hands an ASGI websocket.close to serverClose(code), which calls autobahn's
    # sendClose, which refuses 1001/1008/1009/1011 (read from the file: the method is ours
    # once installed)...
    daphne_source = inspect.getsource(daphne.ws_protocol)
    assert 'self.serverClose(code=message.get("code", None))' in daphne_source
    assert "def serverClose(self, code=None):" in daphne_source
    send_close = inspect.getsource(WebSocketProtocol.sendClose)
    assert "code != 1000 and not (3000 <= code <= 4999)" in send_close
    # ...while sendCloseFrame(code=, isReply=) writes the close frame with no range check.
    assert "code" in inspect.signature(WebSocketProtocol.sendCloseFrame).parameters
    assert "isReply" in inspect.signature(WebSocketProtocol.sendCloseFrame).parameters
    send_close_frame = inspect.getsource(WebSocketProtocol.sendCloseFrame)
    assert "3000" not in send_close_frame and 'struct.pack("!H", code)' in send_close_frame


def test_daphne_may_send_the_protocol_close_codes() -> None:
    daphne_close.install()  # idempotent
    from daphne.ws_protocol import WebSocketProtocol as DaphneProtocol

    assert DaphneProtocol.serverClose.__name__ == "server_close"
    assert {1001, 1008, 1009, 1011} == daphne_close.PROTOCOL_CLOSE_CODES


# --- autobahn_debug_log: frames are written without styling debug-log arguments ------------


def test_frames_are_written_without_styling_their_debug_log_arguments() -> None:
    autobahn_debug_log.install()  # idempotent
    # autobahn still builds these arguments on every frame it writes, from module globals (if
    # a release stops doing so, the patch is moot and can go)...
    source = inspect.getsource(WebSocketProtocol.sendData)
    assert "hltype(self.sendData)" in source and "hlval(" in source
    assert WebSocketProtocol.sendData.__globals__ is vars(protocol)
    # ...and they are now handed over as they are, with no click.style() per frame.
    marker = object()
    assert protocol.hltype(marker) is marker
    assert protocol.hlval(331) == 331
    assert protocol.hlval("tcp:127.0.0.1:1", color="white", bold=True) == "tcp:127.0.0.1:1"


# --- versions: a release a patch was not written for refuses to start ----------------------


@pytest.mark.parametrize("server", sorted(servers.PATCHES))
def test_it_accepts_the_releases_the_patches_were_written_for(server: str) -> None:
    servers.check(server)
    layers.check()


@pytest.mark.parametrize(
    ("server", "distribution"),
    [("daphne", "daphne"), ("daphne", "autobahn"), ("daphne", "twisted"), ("uvicorn", "uvicorn")],
)
def test_it_refuses_to_start_on_another_release(
    monkeypatch: Any, server: str, distribution: str
) -> None:
    real = versions.version
    monkeypatch.setattr(
        versions, "version", lambda name: "0.0.1" if name == distribution else real(name)
    )
    with pytest.raises(
        ImproperlyConfigured,
        match=rf"patches {distribution} \S+ and "
        rf"{distribution} 0\.0\.1 is installed\. Install {distribution}==",
    ):
        servers.install_for(server)


def test_a_patch_is_applied_once_and_its_releases_checked_at_every_install(
    monkeypatch: Any,
) -> None:
    applied: list[int] = []

    @versions.installs_once({"uvicorn": versions.installed("uvicorn") or "?"}, "this test")
    def install() -> None:
        applied.append(1)

    install()
    install()
    assert applied == [1]
    monkeypatch.setattr(versions, "version", lambda name: "0.0.1")
    with pytest.raises(ImproperlyConfigured, match="patches uvicorn"):
        install()


def test_it_refuses_a_channels_release_the_layer_was_not_copied_from(monkeypatch: Any) -> None:
    monkeypatch.setattr(versions, "version", lambda name: "4.2.0")
    with pytest.raises(ImproperlyConfigured, match=r"events\.gateway\.layers patches channels"):
        layers.InMemoryChannelLayer()


def test_it_refuses_an_unknown_server() -> None:
    with pytest.raises(ImproperlyConfigured, match="no server patches for 'hypercorn'"):
        servers.install_for("hypercorn")


def test_serve_refuses_before_starting_a_server(monkeypatch: Any) -> None:
    from django.core.management import call_command

    monkeypatch.setattr(versions, "version", lambda name: "0.0.1")
    started = []
    monkeypatch.setattr("daphne.cli.CommandLineInterface.run", lambda *a: started.append(a))
    with pytest.raises(ImproperlyConfigured, match="patches daphne"):
        call_command("serve", "--server", "daphne", "--port", "1")
    assert started == []


# --- install_for: the running server's patches only ----------------------------------------


def _patched_in_a_fresh_process(entry: str) -> dict[str, bool]:
    """Which server classes are patched after researchflow.asgi loads in a process whose
    entry point is `entry` (imported first, as the server would)."""
    code = f"""
import importlib, json, os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "researchflow.settings")
{entry}
import researchflow.asgi
from daphne.ws_protocol import WebSocketProtocol as D
from daphne.http_protocol import HTTPFactory
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol as U
from daphne.server import Server
from autobahn.websocket import protocol
print(json.dumps({{
    "daphne_close": D.serverClose.__qualname__.startswith("install."),
    "daphne_handshake": HTTPFactory.buildProtocol.__name__ == "build_protocol",
    "daphne_send_buffer": Server.handle_reply.__qualname__.startswith("install."),
    "daphne_stalled_peer": D.onAutoPingTimeout.__qualname__.startswith("install."),
    "autobahn_debug_log": protocol.hlval.__name__ == "unstyled",
    "uvicorn_lean_state": U.__init__.__qualname__.startswith("install."),
    "uvicorn_keepalive": U.start_keepalive.__qualname__.startswith("install."),
    "uvicorn_send_buffer": U.connection_made.__qualname__.startswith("install."),
    "uvicorn_stalled_peer": U.keepalive_timeout.__qualname__.startswith("install."),
}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    import json

    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_under_uvicorn_daphne_and_autobahn_stay_as_they_ship() -> None:
    patched = _patched_in_a_fresh_process("import uvicorn.main")
    assert patched == {
        "daphne_close": False,
        "daphne_handshake": False,
        "daphne_send_buffer": False,
        "daphne_stalled_peer": False,
        "autobahn_debug_log": False,
        "uvicorn_lean_state": True,
        "uvicorn_keepalive": True,
        "uvicorn_send_buffer": True,
        "uvicorn_stalled_peer": True,
    }


def test_under_daphne_uvicorn_stays_as_it_ships() -> None:
    patched = _patched_in_a_fresh_process("import daphne.cli")
    assert patched == {
        "daphne_close": True,
        "daphne_handshake": True,
        "daphne_send_buffer": True,
        "daphne_stalled_peer": True,
        "autobahn_debug_log": True,
        "uvicorn_lean_state": False,
        "uvicorn_keepalive": False,
        "uvicorn_send_buffer": False,
        "uvicorn_stalled_peer": False,
    }


# --- pins: pyproject.toml and the lock files name the releases the patches were written for -


def _written_for() -> dict[str, str]:
    tables = [layers.WRITTEN_FOR]
    tables += [patch.WRITTEN_FOR for patches in servers.PATCHES.values() for patch in patches]
    merged: dict[str, str] = {}
    for table in tables:
        for name, release in table.items():
            assert merged.setdefault(name.lower(), release) == release, (name, tables)
    return merged


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^\s;,#]+).*", line)
        if match:
            pins[match[1].lower().replace("_", "-")] = match[3]
    return pins


def test_pyproject_and_the_locks_pin_the_releases_the_patches_were_written_for() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    declared = _pins(dependencies)
    for lock in ("requirements.lock", "requirements-dev.lock"):
        locked = _pins((ROOT / lock).read_text().splitlines())
        for name, release in _written_for().items():
            assert declared.get(name) == release, f"pyproject.toml: {name}=={release}"
            assert locked.get(name) == release, f"{lock}: {name}=={release}"
