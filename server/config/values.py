"""The park config's own value syntax: money, times of day, listen addresses, ids. The TOML
spelling ("100.00", "08:00") ends here; durations and how a bad value is shown back to the user
are every TOML file's (``protocols.toml.values``)."""

from __future__ import annotations

import datetime as dt
import functools
import re
from decimal import Decimal
from typing import Final

from policies.money import parse_amount
from policies.tariff_records import MINUTES_PER_DAY
from protocols.toml.values import quoted, show
from server.config.records import CONTROL_CHARS, MAX_ID_BYTES, ListenAddress

_TIME = re.compile(r"(\d\d):(\d\d)")
MONTH_DAY = re.compile(r"(\d\d)-(\d\d)")


# A park file repeats the same few values thousands of times ("100.00"); parsing each once
# keeps a 100k-meter load dominated by TOML parsing, not by Decimal.
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
        shown = quoted(value)
        return f"{what} must not contain control characters (NUL, tab, newline), got {shown}"
    if value != value.strip():
        return f"{what} must not start or end with whitespace, got {quoted(value)}"
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_ID_BYTES:
        shown = quoted(value)
        return f"{what} must be at most {MAX_ID_BYTES} bytes of UTF-8; this one has {size}: {shown}"
    return None
