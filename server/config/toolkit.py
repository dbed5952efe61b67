"""Reading a TOML table while collecting every problem: :class:`Table` converts and checks
values (never raising), :class:`Problems` keeps what was wrong and where."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from policies.money import (
    MAX_AMOUNT_MINOR,
    MoneyError,
    format_amount,
    format_price,
    parse_amount,
    parse_price,
)
from server.config.locate import line_of, locate_keys
from server.config.records import MAX_PRICE_UNITS_PER_WH, KeyPath, Problem
from server.config.values import (
    cached_amount,
    cached_duration_ms,
    format_path,
    id_problem,
    over,
    parse_duration_ms,
    parse_minute,
    show,
    suggest,
    type_name,
)


class Problems:
    """Problems found so far, each at a key path; the same problem at the same path is kept
    once (a bad ``meter_defaults`` value is read by every meter but is one mistake)."""

    def __init__(self) -> None:
        self.items: list[tuple[KeyPath, str, KeyPath | None]] = []
        self._seen: set[tuple[KeyPath, str]] = set()

    def add(self, path: KeyPath, message: str, *, related: KeyPath | None = None) -> None:
        if (path, message) not in self._seen:
            self._seen.add((path, message))
            self.items.append((path, message, related))

    def located(self, text: str, source: str) -> list[Problem]:
        lines = locate_keys(text)
        problems = []
        for path, message, related in self.items:
            if related is not None:
                related_line = line_of(lines, related)
                where = f"line {related_line}" if related_line else format_path(related)
                message = f"{message} (first at {where})"
            problems.append(Problem(source, line_of(lines, path), format_path(path), message))
        # File order reads best; problems without a line (none expected) go last.
        problems.sort(key=lambda p: p.line if p.line is not None else 1 << 62)
        return problems


class _Required:
    """Marks an accessor's key as required (a singleton; None is a legal default)."""


_REQUIRED: Final = _Required()


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

    def raw(self, key: str, default: object = _REQUIRED) -> object:
        self.asked.add(key)
        if key in self.data:
            return self.data[key]
        if default is _REQUIRED:
            self.failed.add(key)
            if not self.absent:
                self.problems.add(self.path, f'missing required key "{key}"')
        return default

    def string(
        self, key: str, default: object = _REQUIRED, *, choices: Sequence[str] | None = None
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

    def name(self, key: str, what: str) -> str:
        """An identifier others refer to: non-empty, no spaces, no ``/`` (alarm ids are
        ``<meter id>/<number>``, so a slash would make them ambiguous), and one storage can
        keep (:func:`id_problem`)."""
        value = self.string(key)
        if key in self.failed:
            return value
        if not value or "/" in value or any(c.isspace() for c in value):
            self.fail(key, f'{what} must be non-empty without spaces or "/", got {show(value)}')
        else:
            self.check_id(key, value, what)
        return value

    def check_id(self, key: str, value: str, what: str) -> None:
        problem = id_problem(value, what)
        if problem is not None:
            self.fail(key, problem)

    def integer(self, key: str, default: object = _REQUIRED, *, low: int, high: int) -> int:
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

    def number(self, key: str, default: object = _REQUIRED, *, low: float = 0.0) -> float:
        value = self.raw(key, default)
        if key in self.failed:
            return low
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(key, f"expected a number, got {type_name(value)} {show(value)}")
            return low
        if not low <= value < float("inf"):
            self.fail(key, f"must be a finite number >= {low:g}, got {value}")
            return low
        return float(value)

    def boolean(self, key: str, default: object = _REQUIRED) -> bool:
        value = self.raw(key, default)
        if key in self.failed:
            return False
        if not isinstance(value, bool):
            self.fail(key, f"expected true or false, got {type_name(value)} {show(value)}")
            return False
        return value

    def duration_ms(self, key: str, default: object = _REQUIRED, *, low_ms: int = 1) -> int:
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

    def amount(self, key: str, decimals: int, default: object = _REQUIRED) -> int:
        """Money in minor units from a decimal string; never negative in a config."""
        value = self.raw(key, default)
        if key in self.failed:
            return 0
        return self._amount(key, value, decimals) or 0

    def _amount(self, key: str, value: object, decimals: int, label: str = "") -> int | None:
        try:
            if isinstance(value, str) and not label:
                minor = cached_amount(value, decimals)
            else:
                minor = parse_amount(value, decimals, what=label or "amount")
        except MoneyError as error:
            if over(value, decimals, MAX_AMOUNT_MINOR):
                limit = format_amount(MAX_AMOUNT_MINOR, decimals)
                what = f"{label} must be" if label else "must be"
                self.fail(key, f"{what} at most {limit}, got {show(value)}")
            else:
                self.fail(key, str(error))
            return None
        if minor < 0:
            self.fail(key, f"{label or 'amount'} must not be negative, got {show(value)}")
            return None
        return minor

    def amounts(self, key: str, decimals: int) -> tuple[int, ...]:
        values = self.raw(key, [])
        if not isinstance(values, list):
            self.fail(key, f'expected an array of amounts like ["50.00"], got {show(values)}')
            return ()
        parsed = [self._amount(key, v, decimals, f"{key}[{i}]") for i, v in enumerate(values)]
        return tuple(p for p in parsed if p is not None)

    def price(self, key: str, decimals: int, default: object = _REQUIRED) -> int:
        value = self.raw(key, default)
        if key in self.failed:
            return 0
        try:
            units = parse_price(value, decimals)
        except MoneyError as error:
            self.fail(key, str(error))
            return 0
        if units > MAX_PRICE_UNITS_PER_WH:
            limit = format_price(MAX_PRICE_UNITS_PER_WH, decimals)
            self.fail(key, f"a price must be at most {limit} per kWh, got {show(value)}")
            return 0
        return units

    def minute(self, key: str, default: object = _REQUIRED, *, end: bool = False) -> int:
        value = self.raw(key, default)
        if key in self.failed:
            return 0
        try:
            return parse_minute(value, allow_end_of_day=end)
        except ValueError as error:
            self.fail(key, str(error))
            return 0

    def table(self, key: str, *, required: bool = False) -> Table:
        value = self.raw(key, _REQUIRED if required else {})
        if key in self.failed:
            absent = Table(self.problems, self.at(key), {})
            absent.absent = True
            return absent
        if not isinstance(value, dict):
            self.fail(key, f"expected a table, got {type_name(value)} {show(value)}")
            return Table(self.problems, self.at(key), {})
        return Table(self.problems, self.at(key), value)

    def tables(self, key: str, *, required: bool = False) -> list[Table]:
        """An array of tables, written ``[[key]]`` or ``key = [{...}, {...}]``."""
        value = self.raw(key, _REQUIRED if required else [])
        if key in self.failed:
            return []
        if not isinstance(value, list):
            hint = f" (write [[{key}]] for each)" if isinstance(value, dict) else ""
            self.fail(key, f"expected an array of tables{hint}, got {type_name(value)}")
            return []
        result = []
        for index, item in enumerate(value):
            if isinstance(item, dict):
                result.append(Table(self.problems, (*self.at(key), index), item))
            else:
                self.problems.add(
                    (*self.at(key), index), f"expected a table, got {type_name(item)}"
                )
                self.failed.add(key)
        return result

    def finish(self) -> None:
        """Report keys nobody asked for: in a config they are typos, not extensions."""
        for key in self.data:
            if key not in self.asked:
                self.problems.add(self.at(key), f"unknown key{suggest(key, self.asked)}")

