"""PHI guard, layer 2: a scanner for HIPAA Safe Harbor identifiers in event payloads.

Layer 1 is the schema (``events/schemas.py``): opaque ids, typed timestamps, enums for codes and
free text only in a few bounded fields. This package is the second, independent layer: every
string anywhere in a payload is scanned, in a normalised view that look-alike characters,
invisible characters and spelt-out keywords cannot hide from. See ``docs/phi.md``.

One job per module: ``normalise`` (the view of a string that is scanned), ``detectors`` (the
identifier patterns and word lists), ``scanner`` (strings, payloads, findings).

Pure Python (standard library and the ``confusable-homoglyphs`` data), no Django, so the REST
layer, the admin, the bus and tests share it.
"""

from __future__ import annotations

from .detectors import CATEGORIES
from .scanner import (
    FREE_TEXT_FIELDS,
    STAFF_IDENTIFIER_FIELDS,
    Finding,
    scan,
    scan_text,
    scan_texts,
)

__all__ = [
    "CATEGORIES",
    "FREE_TEXT_FIELDS",
    "STAFF_IDENTIFIER_FIELDS",
    "Finding",
    "scan",
    "scan_text",
    "scan_texts",
]
