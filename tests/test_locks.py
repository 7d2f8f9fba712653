"""The dev lock installs everything the runtime lock does, at the same versions.

`make test` (and CI) installs requirements-dev.lock only; a package added to requirements.lock
alone works in a developer's long-lived venv and fails on a fresh machine.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pins(name: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and "==" in line:
            package, version = line.split("==", 1)
            pins[package.strip().lower().replace("_", "-")] = version.strip()
    return pins


def test_it_pins_every_runtime_package_in_the_dev_lock_at_the_same_version() -> None:
    runtime, dev = _pins("requirements.lock"), _pins("requirements-dev.lock")
    assert runtime, "requirements.lock lists no pins"
    assert {p: v for p, v in runtime.items() if dev.get(p) != v} == {}
