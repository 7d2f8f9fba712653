"""Write the generated sections of docs/protocol.md from the protocol's models.

    .venv/bin/python -m devtools.protocol_doc          # rewrite the sections in place
    .venv/bin/python -m devtools.protocol_doc --check  # exit 1 if the doc is out of date

A section is the text between `<!-- generated: NAME -->` and `<!-- end generated -->`; the
prose around them is written by hand. `tests/test_protocol_doc.py` fails when the committed
doc differs from what this writes, so a changed model cannot leave the doc behind.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from devtools.generated import write_or_check
from events.protocol import CLIENT_MESSAGES, ERROR_CODES, SERVER_MESSAGES
from events.schemas import EVENT_CATEGORIES, EVENT_TYPES

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
SECTION = re.compile(
    r"(<!-- generated: (?P<name>[a-z-]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S
)


def _fields(model: type[BaseModel]) -> str:
    """`{a, b?}` (`?`: may be left out), or the alternatives a model's schema names."""
    schema = model.model_json_schema(by_alias=True)
    if "oneOf" in schema:
        return " or ".join(
            "`{" + ", ".join(choice["required"]) + "}`" for choice in schema["oneOf"]
        )
    return f"`{_shape(model)}`"


def _shape(model: type[BaseModel]) -> str:
    names = []
    for name, info in model.model_fields.items():
        label = str(info.alias or name) + ("" if info.is_required() else "?")
        nested = info.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            label += ": " + _shape(nested)
        names.append(label)
    if model.model_config.get("extra") == "allow":
        names.append("...")
    return "{" + ", ".join(names) + "}"


def _note(model: type[BaseModel]) -> str:
    doc = (model.__doc__ or "").strip()
    return " ".join(doc.split()) if doc else ""


def client_messages() -> str:
    rows = ["| type | payload | answer |", "|---|---|---|"]
    for msg_type, message in CLIENT_MESSAGES.items():
        payload = message.payload
        shape = _fields(payload) if payload.model_fields else "none"
        rows.append(f"| `{msg_type}` | {shape} | {message.answer} |")
    return "\n".join(rows) + "\n"


def server_messages() -> str:
    rows = ["| type | payload |", "|---|---|"]
    seen: dict[type[BaseModel], list[str]] = {}
    for msg_type, model in SERVER_MESSAGES.items():
        seen.setdefault(model, []).append(msg_type)
    for shared, types in seen.items():
        names = " / ".join(f"`{t}`" for t in types)
        note = _note(shared)
        rows.append(f"| {names} | {_fields(shared)}{': ' + note if note else ''} |")
    rows.append(
        "| an event | `{id, type, timestamp, payload}` with `type` one of the "
        f"{len(EVENT_TYPES)} event types below |"
    )
    return "\n".join(rows) + "\n"


def error_codes() -> str:
    rows = ["| `details.code` | sent for |", "|---|---|"]
    rows += [f"| `{code}` | {when} |" for code, when in ERROR_CODES.items()]
    return "\n".join(rows) + "\n"


def event_catalogue() -> str:
    rows = ["| category | types |", "|---|---|"]
    for category, types in EVENT_CATEGORIES.items():
        rows.append(f"| `{category}` | {', '.join(f'`{t}`' for t in types)} |")
    return "\n".join(rows) + "\n"


SECTIONS: dict[str, Callable[[], str]] = {
    "client-messages": client_messages,
    "server-messages": server_messages,
    "error-codes": error_codes,
    "event-catalogue": event_catalogue,
}


def render(text: str) -> str:
    """`text` with every generated section rewritten; every section must be present once."""
    found = [m.group("name") for m in SECTION.finditer(text)]
    if sorted(found) != sorted(SECTIONS):
        raise ValueError(f"docs/protocol.md: sections {found}, expected {list(SECTIONS)}")
    return SECTION.sub(lambda m: m.group(1) + SECTIONS[m.group("name")]() + m.group(4), text)


def main(argv: list[str]) -> int:
    return write_or_check(DOC, render(DOC.read_text()), argv, "python -m devtools.protocol_doc")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
