"""The park config's :class:`Table`: the shared one (``protocols.toml.toolkit``) plus what only
a park has, money, prices, times of day and ids that storage can keep."""

from __future__ import annotations

from policies.money import (
    MAX_AMOUNT_MINOR,
    MoneyError,
    format_amount,
    format_price,
    parse_amount,
    parse_price,
)
from protocols.toml import toolkit
from protocols.toml.toolkit import REQUIRED
from protocols.toml.values import show
from server.config.records import MAX_PRICE_UNITS_PER_WH
from server.config.values import cached_amount, id_problem, over, parse_minute


class Table(toolkit.Table):
    """A park document's table: every accessor of the shared one, and the park's values."""

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

    def amount(self, key: str, decimals: int, default: object = REQUIRED) -> int:
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

    def price(self, key: str, decimals: int, default: object = REQUIRED) -> int:
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

    def minute(self, key: str, default: object = REQUIRED, *, end: bool = False) -> int:
        value = self.raw(key, default)
        if key in self.failed:
            return 0
        try:
            return parse_minute(value, allow_end_of_day=end)
        except ValueError as error:
            self.fail(key, str(error))
            return 0
