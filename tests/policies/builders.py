"""Builders shared by the policy tests: tariffs, policies, local times."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from policies.meter_policy import MeterPolicy
from policies.money import parse_price
from policies.tariff_records import Band, Calendar, Tariff

TZ = "Asia/Shanghai"  # UTC+8, no DST: local midnight is 16:00 UTC
HOUR_MS = 3_600_000
MINUTE_MS = 60_000

VALLEY = parse_price("0.40")
FLAT = parse_price("0.80")
PEAK = parse_price("1.20")

TOU_BANDS = (
    Band("valley", 0, 480, VALLEY),
    Band("flat", 480, 1080, FLAT),
    Band("peak", 1080, 1440, PEAK),
)


def local_ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0,
             tz: str = TZ) -> int:
    """UTC ms of a local wall-clock time."""
    wall = dt.datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(tz))
    return int(wall.timestamp()) * 1000


def tou_tariff(**kwargs: object) -> Tariff:
    calendar = kwargs.pop("calendar", Calendar(timezone=TZ))
    return Tariff("tou", bands=TOU_BANDS, calendar=calendar, **kwargs)  # type: ignore[arg-type]


def flat_tariff(price: str = "1.00") -> Tariff:
    return Tariff.flat("flat", parse_price(price), Calendar(timezone=TZ))


def policy(tariff: Tariff | None = None, **kwargs: object) -> MeterPolicy:
    return MeterPolicy(tariff=tariff or flat_tariff(), **kwargs)  # type: ignore[arg-type]
