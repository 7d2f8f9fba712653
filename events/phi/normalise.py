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
        "ss",
        "http",
        "https",
        "www",
    ]
)
_SPELT_RE = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z](?:(?:[ ._/*-]|\. )[A-Za-z]){1,8}\.?(?![A-Za-z0-9])"
)
_SPELT_SEPARATORS = str.maketrans("", "", " ._/*-")
# Seven or more single digits with one space between each: a number spelt out for the eye.
_SPELT_DIGITS_RE = re.compile(r"(?<![\w.])\d(?: \d){6,}(?![\w.])")


# Defanged writing ("jane[at]example[dot]com", "hxxps://example[.]org", "192(.)168(.)1(.)44"):
# a separator in brackets, or a scheme with its letters masked, means the character itself;
# it is only ever written that way to get an address past a filter.
_DEFANG_RE = re.compile(
    r"(?i)\s*[\[({<]\s*(?:(?P<at>at|@)|(?P<dot>dot|\.)|(?P<colon>:)|(?P<sep>://|:/|/))\s*[\])}>]\s*"
    r"|(?<![a-z])h(?:xx|\*\*|__|XX)p(?P<s>s?)(?=\s*(?:[\[({<]\s*)?:)"
)
# Cheap tests first (a regex led by a character class is scanned fast): a bracketed
# separator, or a masked "http".
_DEFANG_BRACKET_RE = re.compile(r"[\[({<]\s*(?i:at|dot|[.@:]|:?//?)\s*[\])}>]")
_DEFANG_SCHEME_RE = re.compile(r"(?i)h(?:xx|\*\*|__)p")


def _maybe_defanged(text: str) -> bool:
    bracket = "(" in text or "[" in text or "{" in text or "<" in text
    return (bracket and _DEFANG_BRACKET_RE.search(text) is not None) or (
        ("xx" in text or "XX" in text or "**" in text or "__" in text)
        and _DEFANG_SCHEME_RE.search(text) is not None
    )


def _undefang(match: re.Match[str]) -> str:
    if match.group("at") is not None:
        return "@"
    if match.group("dot") is not None:
        return "."
    if match.group("colon") is not None:
        return ":"
    if match.group("sep") is not None:
        return match.group("sep")
    return "http" + match.group("s")


def has_bidi_controls(text: str) -> bool:
    """True if ``text`` holds a character that reorders what a reader sees."""
    return not text.isascii() and _BIDI_RE.search(text) is not None


def _confusable_classes() -> list[set[str]]:
    """Unicode's confusables data as classes of single characters that look alike: the
    transitive closure of its links (TR39 maps every member of a class to one prototype)."""
    source = resources.files("confusable_homoglyphs").joinpath("confusables.json")
    data: dict[str, list[dict[str, str]]] = json.loads(source.read_text(encoding="utf-8"))
    parent: dict[str, str] = {}

    def root(char: str) -> str:
        parent.setdefault(char, char)
        while parent[char] != char:
            parent[char] = parent[parent[char]]
            char = parent[char]
        return char

    for char, entries in data.items():
        if len(char) != 1:
            continue
        for entry in entries:
            if len(entry["c"]) == 1:
                parent[root(char)] = root(entry["c"])
    classes: dict[str, set[str]] = {}
    for char in parent:
        classes.setdefault(root(char), set()).add(char)
    return list(classes.values())


_SMALL_CAPITAL = "LATIN LETTER SMALL CAPITAL "


def _small_capital(char: str) -> str | None:
    """The capital a Latin small capital stands for ("ᴍ" -> "M"); None for any other
    character. NFKC leaves small capitals alone and the confusables data links them to other
    small letters (Cyrillic "м", "н", "т") rather than to ASCII."""
    name = unicodedata.name(char, "")
    if name.startswith(_SMALL_CAPITAL):
        letter = name[len(_SMALL_CAPITAL) :]
        if len(letter) == 1 and "A" <= letter <= "Z":
            return letter
    return None


@cache
def confusable_ascii() -> dict[str, str]:
    """The skeleton table: each non-ASCII character that Unicode's confusables data (TR39)
    puts in a class of look-alikes with a printable ASCII character, mapped to that character;
    a class with no ASCII member but a Latin small capital maps to that capital ("м", "ᴍ"
    -> "M"). A letter prefers a letter of its own case, a digit a digit."""
    table: dict[str, str] = {}
    for members in _confusable_classes():
        # The classes link ASCII characters among themselves too (I ~ l ~ 1 ~ |, O ~ 0):
        # that lets Greek "Ι" and Cyrillic "І", listed only as "l", keep their case as "I".
        ascii_like = sorted(c for c in members if "!" <= c <= "~")
        capitals = sorted({cap for c in members if (cap := _small_capital(c)) is not None})
        if not ascii_like and len(capitals) == 1:
            ascii_like = capitals
        if not ascii_like:
            continue
        for char in members:
            if char.isascii():
                continue
            if char.isalpha():
                preferred = [c for c in ascii_like if c.isalpha() and c.isupper() == char.isupper()]
                preferred = preferred or [c for c in ascii_like if c.isalpha()]
            elif unicodedata.category(char) == "Nd" or char.isdigit():
                preferred = [c for c in ascii_like if c.isdigit()]
            else:
                preferred = []
            table[char] = (preferred or ascii_like)[0]
    return table


def _by_name(char: str, category: str) -> str | None:
    """Folds the confusables data does not give, read from the character's Unicode name:
    small capitals, full stops and middle dots of other scripts (a separator in an address or
    a date), blank letters (Hangul fillers, the braille blank), and label symbols (a
    telephone or fax sign before a number)."""
    capital = _small_capital(char)
    if capital is not None:
        return capital
    name = unicodedata.name(char, "")
    if category == "Po" and (name.endswith("FULL STOP") or name.endswith("MIDDLE DOT")):
        return "."
    if name == "DOT OPERATOR":
        return "."
    if category == "Lo" and "HANGUL" in name and name.endswith("FILLER"):
        return ""
    if name == "BRAILLE PATTERN BLANK":
        return " "
    if category == "So":
        if "TELEPHONE" in name or name.startswith("MOBILE PHONE"):
            return " tel "
        if name in ("FAX MACHINE", "FAX ICON"):
            return " fax "
    return None


_DOTLESS_STROKE_NAMES = ("DOTLESS", "PALOCHKA", "IOTA")


@cache
def _strokes() -> tuple[dict[int, str], re.Pattern[str]]:
    """Single vertical strokes that read as "l" as readily as "i" or "I": the non-ASCII
    members of the confusables class of "l" (Cyrillic "Ӏ", Greek "Ι", "ℓ") and the dotless
    members of the class of "i" (Cyrillic palochka "ӏ", dotless "ı", iota "ι"). The skeleton
    gives each one letter; ``stroke_variant`` is the reading with the other."""
    table: dict[int, str] = {}
    for members in _confusable_classes():
        if "l" in members:
            table.update((ord(c), "l") for c in members if not c.isascii())
        elif "i" in members:
            for char in members:
                name = unicodedata.name(char, "")
                if not char.isascii() and any(word in name for word in _DOTLESS_STROKE_NAMES):
                    table[ord(char)] = "l"
    pattern = re.compile("[" + "".join(re.escape(chr(code)) for code in sorted(table)) + "]")
    return table, pattern


def stroke_variant(text: str) -> str | None:
    """The folded view of ``text`` with every ambiguous stroke read as "l" ("hospitaӏ" ->
    "hospital", where the skeleton reads "hospitai"), or None when ``text`` has none."""
    if text.isascii():
        return None
    table, pattern = _strokes()
    if pattern.search(text) is None:
        return None
    return fold(text.translate(table))


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
    folded = confusable_ascii().get(char)
    if folded is None:
        folded = _by_name(char, category)
    return char if folded is None else folded


_FOLD = _Fold()


def _join_spelt_keyword(match: re.Match[str]) -> str:
    letters = match.group(0).translate(_SPELT_SEPARATORS)
    return letters.upper() if letters.lower() in _SPELT_KEYWORDS else match.group(0)


def fold(text: str) -> str:
    """The canonical spelling of ``text`` the detectors scan (see the module docstring)."""
    if not text.isascii():
        if "\u2116" in text:
            # NFKD spells the numero sign "No", glued to the number and the word before it
            # ("Acct\u211612345" -> "AcctNo12345"); it means what "#" means.
            text = text.replace("\u2116", " #")
        text = unicodedata.normalize("NFKD", text).translate(_FOLD)
    if _maybe_defanged(text):
        text = _DEFANG_RE.sub(_undefang, text)
    if _SPELT_RE.search(text) is not None:
        text = _SPELT_RE.sub(_join_spelt_keyword, text)
    if " " in text and _SPELT_DIGITS_RE.search(text) is not None:
        text = _SPELT_DIGITS_RE.sub(lambda m: m.group(0).replace(" ", ""), text)
    return text
