"""Energy per unit of output: each production line's kWh per unit made, day by day, with its
trend.

A line's energy on a day is the sum of its meters' day records (``[[lines]] meters``); its
output is the latest count entered for that line and day (``server.production``: a correction
replaces the earlier count). For each day with a count the report gives kWh per unit, the
change from the line's previous day with a count, and the average over the last
``TREND_DAYS`` such days; days without a count show the energy alone. A line's total row is
the period's energy over the period's units.
"""

from __future__ import annotations

from collections.abc import Iterable

from persistence.days import day_totals
from persistence.entries import JournalEntry
from policies.money import format_amount
from server.config import ParkConfig
from server.config.records import line_owner
from server.production import entry_day
from server.reports.books import Books
from server.reports.period import Period
from server.reports.table import Cell, Report

TREND_DAYS = 7
COLUMNS = ("line", "date", "kwh", "units", "unit", "kwh_per_unit", "change_percent",
           f"avg{TREND_DAYS}_kwh_per_unit")


def latest_counts(entries: Iterable[tuple[int, JournalEntry]]) -> dict[tuple[str, str], int]:
    """(line owner, day) -> the latest count (entries in journal order)."""
    counts: dict[tuple[str, str], int] = {}
    for _, entry in entries:
        if entry.kind == "production":
            counts[entry.meter_id, entry_day(entry)] = entry.amount
    return counts


def intensity(wh: int, units: int) -> float | None:
    """kWh per unit, or None without units."""
    return None if units <= 0 else wh / 1000 / units


def output_report(books: Books, config: ParkConfig, period: Period) -> Report:
    counts = latest_counts(books.production)
    labels = period.day_labels()
    label_of = dict(zip(period.day_starts(), labels, strict=True))
    rows: list[tuple[Cell, ...]] = []
    for line in config.lines:
        energy = dict.fromkeys(labels, 0)
        for meter_id in line.meters:
            for day_ms, value in books.history.days(meter_id, period.from_ms, period.to_ms):
                label = label_of.get(day_ms)
                if label is not None:
                    energy[label] += sum(wh for _, wh, _ in day_totals(value))
        owner = line_owner(line.id)
        recent: list[float] = []
        previous: float | None = None
        for label in labels:
            units = counts.get((owner, label))
            ratio = None if units is None else intensity(energy[label], units)
            change = None
            if ratio is not None:
                if previous:
                    change = round(100 * (ratio - previous) / previous, 1)
                previous = ratio
                recent = [*recent, ratio][-TREND_DAYS:]
            rows.append((line.id, label, format_amount(energy[label], 3),
                         units, line.output_unit, _rounded(ratio), change,
                         _rounded(sum(recent) / len(recent)) if ratio is not None else None))
        total_units = sum(counts.get((owner, label), 0) for label in labels)
        total_wh = sum(energy.values())
        rows.append((line.id, "total", format_amount(total_wh, 3), total_units,
                     line.output_unit, _rounded(intensity(total_wh, total_units)), None, None))
    return Report("output", "Energy per unit of output", period.labels, COLUMNS, tuple(rows),
                  notes=() if config.lines else ("this park has no [[lines]]",))


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
