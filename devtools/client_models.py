"""Write the Python client's event catalogue (`clients/python/researchflow_client/catalogue.py`)
from the server's AsyncAPI document (`events/asyncapi.py`), so the client's typed payloads are
the server's, without the client importing anything of the server.

    .venv/bin/python -m devtools.client_models          # rewrite the module
    .venv/bin/python -m devtools.client_models --check  # exit 1 if it is out of date

`tests/test_client_models.py` fails when the committed module differs from what this writes,
so a changed event model cannot leave the client behind.

What the generated models keep of the schema: every field's JSON type, whether it is required,
patterns, lengths, bounds and enums. What they relax, on purpose: unknown fields are ignored
(`extra="ignore"`), so a server that adds an optional field does not break older clients; the
server's own models forbid them, which is where the PHI guard needs it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from devtools.generated import write_or_check
from events.asyncapi import asyncapi_document

TARGET = (
    Path(__file__).resolve().parent.parent
    / "clients"
    / "python"
    / "researchflow_client"
    / "catalogue.py"
)
SCHEMAS = "#/components/schemas/"
HEADER = '''"""The event catalogue: every event type, its category and its typed payload model.

GENERATED from the server's AsyncAPI document by `python -m devtools.client_models`; do not
edit by hand (a server test fails when this file is out of date).

Field names are snake_case in Python and camelCase on the wire (`payload.stage_id` is
`stageId`). Timestamps are `datetime` (aware, UTC). Unknown fields are ignored, so a newer
server's added optional fields do not break this client.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

PROTOCOL_VERSION = {version!r}


class Payload(BaseModel):
    """Base of every event payload model."""

    model_config = ConfigDict(
        extra="ignore", alias_generator=to_camel, populate_by_name=True, frozen=True
    )
'''


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _ref_name(ref: str) -> str:
    if not ref.startswith(SCHEMAS):
        raise ValueError(f"unexpected $ref {ref!r}")
    return ref[len(SCHEMAS) :]


class _Writer:
    def __init__(self, schemas: dict[str, Any], timestamp_pattern: str) -> None:
        self.schemas = schemas
        self.timestamp_pattern = timestamp_pattern
        self.enums: dict[str, list[str]] = {}

    def type_of(self, schema: dict[str, Any]) -> str:
        """The Python annotation of one JSON Schema node."""
        if "$ref" in schema:
            name = _ref_name(schema["$ref"])
            target = self.schemas[name]
            if "enum" not in target:
                raise ValueError(f"only enums may be referenced from a payload, not {name}")
            self.enums[name] = list(target["enum"])
            return name
        if "anyOf" in schema:
            choices = [self.type_of(choice) for choice in schema["anyOf"]]
            return " | ".join(choices)
        kind = schema.get("type")
        if kind == "null":
            return "None"
        if kind == "string":
            if schema.get("pattern") == self.timestamp_pattern:
                return "datetime"
            constraints = []
            if "minLength" in schema:
                constraints.append(f"min_length={schema['minLength']}")
            if "maxLength" in schema:
                constraints.append(f"max_length={schema['maxLength']}")
            if "pattern" in schema:
                constraints.append(f"pattern={schema['pattern']!r}")
            if not constraints:
                return "str"
            return f"Annotated[str, StringConstraints({', '.join(constraints)})]"
        if kind == "integer":
            bounds = []
            if "minimum" in schema:
                bounds.append(f"ge={schema['minimum']}")
            if "maximum" in schema:
                bounds.append(f"le={schema['maximum']}")
            return f"Annotated[int, Field({', '.join(bounds)})]" if bounds else "int"
        if kind == "boolean":
            return "bool"
        if kind == "array":
            item = self.type_of(schema["items"])
            if "maxItems" in schema:
                return f"Annotated[list[{item}], Field(max_length={schema['maxItems']})]"
            return f"list[{item}]"
        raise ValueError(f"no Python type for schema {json.dumps(schema)}")

    def model(self, name: str) -> str:
        schema = self.schemas[name]
        required = set(schema.get("required", ()))
        lines = [f"class {name}(Payload):"]
        if schema.get("description"):
            lines.append(f'    """{" ".join(schema["description"].split())}"""')
            lines.append("")
        for wire, field in schema["properties"].items():
            annotation = self.type_of(field)
            default = "" if wire in required else f" = {field.get('default')!r}"
            lines.append(f"    {_snake(wire)}: {annotation}{default}")
        return "\n".join(lines)

    def enum(self, name: str) -> str:
        lines = [f"class {name}(StrEnum):"]
        description = self.schemas[name].get("description")
        if description:
            lines += [f'    """{" ".join(description.split())}"""', ""]
        lines += [f"    {value} = {value!r}" for value in self.enums[name]]
        return "\n".join(lines)


def render() -> str:
    document = asyncapi_document()
    schemas: dict[str, Any] = document["components"]["schemas"]
    events: dict[str, tuple[str, str]] = {}  # type -> (category, payload model)
    timestamp_pattern = ""
    for name, message in document["components"]["messages"].items():
        if not name.startswith("event_"):
            continue
        envelope = message["payload"]
        timestamp_pattern = envelope["properties"]["timestamp"]["pattern"]
        category = message["summary"].removeprefix("Category ")
        model = _ref_name(envelope["properties"]["payload"]["$ref"])
        events[message["name"]] = (category, model)
    writer = _Writer(schemas, timestamp_pattern)
    models = list(dict.fromkeys(model for _, model in events.values()))
    model_source = [writer.model(name) for name in models]  # fills writer.enums
    categories: dict[str, list[str]] = {}
    for event_type, (category, _) in events.items():
        categories.setdefault(category, []).append(event_type)

    parts = [HEADER.format(version=document["info"]["version"])]
    parts += [writer.enum(name) for name in sorted(writer.enums)]
    parts += model_source
    catalogue = ["EVENT_CATALOGUE: dict[str, tuple[str, type[Payload]]] = {"]
    catalogue += [f"    {t!r}: ({c!r}, {m})," for t, (c, m) in events.items()]
    catalogue.append("}")
    tail = [
        "\n".join(catalogue),
        "EventPayload: TypeAlias = " + " | ".join(models),
        "EVENT_TYPES: tuple[str, ...] = tuple(EVENT_CATALOGUE)",
        "CATEGORY_OF: dict[str, str] = {t: c for t, (c, _) in EVENT_CATALOGUE.items()}",
        "PAYLOAD_MODELS: dict[str, type[Payload]] = {"
        "t: m for t, (_, m) in EVENT_CATALOGUE.items()}",
        "EVENT_CATEGORIES: dict[str, tuple[str, ...]] = {\n"
        + "".join(f"    {c!r}: {tuple(types)!r},\n" for c, types in categories.items())
        + "}",
    ]
    text = "\n\n\n".join(parts) + "\n\n\n" + "\n".join(tail) + "\n"
    return _formatted(text)


def _formatted(source: str) -> str:
    """`source` as `ruff format` leaves it, so the committed module passes the format check."""
    ruff = Path(sys.executable).with_name("ruff")
    done = subprocess.run(
        [str(ruff), "format", "--stdin-filename", str(TARGET), "-"],
        input=source,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def main(argv: list[str]) -> int:
    return write_or_check(TARGET, render(), argv, "python -m devtools.client_models")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
