"""Tariff and calendar records (data only; pricing lives in ``policies.tariff``).

One shape covers every tariff kind: the price of a Wh consumed at local time ``t`` when the
month's consumption so far is ``month_wh`` is

    band_price(calendar day type and season at t) + tier_price(month_wh)

* flat:      one band over the whole day, no tiers;
* tou:       bands (valley/flat/peak...), optionally per day type and season, no tiers;
* tiered:    one band priced 0, tiers carry the whole price (monthly blocks);
* combined:  bands plus tiers whose prices are surcharges on top of the band price.

Prices are integer charge units per Wh (``policies.money.parse_price``). For water and gas
meters the register unit is the litre (``protocols.modbus.profiles``), so the same prices are
per litre and the same tiers count litres: pricing never needs to know which it is.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

import attrs

MINUTES_PER_DAY: Final = 24 * 60
NO_SEGMENT: Final = (0, 0, 0, "", -1)
"""A segment no reading interval lies in (it ends before any reading can start)."""


@attrs.frozen
class Calendar:
    """How the park's wall clock and day types work.

    ``weekend_days`` uses ``date.weekday()`` numbers (Monday 0 .. Sunday 6).
    """

    timezone: str = "UTC"
    holidays: frozenset[dt.date] = frozenset()
    weekend_days: frozenset[int] = frozenset({5, 6})


@attrs.frozen
class Band:
    """A price band over local minutes of the day, ``start_min`` inclusive, ``end_min`` exclusive
    (``end_min`` = 1440 means midnight at the end of the day)."""

    name: str
    start_min: int
    end_min: int
    price: int


@attrs.frozen
class Season:
    """A part of the year (month-day to month-day inclusive, may wrap over new year) with its own
    band schedules. ``weekend_bands``/``holiday_bands`` fall back to ``bands`` when empty."""

    name: str
    start: tuple[int, int]
    end: tuple[int, int]
    bands: tuple[Band, ...]
    weekend_bands: tuple[Band, ...] = ()
    holiday_bands: tuple[Band, ...] = ()


@attrs.frozen
class Tier:
    """A monthly block: applies while the month's energy is below ``up_to_wh`` (None = no cap)."""

    up_to_wh: int | None
    price: int


@attrs.frozen
class Tariff:
    """A complete tariff. Band tuples cover the whole day, sorted, without gaps (checked when
    built from config). Seasons are tried in order; the first containing the date wins, else the
    top-level schedules apply. The cache is a memo of the pure day-layout function."""

    name: str
    bands: tuple[Band, ...]
    weekend_bands: tuple[Band, ...] = ()
    holiday_bands: tuple[Band, ...] = ()
    seasons: tuple[Season, ...] = ()
    tiers: tuple[Tier, ...] = ()
    calendar: Calendar = Calendar()
    unit: str = ""
    """What a register unit is for this tariff: "kWh" (its prices and tiers are energy:
    electricity meters only), "m3" (volume: water and gas meters only) or "" (either: a price
    per 1000 register units)."""
    _day_cache: dict[int, object] = attrs.field(factory=dict, eq=False, repr=False, hash=False)
    hot_segment: list[tuple[int, int, int, str, int]] = attrs.field(
        factory=lambda: [NO_SEGMENT], init=False, eq=False, repr=False, hash=False)
    """Memo of the segment ``(start_ms, end_ms, price, band, month)`` the reading hot path
    (``policies.meter.quiet_reading``) priced last: at any moment almost every meter's reading
    interval lies in the same segment, so one comparison replaces a day lookup and a bisect."""

    @classmethod
    def flat(cls, name: str, price: int, calendar: Calendar | None = None) -> Tariff:
        return cls(
            name=name,
            bands=(Band("flat", 0, MINUTES_PER_DAY, price),),
            calendar=calendar or Calendar(),
        )
