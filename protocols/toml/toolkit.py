"""Reading a TOML table while collecting every problem: a :class:`Table` converts and checks
values and never raises; what was wrong goes to its :class:`~protocols.toml.problems.Problems`
at the value's key path, and a key nobody asked for is a typo with a "did you mean".

Theory of operation
-------------------
A reader (the park config's, a profile's, a scenario's) walks the parsed document through
tables. Every accessor converts and checks one value and, on a bad one, records a problem and
returns a harmless placeholder of the right type instead of raising, so that *every* problem
in the file is found in one run. ``finish()`` reports the keys nobody asked for. At the end the
reader raises its own :class:`~protocols.toml.problems.DocumentError` with
``problems.located(text, source)``: only then is the source scanned for lines
(``protocols.toml.locate``), so a file without mistakes never pays for it. The park config
adds money, prices, times of day and ids (``server.config.toolkit``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Final, Self

from protocols.toml.problems import Problems
from protocols.toml.values import (
    KeyPath,
    cached_duration_ms,
    parse_duration_ms,
    parse_duration_s,
    show,
    suggest,
    type_name,
)


class _Required:
    """Marks an accessor's key as required (a singleton; None is a legal default)."""


REQUIRED: Final = _Required()


class Table:
    """A view of one TOML table that converts and checks its values.

    Accessors never raise: a missing or bad value is recorded at its key path and a placeholder
    of the right type comes back, so reading continues and every problem is reported.
    ``failed`` tells cross-checks which keys to skip (a placeholder is not the user's value).
    ``origins`` maps keys that came from elsewhere (``meter_defaults``) to where they were
    written, so problems point at the line the user has to change.
    """

    def __init__(
        self,
        problems: Problems,
        path: KeyPath,
        data: Mapping[str, object],
        origins: Mapping[str, KeyPath] | None = None,
    ) -> None:
        self.problems = problems
        self.path = path
        self.data = data
        self.origins = origins or {}
        self.asked: set[str] = set()
        self.failed: set[str] = set()
        self.absent = False  # a missing required table: its own missing keys go unsaid

    def at(self, key: str) -> KeyPath:
        return self.origins.get(key) or (*self.path, key)

    def fail(self, key: str, message: str) -> None:
        self.failed.add(key)
        self.problems.add(self.at(key), message)

    def has(self, key: str) -> bool:
        self.asked.add(key)
        return key in self.data

    def raw(self, key: str, default: object = REQUIRED) -> object:
        self.asked.add(key)
        if key in self.data:
            return self.data[key]
        if default is REQUIRED:
            self.failed.add(key)
            if not self.absent:
                self.problems.add(self.path, f'missing required key "{key}"')
        return default

    def string(
        self, key: str, default: object = REQUIRED, *, choices: Sequence[str] | None = None
    ) -> str:
        value = self.raw(key, default)
        if key in self.failed:
            return ""
        if not isinstance(value, str):
            self.fail(key, f"expected a string, got {type_name(value)} {show(value)}")
            return ""
        if choices is not None and value not in choices:
            self.fail(
                key,
                f"must be one of {', '.join(choices)}; got {show(value)}"
                f"{suggest(value, choices)}",
            )
            return ""
        return value

    def integer(
        self,
        key: str,
        default: object = REQUIRED,
        *,
        low: int = -(1 << 63),
        high: int = (1 << 63) - 1,
    ) -> int:
        """An integer in ``low..high`` (by default any TOML integer: 64 bits, signed)."""
        value = self.raw(key, default)
        if key in self.failed:
            return low
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"expected an integer, got {type_name(value)} {show(value)}")
            return low
        if not low <= value <= high:
            self.fail(key, f"must be between {low} and {high}, got {value}")
            return low
        return value

    def number(self, key: str, default: object = REQUIRED, *, low: float = 0.0) -> float:
        """A finite number (an integer or a float) of at least ``low`` (``-math.inf``: any)."""
        value = self.raw(key, default)
        placeholder = low if math.isfinite(low) else 0.0
        if key in self.failed:
            return placeholder
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(key, f"expected a number, got {type_name(value)} {show(value)}")
            return placeholder
        if not (math.isfinite(value) and value >= low):
            bound = f" >= {low:g}" if low > -math.inf else ""
            self.fail(key, f"must be a finite number{bound}, got {value}")
            return placeholder
        return float(value)

    def boolean(self, key: str, default: object = REQUIRED) -> bool:
        value = self.raw(key, default)
        if key in self.failed:
            return False
        if not isinstance(value, bool):
            self.fail(key, f"expected true or false, got {type_name(value)} {show(value)}")
            return False
        return value

    def duration_ms(self, key: str, default: object = REQUIRED, *, low_ms: int = 1) -> int:
        value = self.raw(key, default)
        if key in self.failed:
            return low_ms
        try:
            ms = cached_duration_ms(value) if isinstance(value, str) else parse_duration_ms(value)
        except ValueError as error:
            self.fail(key, str(error))
            return low_ms
        if ms < low_ms:
            self.fail(key, f"must be at least {low_ms} ms, got {show(value)}")
            return low_ms
        return ms

    def duration_s(self, key: str, default: object = REQUIRED, *, low_s: float = 0.0) -> float:
        """A duration (``protocols.toml.values``) in seconds, at least ``low_s``."""
        value = self.raw(key, default)
        if key in self.failed:
            return low_s
        try:
            seconds = parse_duration_s(value)
        except ValueError as error:
            self.fail(key, str(error))
            return low_s
        if seconds < low_s:
            self.fail(key, f"must be at least {low_s:g}s, got {show(value)}")
            return low_s
        return seconds

    def table(self, key: str, *, required: bool = False) -> Self:
        """A table (of this reader's kind of :class:`Table`); ``{}`` when it is left out."""
        value = self.raw(key, REQUIRED if required else {})
        if key in self.failed:
            absent = type(self)(self.problems, self.at(key), {})
            absent.absent = True
            return absent
        if not isinstance(value, dict):
            self.fail(key, f"expected a table, got {type_name(value)} {show(value)}")
            return type(self)(self.problems, self.at(key), {})
        return type(self)(self.problems, self.at(key), value)

    def tables(self, key: str, *, required: bool = False) -> list[Self]:
        """An array of tables, written ``[[key]]`` or ``key = [{...}, {...}]``."""
        value = self.raw(key, REQUIRED if required else [])
        if key in self.failed:
            return []
        if not isinstance(value, list):
            hint = f" (write [[{key}]] for each)" if isinstance(value, dict) else ""
            self.fail(key, f"expected an array of tables{hint}, got {type_name(value)}")
            return []
        result = []
        for index, item in enumerate(value):
            if isinstance(item, dict):
                result.append(type(self)(self.problems, (*self.at(key), index), item))
            else:
                self.problems.add(
                    (*self.at(key), index), f"expected a table, got {type_name(item)}"
                )
                self.failed.add(key)
        return result

    def first_of(self, first_at: dict[str, KeyPath], value: str, what: str,
                 key: str = "id") -> bool:
        """Whether this entry is the first whose ``key`` is ``value`` (``first_at``: value ->
        where it was first written); a later one is a problem naming the first's line, and
        False too when the value itself was refused."""
        if key in self.failed:
            return False
        if value in first_at:
            self.problems.add(self.at(key), f'duplicate {what} "{value}"',
                              related=first_at[value])
            return False
        first_at[value] = self.at(key)
        return True

    def finish(self) -> None:
        """Report keys nobody asked for: in a file we read they are typos, not extensions."""
        for key in self.data:
            if key not in self.asked:
                self.problems.add(self.at(key), f"unknown key{suggest(key, self.asked)}")

