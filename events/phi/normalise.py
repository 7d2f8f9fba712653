"""The view of a string the detectors scan: what a reader sees, in plain ASCII where it can be.

An identifier must not slip past the detectors by being written with look-alike characters, so
the detectors never see the raw string. ``fold`` turns it into one canonical spelling:

1. NFKD: compatibility forms become their plain letter or digit (full-width ``＠`` and ``：``,
   superscript and subscript digits, ligatures, non-breaking spaces and hyphens), and accents
   come apart from their letters.
2. Per character (``_Fold``): format characters (category Cf: zero-width space, soft hyphen,
   ZWJ, word joiner, BOM) and combining marks (Mn, Me) are dropped - they are invisible or
   decorate a letter; every space separator (Zs) becomes ``' '``; every dash (Pd, and the
   minus signs) becomes ``'-'``; every decimal digit of any script (Nd) becomes its ASCII digit;
   a letter that Unicode's confusables data lists as looking like an ASCII character (Greek
   ``Ν``, Cyrillic ``Ј``, ``о``) becomes that character.
3. Keywords spelt out letter by letter (``M R N``, ``S.S.N.``, ``d-o-b``) are joined back up,
   and digits spelt out one by one (``1 2 3 4 5 6 7 8 9``) are joined.

The confusables table is Unicode's ``confusables.txt`` as bundled (and kept current) by the
``confusable-homoglyphs`` package; it is read once, on the first non-ASCII string.

Pure-ASCII text (nearly every event) skips steps 1 and 2; step 3 is one regex search.

Bidi controls are not folded away here: the caller refuses them (``has_bidi_controls``),
because they change the order a reader sees the characters in, which no folding can undo.
"""

from __future__ import annotations

import json
import re
import unicodedata
from functools import cache
from importlib import resources

# U+202A-U+202E (embeddings, overrides), U+2066-U+2069 (isolates), U+200E/U+200F (marks),
# U+061C (Arabic letter mark).
_BIDI_RE = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")

# Dashes outside category Pd that readers take for a hyphen.
_EXTRA_DASHES = frozenset("\u2212\u2043\u02d7\u2796\ufe63\uff0d")

# Keywords that context patterns look for, when spelt one letter at a time. Only these are
# joined: joining every run of single letters would turn initials ("J. K. Rowling") into words.
_SPELT_KEYWORDS: frozenset[str] = frozenset(
    [
        "ssn",
        "ssa",
        "mrn",
        "dob",
        "dod",
        "npi",
        "dea",
        "mbi",
        "hicn",
        "vin",
        "imei",
        "meid",
        "esn",
        "udi",
        "iban",
        "acct",
        "dl",
        "zip",
        "fax",
        "tel",
        "phone",
        "email",
        "age",
        "born",
        "patient",
        "medicare",
        "medicaid",
        "passport",
    ]
)
_SPELT_RE = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z](?:(?:[ ._/*-]|\. )[A-Za-z]){1,8}\.?(?![A-Za-z0-9])"
)
_SPELT_SEPARATORS = str.maketrans("", "", " ._/*-")
# Seven or more single digits with one space between each: a number spelt out for the eye.
_SPELT_DIGITS_RE = re.compile(r"(?<![\w.])\d(?: \d){6,}(?![\w.])")


def has_bidi_controls(text: str) -> bool:
    """True if ``text`` holds a character that reorders what a reader sees."""
    return not text.isascii() and _BIDI_RE.search(text) is not None


@cache
def confusable_ascii() -> dict[str, str]:
    """Each non-ASCII character that Unicode's confusables data says looks like one printable
    ASCII character, mapped to that character. A letter prefers a letter of its own case, a
    digit a digit."""
    source = resources.files("confusable_homoglyphs").joinpath("confusables.json")
    data: dict[str, list[dict[str, str]]] = json.loads(source.read_text(encoding="utf-8"))

    def ascii_like(char: str) -> set[str]:
        return {
            entry["c"]
            for entry in data.get(char, ())
            if len(entry["c"]) == 1 and "!" <= entry["c"] <= "~"
        }

    table: dict[str, str] = {}
    for char in data:
        if len(char) != 1 or char.isascii():
            continue
        direct = ascii_like(char)
        # The data links ASCII characters among themselves too (I ~ l ~ 1 ~ |, O ~ 0): one
        # step along those links lets Greek "Ι" and Cyrillic "І", listed only as "l", keep
        # their capital case as "I".
        candidates = sorted(direct.union(*(ascii_like(c) for c in direct)))
        if not candidates:
            continue
        if char.isalpha():
            # Keep the case where the data allows: "І" (Cyrillic) is listed as "I" and "l".
            preferred = [c for c in candidates if c.isalpha() and c.isupper() == char.isupper()]
            preferred = preferred or [c for c in candidates if c.isalpha()]
        elif unicodedata.category(char) == "Nd" or char.isdigit():
            preferred = [c for c in candidates if c.isdigit()]
        else:
            preferred = []
        table[char] = (preferred or candidates)[0]
    return table


class _Fold(dict[int, str]):
    """A ``str.translate`` table filled on demand: the fold of each non-ASCII code point.

    Bounded, so that text made of many different code points cannot grow it without end;
    past the bound a character is folded each time it is met.
    """

    MAX_ENTRIES = 20_000

    def __missing__(self, code: int) -> str:
        folded = _fold_char(chr(code))
        if len(self) < self.MAX_ENTRIES:
            self[code] = folded
        return folded


def _fold_char(char: str) -> str:
    if char.isascii():
        return char
    category = unicodedata.category(char)
    if category in ("Cf", "Mn", "Me"):
        return ""
    if category == "Zs":
        return " "
    if category == "Pd" or char in _EXTRA_DASHES:
        return "-"
    if category == "Nd":
        return str(unicodedata.digit(char))
    return confusable_ascii().get(char, char)


_FOLD = _Fold()


def _join_spelt_keyword(match: re.Match[str]) -> str:
    letters = match.group(0).translate(_SPELT_SEPARATORS)
    return letters.upper() if letters.lower() in _SPELT_KEYWORDS else match.group(0)


def fold(text: str) -> str:
    """The canonical spelling of ``text`` the detectors scan (see the module docstring)."""
    if not text.isascii():
        text = unicodedata.normalize("NFKD", text).translate(_FOLD)
    if _SPELT_RE.search(text) is not None:
        text = _SPELT_RE.sub(_join_spelt_keyword, text)
    if " " in text and _SPELT_DIGITS_RE.search(text) is not None:
        text = _SPELT_DIGITS_RE.sub(lambda m: m.group(0).replace(" ", ""), text)
    return text
