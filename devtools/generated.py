"""Files generated from the server's own models and committed (docs/protocol.md, the Python
client's catalogue): one way to write them, and one way for CI to find them out of date."""

from __future__ import annotations

from pathlib import Path


def write_or_check(target: Path, wanted: str, argv: list[str], command: str) -> int:
    """Write `wanted` to `target`; with `--check` in `argv`, write nothing and return 1 (saying
    to run `command`) when `target` differs from it."""
    if "--check" in argv:
        if not target.exists() or target.read_text() != wanted:
            print(f"{target} is out of date: run {command}")
            return 1
        return 0
    target.write_text(wanted)
    return 0
