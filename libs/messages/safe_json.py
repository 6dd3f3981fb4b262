"""JSON from untrusted bytes, with the cost of parsing bounded before anything is built.

:func:`loads` reads one JSON document from a message body that anyone who can publish to the
broker may have written. It guarantees:

* **It only ever raises** :class:`~libs.errors.MalformedMessage` (a
  :class:`~libs.errors.PoisonMessage`), with one sentence that says what is wrong. No
  ``RecursionError``, ``ValueError``, ``UnicodeDecodeError`` or anything else gets out.
* **The cost is linear in the body and bounded by** :class:`JsonLimits`. Before ``json`` builds a
  single object, a scan of the text that steps over string contents (escapes included) checks the
  nesting depth, the keys of each object, the items of each array and the number of values in the
  whole document; long strings are measured after their escapes are decoded. Nesting therefore
  never comes near the interpreter's recursion limit. The decoder's hooks then see each number's
  literal text before converting it, so no integer is long enough to make ``int()`` slow (its cost
  grows with the square of the digits).
* **What it returns is plain, portable JSON** (RFC 8259, I-JSON in spirit): the body is strict
  UTF-8 without a byte order mark; every string is valid Unicode (no unpaired surrogate escape such
  as ``"\\ud800"``); there is no ``NaN``, ``Infinity`` or ``-Infinity``, and no number that
  overflows a float to infinity; no object has the same key twice (the standard library would
  silently keep the last one, so two readers of the same bytes could see different events); there
  is nothing after the document.

Values come back as ``dict``, ``list``, ``str``, ``int``, ``float``, ``bool`` and ``None``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

from libs.errors import MalformedMessage

__all__ = ["DEFAULT_LIMITS", "JsonLimits", "loads"]


@dataclass(frozen=True, slots=True)
class JsonLimits:
    """How much of each thing one JSON document may hold."""

    max_depth: int = 32
    """Nested arrays and objects; the outermost container is level 1."""
    max_keys_per_object: int = 256
    max_items_per_array: int = 1_000
    max_total_values: int = 20_000
    """Values of every kind in the whole document, containers and object keys included."""
    max_string_chars: int = 64 * 1024
    """Characters of one string (key or value), counted after its escapes are decoded."""
    max_number_chars: int = 40
    """Characters of one number as written, sign, fraction and exponent included."""

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(
                    f"JsonLimits.{spec.name} must be a positive integer, got {value!r}"
                )


DEFAULT_LIMITS = JsonLimits()

_UTF8_BOM = b"\xef\xbb\xbf"
_OTHER_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")

# A JSON string with its escapes. A string that is never closed runs to the end of the text. The
# quantifiers are possessive: a match never backtracks, so a pass is linear in the text.
_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"?+', re.DOTALL)
_BRACKET = re.compile(r"([\[\]{}])")
# An escape of a surrogate that is not half of a pair: the only way a JSON string can name one.
# Searched in the text with escaped backslashes blanked out, where every ``\u`` is an escape.
_HIGH = r"\\u[dD][89abAB][0-9a-fA-F]{2}"
_LOW = r"\\u[dD][c-fC-F][0-9a-fA-F]{2}"
_LONE_SURROGATE = re.compile(f"{_HIGH}(?!{_LOW})|(?<!{_HIGH}){_LOW}")
_MAX_REASON_CHARS = 200


def loads(body: bytes, *, limits: JsonLimits = DEFAULT_LIMITS) -> Any:
    """The JSON document in ``body``, or :class:`MalformedMessage` saying why there is none."""
    try:
        text = _text(body)
        _scan(text, limits)
        return _decoder(limits).decode(text)
    except MalformedMessage:
        raise
    except json.JSONDecodeError as exc:
        raise MalformedMessage(
            f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except Exception as exc:  # RecursionError, ValueError, MemoryError, TypeError, ...
        reason = f"{type(exc).__name__}: {exc}"[:_MAX_REASON_CHARS]
        raise MalformedMessage(f"body cannot be read as JSON ({reason})") from None


def _text(body: bytes) -> str:
    if not body or body.isspace():
        raise MalformedMessage("body is empty")
    if body.startswith(_UTF8_BOM):
        raise MalformedMessage(
            "body starts with a UTF-8 byte order mark (BOM); JSON between systems must not have one"
        )
    if body.startswith(_OTHER_BOMS) or b"\x00" in body[:4]:
        raise MalformedMessage("body looks like UTF-16 or UTF-32; JSON here must be UTF-8")
    try:
        return bytes(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedMessage(
            f"body is not valid UTF-8: {exc.reason} at byte {exc.start}"
        ) from None


def _scan(text: str, limits: JsonLimits) -> None:
    """Check the limits on the text, before json builds anything; string contents are skipped.

    The passes run in C (``str.replace``, ``split``, ``count``); the one loop in Python runs once
    per bracket, and only when the whole text holds more brackets or commas than a limit allows.

    Strings: with escaped backslashes and escaped quotes blanked out (left to right, as a reader
    of escapes pairs them), every remaining quote opens or closes a string, so splitting on quotes
    leaves the string contents at odd positions and the skeleton of the document at even ones.

    For valid JSON the counts are exact. For invalid JSON they may be off, but json fails at the
    first error, and the part before it is a valid prefix, where they are exact again.
    """
    unescaped = text.replace("\\\\", "__").replace('\\"', "__") if "\\" in text else text
    parts = unescaped.split('"')
    # The document without its strings (a quote stands where each was) and without whitespace.
    skeleton = "".join('"'.join(parts[0::2]).split())
    opened = skeleton.count("[") + skeleton.count("{")
    if skeleton.count("]") + skeleton.count("}") > opened:
        raise MalformedMessage("body is not valid JSON: it closes more brackets than it opens")
    commas = skeleton.count(",")
    # Every value but the root, and every key, follows a comma, a colon or the bracket that
    # opens a non-empty container.
    nonempty = opened - skeleton.count("[]") - skeleton.count("{}")
    total = 1 + commas + skeleton.count(":") + nonempty
    if total > limits.max_total_values:
        raise MalformedMessage(f"the JSON document has more than {limits.max_total_values} values")
    if opened > limits.max_depth or commas >= min(
        limits.max_keys_per_object, limits.max_items_per_array
    ):
        _check_containers(_BRACKET.split(skeleton), limits)
    long_strings = len(text) - 2 > limits.max_string_chars and (
        max(map(len, parts[1::2]), default=0) > limits.max_string_chars
    )
    if "\\u" in text and _LONE_SURROGATE.search(unescaped) is not None:
        raise MalformedMessage(
            "a JSON string holds an unpaired surrogate escape (\\ud800-\\udfff), "
            "which is not a Unicode character"
        )
    if long_strings:
        for token in _STRING.findall(text):
            if len(token) - 2 > limits.max_string_chars:
                _check_string(token, limits.max_string_chars)


def _check_containers(pieces: list[str], limits: JsonLimits) -> None:
    """Depth, and the elements of each container (its commas plus one).

    ``pieces`` alternates text without brackets and one bracket: the commas in the text after a
    bracket belong to the container open at that point.
    """
    max_depth = limits.max_depth
    max_keys = limits.max_keys_per_object
    max_items = limits.max_items_per_array
    kinds: list[str] = []  # '[' or '{' for each open container
    commas: list[int] = []  # commas seen so far in each open container
    for i in range(1, len(pieces), 2):
        bracket = pieces[i]
        if bracket == "[" or bracket == "{":
            if len(kinds) >= max_depth:
                raise MalformedMessage(f"JSON nests deeper than {max_depth} levels")
            kinds.append(bracket)
            commas.append(0)
        elif kinds:
            kinds.pop()
            commas.pop()
        if kinds and "," in pieces[i + 1]:
            commas[-1] += pieces[i + 1].count(",")
            if kinds[-1] == "{":
                if commas[-1] >= max_keys:
                    raise MalformedMessage(f"a JSON object has more than {max_keys} keys")
            elif commas[-1] >= max_items:
                raise MalformedMessage(f"a JSON array has more than {max_items} items")


def _check_string(token: str, max_chars: int) -> None:
    """Length after decoding: decodes the one string token."""
    try:
        value: str = json.loads(token)
    except ValueError:  # a bad escape or a control character: the decoder will say where
        return
    if len(value) > max_chars:
        raise MalformedMessage(f"a JSON string is longer than {max_chars} characters")


@lru_cache(maxsize=8)
def _decoder(limits: JsonLimits) -> json.JSONDecoder:
    """A decoder whose hooks refuse what the scan cannot see: values, not sizes."""
    max_keys = limits.max_keys_per_object
    max_number = limits.max_number_chars

    def pairs_to_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    raise MalformedMessage(f"a JSON object has the key {_show(key)} more than once")
                seen.add(key)
        if len(obj) > max_keys:  # the scan already refused this; kept as a second line
            raise MalformedMessage(f"a JSON object has more than {max_keys} keys")
        return obj

    def parse_int(literal: str) -> int:
        if len(literal) > max_number:
            raise MalformedMessage(
                f"a JSON number is {len(literal)} characters long; the limit is {max_number}"
            )
        return int(literal)

    def parse_float(literal: str) -> float:
        if len(literal) > max_number:
            raise MalformedMessage(
                f"a JSON number is {len(literal)} characters long; the limit is {max_number}"
            )
        value = float(literal)
        if not math.isfinite(value):
            raise MalformedMessage(f"the JSON number {literal} is too large for a float")
        return value

    def parse_constant(name: str) -> Any:
        raise MalformedMessage(f"{name} is not a JSON number (NaN and Infinity are not allowed)")

    return json.JSONDecoder(
        object_pairs_hook=pairs_to_object,
        parse_int=parse_int,
        parse_float=parse_float,
        parse_constant=parse_constant,
        strict=True,
    )


def _show(value: str) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."
