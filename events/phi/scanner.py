"""The scanner's public face: one string (``scan_text``) or a whole payload (``scan``).

Every string is checked for bidi controls, folded (``normalise.fold``) and handed to the
detectors (``detectors.detect``). A payload is walked to any depth, keys included; a key whose
*name* says it carries PHI (``patientName``, ``mrn``) is refused whatever its value.

A :class:`Finding` names a field path and a category, never the value. A key that is itself
flagged, or does not look like a plain identifier, appears in paths as ``<key#N>`` (its
position in its object), so that a path can never leak what it refers to. A finding of the
joint scan names the fields it joined (``stageName+statusMessage``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .detectors import (
    BIDI_CONTROL,
    EMAIL_ADDRESS,
    PHI_FIELD_NAME,
    SAFE_KEY_RE,
    detect,
    key_is_phi,
)
from .normalise import fold, has_bidi_controls, stroke_variant

# Top-level fields that hold staff identifiers (usernames, which Django allows to be emails).
# Only EMAIL_ADDRESS is waived there; every other detector still applies.
STAFF_IDENTIFIER_FIELDS: frozenset[str] = frozenset(
    {"assignedTo", "decidedBy", "createdBy", "userId"}
)

# The events' free-text fields (events/schemas.py): a reader sees them side by side (run name,
# stage name, status), so an identifier split across them is scanned as one text too.
FREE_TEXT_FIELDS: frozenset[str] = frozenset(
    {"runName", "stageName", "statusMessage", "artifactName"}
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One identifier found: where (a field path) and what kind. Never the value itself."""

    path: str
    category: str

    def __str__(self) -> str:
        return f"{self.path}: {self.category}"


def _scan_into(text: str, out: set[str]) -> None:
    """Add the categories found in one raw string to ``out``.

    Strings found clean are remembered (a bounded set, emptied when full): the same ids,
    stage names and status texts come back in event after event — a stage's progress
    repeats all of them — and a string's verdict alone depends on nothing but the string.
    Only short strings are kept, so the memo stays small; strings with findings are always
    scanned afresh (they are rare, and refused anyway)."""
    if text in _CLEAN:
        return
    found: set[str] = set()  # this string's own findings, whatever `out` already holds
    if has_bidi_controls(text):
        found.add(BIDI_CONTROL)
    detect(fold(text), found)
    if not text.isascii():
        variant = stroke_variant(text)
        if variant is not None:
            detect(variant, found)
    if found:
        out |= found
    elif len(text) <= _CLEAN_MAX_LENGTH:
        if len(_CLEAN) >= _CLEAN_MAX:
            _CLEAN.clear()
        _CLEAN.add(text)


# The memo of strings that scanned clean (see _scan_into): at most _CLEAN_MAX of them, each at
# most _CLEAN_MAX_LENGTH characters (~2 MiB at worst). Set operations are atomic under the GIL.
_CLEAN: set[str] = set()
_CLEAN_GROUPS: set[tuple[str, ...]] = set()  # the same for texts read together
_CLEAN_MAX = 8192
_CLEAN_MAX_LENGTH = 200


# Between the two joins of a joint scan: no pattern reads "|" as part of an identifier or as
# the space between two words, so nothing matches across it.
_JOINS_APART = " | "


def _glued(parts: list[str]) -> str:
    """The parts joined with nothing, except a space between two letters: gluing words
    ("Lab Normalisation" + "Run name: ...") would make new words that change what the
    context patterns read (a previous word, a version marker) and invent findings."""
    out = parts[0]
    for part in parts[1:]:
        if out[-1:].isalpha() and part[:1].isalpha():
            out += " "
        out += part
    return out


def _scan_together(texts: list[str], out: set[str]) -> None:
    """Texts side by side, joined by a space and glued (``_glued``), so that neither
    ``"SSN 123"``/``"45"``/``"6789"`` nor ``"123-45-"``/``"6789"`` nor ``"jane"``/
    ``"@example.com"`` escapes. One detector pass over both joins (the pass has a fixed cost).
    Groups found clean are remembered as single strings are (``_scan_into``).
    """
    key = tuple(texts)
    if key in _CLEAN_GROUPS:
        return
    found: set[str] = set()  # this group's own findings, whatever `out` already holds
    if any(has_bidi_controls(text) for text in texts):
        found.add(BIDI_CONTROL)
    texts = [text for text in texts if text]
    if len(texts) >= 2:
        folded = [fold(text) for text in texts]
        detect(" ".join(folded) + _JOINS_APART + _glued(folded), found)
        variants = [stroke_variant(text) for text in texts]
        if any(variant is not None for variant in variants):
            folded = [variant or plain for variant, plain in zip(variants, folded, strict=True)]
            detect(" ".join(folded) + _JOINS_APART + _glued(folded), found)
    if found:
        out |= found
    elif sum(len(text) for text in key) <= 2 * _CLEAN_MAX_LENGTH:
        if len(_CLEAN_GROUPS) >= _CLEAN_MAX:
            _CLEAN_GROUPS.clear()
        _CLEAN_GROUPS.add(key)


def scan_text(text: str) -> list[str]:
    """The sorted, unique categories found in one free-text string (no staff exemption)."""
    out: set[str] = set()
    _scan_into(text, out)
    return sorted(out)


