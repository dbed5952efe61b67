"""The value syntax every TOML file we read shares, and how a value or a key path is shown back
to the user: durations, key paths, quoting, type names, "did you mean" suggestions.

Durations
---------
One grammar, for the park config, profiles, scenarios and fault specs (``--fault`` too)::

    duration = [spaces] number [spaces] unit [spaces]
    number   = digits [ "." [digits] ] | "." digits      (no sign, no exponent)
    unit     = "ms" | "s" | "m" (minutes) | "h"

``"500ms"``, ``"2s"``, ``"1.5s"``, ``"5m"``, ``"1h"``, ``"2 s"``, ``".5s"``. A bare number is
refused: it would not say its unit. The number is read exactly (``Decimal``); what a reader does
with it is the reader's precision, not another grammar: the park config keeps whole
milliseconds (:func:`parse_duration_ms` refuses ``"0.5ms"``), the simulator keeps seconds as a
float (:func:`parse_duration_s`). A range (at least 1 ms, longer than 0) is each key's own check.
"""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Final

KeyPath = tuple[str | int, ...]
"""A position in a TOML document: ``("meters", 3, "tariff")`` is ``meters[3].tariff``."""

_DURATION: Final = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)\s*")
_BARE_NUMBER: Final = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*")
_MS_PER_UNIT: Final = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


def duration_exact_ms(value: object) -> Decimal:
    """A duration in the module's grammar -> milliseconds, exactly; ``ValueError`` says why not."""
    if not isinstance(value, str):
        raise ValueError(
            f'expected a duration with a unit like "2s" or "500ms", got {show(value)}'
        )
    match = _DURATION.fullmatch(value)
    if match is None:
        hint = ": add a unit" if _BARE_NUMBER.fullmatch(value) else ""
        raise ValueError(
            f'expected a duration like "500ms", "2s", "5m" or "1h" (units: ms, s, m, h), '
            f"got {show(value)}{hint}"
        )
    return Decimal(match[1]) * _MS_PER_UNIT[match[2]]


def parse_duration_ms(value: object) -> int:
    """``"500ms"``, ``"2s"``, ``"1.5s"``, ``"5m"``, ``"1h"`` -> whole milliseconds."""
    ms = duration_exact_ms(value)
    if ms != ms.to_integral_value():
        raise ValueError(f"{show(value)} is not a whole number of milliseconds")
    return int(ms)


def parse_duration_s(value: object) -> float:
    """``"800ms"``, ``"5s"``, ``"1.5s"``, ``"2m"``, ``"1h"`` -> seconds (``"51ms"`` is 0.051 as
    written: the division is exact before the float)."""
    return float(duration_exact_ms(value) / 1000)


# A park file repeats the same few values thousands of times ("2s"); parsing each once keeps a
# 100k-meter load dominated by TOML parsing, not by Decimal.
cached_duration_ms = functools.lru_cache(maxsize=1024)(parse_duration_ms)


def show(value: object) -> str:
    """A value as the user wrote it, with its TOML type when that is the mistake."""
    if isinstance(value, str):
        return quoted(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


_SHOWN_CHARS: Final = 60


def printable(text: str) -> str:
    """``text`` on one line: control characters escaped (``\\x00``, ``\\n``), a long one cut
    short with its length."""
    shown = text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS]
    if not shown.isprintable():
        shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in shown)
    return f"{shown}...({len(text)} characters)" if len(text) > _SHOWN_CHARS else shown


def quoted(text: str) -> str:
    """A string in double quotes, as the user would recognise it, on one line."""
    return f'"{printable(text)}"'


def type_name(value: object) -> str:
    for kind, name in (
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a float"),
        (str, "a string"),
        (dict, "a table"),
        (list, "an array"),
        (dt.datetime, "a date-time"),
        (dt.date, "a date"),
        (dt.time, "a time"),
    ):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def format_path(path: KeyPath) -> str:
    """``("meters", 3, "tariff")`` -> ``meters[3].tariff`` (keys quoted when not bare)."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            key = part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else quoted(part)
            text += f".{key}" if text else key
    return text


def suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {quoted(close[0])}?)" if close else ""


def known(choices: Iterable[str], limit: int = 8) -> str:
    names = sorted(choices)
    shown = ", ".join(printable(name) for name in names[:limit])
    more = f", ... {len(names) - limit} more" if len(names) > limit else ""
    return f"(known: {shown}{more})" if names else "(none defined)"
