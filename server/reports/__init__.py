"""Reports from a park's data directory: ``wattkeeper report KIND`` and
``GET /api/reports/KIND``, the same code behind both (:func:`make_report`).

Kinds: ``reconciliation`` (``server.reports.reconciliation``), ``topups``, ``consumption``
and ``arrears`` (``server.reports.money_reports``). Each reads the books
(``server.reports.books``) and gives a :class:`~server.reports.table.Report`, printed as CSV
or JSON (``server.reports.table``), the same bytes for the same data and period.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

from persistence.store import Store
from server.config import ParkConfig
from server.errors import UserError
from server.reports.books import read_books
from server.reports.money_reports import GROUPINGS, arrears, consumption, topups
from server.reports.period import parse_period
from server.reports.reconciliation import Unbalanced, reconcile
from server.reports.table import Report, to_csv, to_json

KINDS: Final = ("reconciliation", "topups", "consumption", "arrears")
FORMATS: Final = ("csv", "json")

__all__ = ["FORMATS", "GROUPINGS", "KINDS", "Report", "Unbalanced", "make_report",
           "render_report"]


def make_report(kind: str, store: Store, config: ParkConfig, *, first: str | None = None,
                end: str | None = None, by: str = "meter",
                today: dt.date | None = None) -> Report:
    if kind not in KINDS:
        raise UserError(f"no report {kind!r}: the reports are {', '.join(KINDS)}")
    timezone = config.calendar.timezone
    decimals = config.server.decimals
    books = read_books(store, config)
    if kind == "reconciliation":
        return reconcile(store, books, decimals)
    if kind == "arrears":
        return arrears(books, decimals)
    period = parse_period(first, end, timezone, today or dt.datetime.now(
        dt.UTC).astimezone(_zone(timezone)).date())
    if kind == "topups":
        return topups(books, period, timezone, decimals)
    if by not in GROUPINGS:
        raise UserError(f"--by must be one of {', '.join(GROUPINGS)}, got {by!r}")
    return consumption(store, books, period, decimals, by)


def render_report(report: Report, form: str) -> str:
    if form not in FORMATS:
        raise UserError(f"--format must be csv or json, got {form!r}")
    return to_csv(report) if form == "csv" else to_json(report)


def _zone(timezone: str) -> dt.tzinfo:
    from zoneinfo import ZoneInfo

    return ZoneInfo(timezone)
