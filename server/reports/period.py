"""A report's period: whole local days of the park (``[calendar] timezone``), from the first
day up to (not including) the last, as ``--from 2026-11-01 --to 2026-12-01`` says."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import attrs

from server.errors import UserError


@attrs.frozen
class Period:
    first: dt.date
    end: dt.date  # exclusive
    from_ms: int
    to_ms: int
    timezone: str = "UTC"

    @property
    def labels(self) -> tuple[str, str]:
        return self.first.isoformat(), self.end.isoformat()

    def days(self) -> list[dt.date]:
        return [self.first + dt.timedelta(days=n) for n in range((self.end - self.first).days)]

    def day_labels(self) -> list[str]:
        return [day.isoformat() for day in self.days()]

    def day_starts(self) -> list[int]:
        """Each day's first instant (its local midnight), in ms."""
        zone = ZoneInfo(self.timezone)
        return [local_ms(day, zone) for day in self.days()]


def local_today(timezone: str) -> dt.date:
    return dt.datetime.now(dt.UTC).astimezone(ZoneInfo(timezone)).date()


def _date(text: str, what: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise UserError(f"{what} must be a date like 2026-11-01, got {text!r}") from None


def local_ms(day: dt.date, zone: ZoneInfo) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=zone).timestamp() * 1000)


def parse_period(first: str | None, end: str | None, timezone: str, today: dt.date) -> Period:
    """``--from``/``--to``; by default this month up to today, included."""
    zone = ZoneInfo(timezone)
    start = _date(first, "--from") if first else today.replace(day=1)
    stop = _date(end, "--to") if end else today + dt.timedelta(days=1)
    if stop <= start:
        raise UserError(f"--to ({stop}) must be after --from ({start})")
    return Period(start, stop, local_ms(start, zone), local_ms(stop, zone), timezone)
