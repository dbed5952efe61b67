"""What-if: a period's charges recomputed from the history under another configured tariff,
side by side with what was charged, per tenant.

Each interval's energy is priced as if the other tariff had been the meter's (its bands and
seasons at the interval's time; its tiers counted from the start of each local month, so the
month's earlier days are read too), in charge units carried from interval to interval as the
meters do, so the figures are what the meters would have charged, to the minor unit. The
carry makes a meter's what-if money the floor of its total charge units, so they are summed
first and divided once.

The intervals come from the day records (``persistence.days``). Without tiers an interval's
price depends only on when it starts, so a day's prices are worked out once and shared by
every meter with the same intervals that day: re-pricing a day is one multiply-and-add over
two arrays. A tiered tariff is priced interval by interval (its price depends on the month's
energy so far), as is an interval that straddles a band boundary of the other tariff.
"""

from __future__ import annotations

import operator
from array import array
from collections import defaultdict
from zoneinfo import ZoneInfo

from persistence.days import day_slots
from policies.money import CHARGE_UNITS_PER_MINOR, format_amount
from policies.tariff import fast_price, month_at, price_interval
from policies.tariff_records import Tariff
from server.config import ParkConfig
from server.errors import UserError
from server.reports.books import Books, of_kind, other_kinds_note, quantity_column
from server.reports.period import Period, local_ms
from server.reports.table import Cell, Report

COLUMNS = ("tenant", "meters", "kwh", "charged", "whatif", "difference")
MAX_CACHED_DAYS = 4096


class DayPrices:
    """A tariff's price (charge units per Wh) of each interval of a day, for intervals of one
    length; None for one that needs splitting. Shared by every meter."""

    def __init__(self, tariff: Tariff, interval_ms: int) -> None:
        self._tariff = tariff
        self._interval = interval_ms
        self._days: dict[tuple[int, bytes], list[int] | None] = {}

    def prices(self, day_ms: int, offsets: array[int]) -> list[int] | None:
        """The prices of the intervals at ``offsets`` into the day, or None if one needs
        splitting (then price them one by one)."""
        key = (day_ms, offsets.tobytes())
        if key in self._days:
            return self._days[key]
        if len(self._days) >= MAX_CACHED_DAYS:
            self._days.clear()
        tariff, interval = self._tariff, self._interval
        prices = []
        for offset in offsets:
            start = day_ms + offset
            price = fast_price(tariff, start, start + interval, month_at(tariff, start), 0, 0)
            if price < 0:
                self._days[key] = None
                return None
            prices.append(price)
        self._days[key] = prices
        return prices


def whatif(books: Books, config: ParkConfig, period: Period, tariff_name: str,
           meter_kind: str = "electricity") -> Report:
    tariff = config.tariffs.get(tariff_name)
    if tariff is None:
        raise UserError(f"no tariff {tariff_name!r} in the config (tariffs: "
                        f"{', '.join(sorted(config.tariffs))})")
    notes = other_kinds_note(books, meter_kind)
    books = of_kind(books, meter_kind)
    quantity = quantity_column(meter_kind)
    if tariff.unit and tariff.unit.lower() != quantity:
        raise UserError(f"tariff {tariff_name!r} is priced per {tariff.unit}, and "
                        f"{meter_kind} meters are charged per {quantity.replace('kwh', 'kWh')}"
                        " (choose meter_kind, or another tariff)")
    decimals = config.server.decimals
    # Tiers count the month's energy from its first day; without tiers the period is enough.
    first = period.from_ms if not tariff.tiers else local_ms(
        period.first.replace(day=1), ZoneInfo(config.calendar.timezone))
    day_prices: dict[int, DayPrices] = {}
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # meters wh now what-if
    for meter_id, info in books.meters.items():
        interval = config.policies[meter_id].interval_ms
        prices = day_prices.get(interval)
        if prices is None:
            prices = day_prices[interval] = DayPrices(tariff, interval)
        month, month_wh = -1, 0
        units = wh_total = charged = 0
        for day_ms, value in books.history.days(meter_id, first, period.to_ms):
            offsets, _bands, whs, minors = day_slots(value)
            counted = day_ms >= period.from_ms
            shared = None if tariff.tiers else prices.prices(day_ms, offsets)
            if shared is not None:
                if counted:
                    units += sum(map(operator.mul, whs, shared))
            else:
                for offset, wh in zip(offsets, whs, strict=True):
                    start = day_ms + offset
                    this_month = month_at(tariff, start)
                    if this_month != month:
                        month, month_wh = this_month, 0
                    priced = price_interval(tariff, start, start + interval, wh, month,
                                            month_wh)
                    month, month_wh = priced.month, priced.month_wh
                    if counted:
                        units += priced.cost_units
            if counted:
                wh_total += sum(whs)
                charged += sum(minors)
        row = totals[info.tenant]
        row[0] += 1
        row[1] += wh_total
        row[2] += charged
        row[3] += units // CHARGE_UNITS_PER_MINOR

    def money(minor: int) -> str:
        return format_amount(minor, decimals)

    rows: list[tuple[Cell, ...]] = [
        (tenant, meters, f"{wh / 1000:.3f}", money(now), money(then), money(then - now))
        for tenant, (meters, wh, now, then) in sorted(totals.items())]
    park = [sum(values[i] for values in totals.values()) for i in range(4)]
    return Report("whatif", f"What if the tariff had been {tariff_name}", period.labels,
                  tuple(quantity if c == "kwh" else c for c in COLUMNS), tuple(rows),
                  ("total", park[0], f"{park[1] / 1000:.3f}", money(park[2]), money(park[3]),
                   money(park[3] - park[2])),
                  notes=(f"what-if tariff: {tariff_name}", *notes))