def scan_texts(texts: Iterable[str]) -> list[str]:
    """The categories found in several texts read together (as a reader sees them side by
    side), beyond those each holds alone: joined by a space and joined with nothing, so that
    neither ``"SSN 123"``/``"45"``/``"6789"`` nor ``"123-45-"``/``"6789"`` escapes."""
    parts = [text for text in texts if text]
    if len(parts) < 2:
        return []
    alone: set[str] = set()
    for part in parts:
        _scan_into(part, alone)
    together: set[str] = set()
    _scan_together(parts, together)
    return sorted(together - alone)


def _scan_joint(
    payload: Mapping[str, object], fields: frozenset[str], found: set[tuple[str, str]]
) -> None:
    keys = [key for key, value in payload.items() if key in fields and isinstance(value, str)]
    if len(keys) < 2:
        return
    together: set[str] = set()
    _scan_together([str(payload[key]) for key in keys], together)
    if not together:
        return
    path = "+".join(keys)
    already = {category for where, category in found if where in keys}
    for category in together - already:
        found.add((path, category))


# Keys come from a small schema vocabulary: remember their verdicts. Only plain identifier-like
# keys are remembered, so the cache can hold neither PHI nor an unbounded number of entries.
_KEY_CACHE: dict[str, tuple[bool, tuple[str, ...]]] = {}
_KEY_CACHE_MAX = 4096


def _key_verdict(key: str) -> tuple[bool, tuple[str, ...]]:
    """(renderable verbatim in a path, categories the key itself carries)."""
    cached = _KEY_CACHE.get(key)
    if cached is not None:
        return cached
    found: set[str] = set()
    _scan_into(key, found)
    if key_is_phi(fold(key)):
        found.add(PHI_FIELD_NAME)
    safe = SAFE_KEY_RE.fullmatch(key) is not None and found <= {PHI_FIELD_NAME}
    verdict = (safe, tuple(sorted(found)))
    if safe and len(_KEY_CACHE) < _KEY_CACHE_MAX:
        _KEY_CACHE[key] = verdict
    return verdict


_Container = Mapping[Any, object] | list[object] | tuple[object, ...]


def _visit(
    value: object,
    path: str,
    allow_email: bool,
    found: set[tuple[str, str]],
    stack: list[tuple[_Container, str, bool | None]],
) -> None:
    if isinstance(value, str):
        categories: set[str] = set()
        _scan_into(value, categories)
        for category in categories:
            if not (allow_email and category == EMAIL_ADDRESS):
                found.add((path, category))
    elif value is None or isinstance(value, int | float):
        return  # numbers, booleans and null carry no text
    elif isinstance(value, Mapping):
        stack.append((value, path + ".", allow_email))
    elif isinstance(value, list | tuple):
        stack.append((value, path, allow_email))


def scan(
    payload: Mapping[str, object],
    *,
    staff_fields: frozenset[str] = STAFF_IDENTIFIER_FIELDS,
    joint_fields: frozenset[str] = FREE_TEXT_FIELDS,
) -> list[Finding]:
    """Scan every string in ``payload`` (values at any depth and keys); return the findings.

    Emails are allowed only under a top-level key in ``staff_fields``. The top-level strings
    under ``joint_fields`` are also scanned together (see ``_scan_joint``). The result is
    sorted by (path, category), deduplicated, and empty when the payload is clean. Only JSON
    shapes are walked (mappings, lists, tuples, str, numbers, bool, None); other objects are
    ignored.
    """
    found: set[tuple[str, str]] = set()
    # Containers still to visit: (container, path prefix, emails allowed - None at the top).
    # An explicit stack, so that a deeply nested payload cannot exhaust the recursion limit.
    stack: list[tuple[_Container, str, bool | None]] = [(payload, "", None)]
    scratch: set[str] = set()
    while stack:
        container, prefix, staff = stack.pop()
        if isinstance(container, Mapping):
            for index, (key, value) in enumerate(container.items()):
                verdict = _KEY_CACHE.get(key) if type(key) is str else None
                if verdict is None:
                    verdict = _key_verdict(key) if isinstance(key, str) else (False, ())
                    if not verdict[0] and (key is None or isinstance(key, int | float)):
                        verdict = (True, ())  # a number as a key: shown as is
                safe, categories = verdict
                path = prefix + str(key) if safe else f"{prefix}<key#{index}>"
                kind = type(value)
                if not categories:
                    if kind is int or kind is float or kind is bool or value is None:
                        continue
                    if kind is str and isinstance(value, str):
                        _scan_into(value, scratch)
                        if not scratch:
                            continue
                        categories = tuple(scratch)
                        scratch.clear()
                        value = None
                allow = (key in staff_fields) if staff is None else staff
                for category in categories:
                    if not (allow and category == EMAIL_ADDRESS):
                        found.add((path, category))
                _visit(value, path, allow, found, stack)
        else:
            for index, value in enumerate(container):
                _visit(value, f"{prefix}[{index}]", staff is True, found, stack)
    if joint_fields:
        _scan_joint(payload, joint_fields - staff_fields, found)
    return [Finding(path, category) for path, category in sorted(found)]
