"""Production counts: how many units a line made on a day, for the energy-per-unit report.

A count is entered by an operator (HTTP, the hub, the console) for one ``[[lines]]`` entry and
one local day. It is journaled (kind ``production``, under the owner id ``line:<id>``, the
count in ``amount``, the day and who entered it in ``detail``), so it is durable before it is
acknowledged, audited, and applied once per reference; a later count for the same line and day
replaces the earlier one (a correction), and the report (``server.reports.output``) reads the
latest. Counts move no money and reach no actor: the journal is their only home.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Final, Literal
from zoneinfo import ZoneInfo

import attrs

from persistence.entries import JournalEntry
from persistence.journal import Journal
from server.clock import ParkClock
from server.config import ParkConfig
from server.config.records import line_owner
from server.ledger import BadRequest

MAX_COUNT: Final = 10**12


@attrs.frozen
class CountAnswer:
    """The count as journaled (a duplicate answers the first one's)."""

    reference: str
    line: str
    date: str
    count: int
    unit: str
    status: Literal["applied", "duplicate"]


def production_entry(line_id: str, day: dt.date, count: int, by: str, reference: str,
                     ts_ms: int, mono_ms: int) -> JournalEntry:
    detail = json.dumps({"date": day.isoformat(), "by": by}, ensure_ascii=False)
    return JournalEntry("production", line_owner(line_id), count, reference, ts_ms, detail,
                        mono_ms=mono_ms)


def entry_day(entry: JournalEntry) -> str:
    """The local day (ISO date) a production entry counts for."""
    return str(json.loads(entry.detail)["date"])


class ProductionDesk:
    """Checks and journals counts (see the module docstring)."""

    def __init__(self, config: ParkConfig, journal: Journal, clock: ParkClock) -> None:
        self._lines = {line.id: line for line in config.lines}
        self._zone = ZoneInfo(config.calendar.timezone)
        self._journal = journal
        self._clock = clock

    async def record(self, line_id: object, day: object, count: object, by: str,
                     reference: str) -> CountAnswer:
        if not isinstance(line_id, str) or line_id not in self._lines:
            raise BadRequest(f"unknown production line {line_id!r}")
        if not isinstance(day, str):
            raise BadRequest('"date" must be a local day like "2026-11-10"')
        try:
            date = dt.date.fromisoformat(day)
        except ValueError:
            raise BadRequest(f'"date" must be a local day like "2026-11-10", got {day!r}'
                             ) from None
        today = dt.datetime.fromtimestamp(self._clock.wall_ms() / 1000, self._zone).date()
        if date > today:  # the park's clock, as every other command's time
            raise BadRequest(f"{date} has not happened yet in the park's time zone")
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_COUNT:
            raise BadRequest(f'"count" must be a whole number from 0 to {MAX_COUNT}')
        if not isinstance(reference, str) or not reference:
            raise BadRequest("a reference (id) is required so the count can be sent again "
                             "safely")
        entry = production_entry(line_id, date, count, by, reference, self._clock.wall_ms(),
                                 self._clock.mono_ms())
        recorded = await self._journal.record(entry)
        first = recorded.entry
        return CountAnswer(reference, line_id, entry_day(first), first.amount,
                           self._lines[line_id].output_unit,
                           "duplicate" if recorded.duplicate else "applied")
