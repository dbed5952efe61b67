"""The config's value syntax: durations, money, times of day, addresses, ids, and how a bad
value is shown back to the user. The TOML spelling ("2s", "100.00", "08:00") ends here."""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Final

from policies.money import parse_amount
from policies.tariff_records import MINUTES_PER_DAY
from server.config.records import CONTROL_CHARS, MAX_ID_BYTES, KeyPath, ListenAddress

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_MS_PER_UNIT: Final = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
_TIME = re.compile(r"(\d\d):(\d\d)")
MONTH_DAY = re.compile(r"(\d\d)-(\d\d)")


def parse_duration_ms(value: object) -> int:
    """``"500ms"``, ``"2s"``, ``"1.5s"``, ``"5m"``, ``"1h"`` -> whole milliseconds."""
    if not isinstance(value, str):
        raise ValueError(
            f'expected a duration with a unit like "2s" or "500ms", got {show(value)}'
        )
    match = _DURATION.fullmatch(value)
    if match is None:
        raise ValueError(
            f'expected a duration like "500ms", "2s", "5m" or "1h" (units: ms, s, m, h), '
            f"got {show(value)}"
        )
    ms = Decimal(match[1]) * _MS_PER_UNIT[match[2]]
    if ms != ms.to_integral_value():
        raise ValueError(f"{show(value)} is not a whole number of milliseconds")
    return int(ms)


# A park file repeats the same few values thousands of times ("100.00", "2s"); parsing each
# once keeps a 100k-meter load dominated by TOML parsing, not by Decimal.
cached_duration_ms = functools.lru_cache(maxsize=1024)(parse_duration_ms)


@functools.lru_cache(maxsize=1024)
def cached_amount(value: str, decimals: int) -> int:
    return parse_amount(value, decimals)


def format_minute(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def parse_minute(value: object, *, allow_end_of_day: bool = False) -> int:
    """``"HH:MM"`` -> minute of the day; ``"24:00"`` (1440) only where it may end a span."""
    if isinstance(value, dt.time):  # a TOML local-time literal: 08:00:00
        if value.second or value.microsecond:
            raise ValueError(f"times are whole minutes, got {value.isoformat()}")
        return value.hour * 60 + value.minute
    match = _TIME.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f'expected a time "HH:MM", got {show(value)}')
    hours, minutes = int(match[1]), int(match[2])
    if allow_end_of_day and (hours, minutes) == (24, 0):
        return MINUTES_PER_DAY
    if hours > 23 or minutes > 59:
        hint = ' ("24:00" is allowed only as an end)' if hours == 24 else ""
        raise ValueError(f"no such time of day: {show(value)}{hint}")
    return hours * 60 + minutes


def parse_listen(value: object) -> ListenAddress:
    if not isinstance(value, str):
        raise ValueError(f'expected "host:port", got {show(value)}')
    host, colon, port_text = value.rpartition(":")
    if not colon or not host:
        raise ValueError(f'expected "host:port" like "127.0.0.1:8080", got {show(value)}')
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f'write an IPv6 address in brackets, like "[::1]:8080": {show(value)}')
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"bad host in {show(value)}")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port must be a number 1-65535, got {show(value)}")
    return ListenAddress(host, int(port_text))


def show(value: object) -> str:
    """A value as the user wrote it, with its TOML type when that is the mistake."""
    if isinstance(value, str):
        return _quoted(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


_SHOWN_CHARS: Final = 60


def _printable(text: str) -> str:
    """``text`` on one line: control characters escaped (``\\x00``, ``\\n``), a long one cut
    short with its length."""
    shown = text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS]
    if not shown.isprintable():
        shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in shown)
    return f"{shown}...({len(text)} characters)" if len(text) > _SHOWN_CHARS else shown


def _quoted(text: str) -> str:
    """A string in double quotes, as the user would recognise it, on one line."""
    return f'"{_printable(text)}"'


_PLAIN_DECIMAL: Final = re.compile(r"[+-]?\d+(?:\.\d*)?")


def over(value: object, decimals: int, limit: int) -> bool:
    """Whether ``value`` is a plain decimal string of more than ``limit`` minor units (other
    refusals, such as an exponent, keep the money module's words)."""
    if not isinstance(value, str) or not _PLAIN_DECIMAL.fullmatch(value):
        return False
    return abs(Decimal(value).scaleb(decimals)) > limit


def id_problem(value: str, what: str) -> str | None:
    """Why ``value`` cannot be an id storage keeps (``MAX_ID_BYTES``), or None."""
    if not value:
        return f"{what} must not be empty"
    if CONTROL_CHARS.search(value):
        shown = _quoted(value)
        return f"{what} must not contain control characters (NUL, tab, newline), got {shown}"
    if value != value.strip():
        return f"{what} must not start or end with whitespace, got {_quoted(value)}"
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_ID_BYTES:
        shown = _quoted(value)
        return f"{what} must be at most {MAX_ID_BYTES} bytes of UTF-8; this one has {size}: {shown}"
    return None


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
            key = part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else _quoted(part)
            text += f".{key}" if text else key
    return text


def suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {_quoted(close[0])}?)" if close else ""


def known(choices: Iterable[str], limit: int = 8) -> str:
    names = sorted(choices)
    shown = ", ".join(_printable(name) for name in names[:limit])
    more = f", ... {len(names) - limit} more" if len(names) > limit else ""
    return f"(known: {shown}{more})" if names else "(none defined)"

