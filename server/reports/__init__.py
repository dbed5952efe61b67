"""Reports from a park's data directory: ``wattkeeper report KIND`` and
``GET /api/reports/KIND``, the same code behind both (:func:`make_report`).

Kinds: ``reconciliation`` (``server.reports.reconciliation``), ``topups``, ``consumption``
and ``arrears`` (``server.reports.money_reports``), ``statement`` (a tenant's; also as a
printable HTML page: ``server.reports.statement``), ``whatif`` (another tariff's charges:
``server.reports.whatif``), ``apportionment`` (the shares of losses and common areas, and
whether they are posted), ``blackhole`` (unexplained loss by feeder and hour:
``server.reports.apportionment``), ``output`` (energy per unit of output per production
line and day: ``server.reports.output``) and ``insights`` (each tenant's band shares, peak
demand, load factor, night base load and peak-shift saving beside its peers':
``server.reports.insights``). Each reads the books
(``server.reports.books``) and gives a :class:`~server.reports.table.Report`, printed as CSV
or JSON (``server.reports.table``), the same bytes for the same data and period.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

from persistence.store import Store
from server.config import ParkConfig
from server.errors import UserError
from server.reports.apportionment import (
    apportion,
    apportionment_report,
    blackhole_report,
    posted_amounts,
)
from server.reports.books import Books, read_books
from server.reports.insights import insights_report, tenant_insights
from server.reports.money_reports import (
    ARREARS_GROUPINGS,
    GROUPINGS,
    arrears,
    arrears_by_day,
    consumption,
    topups,
)
from server.reports.output import output_report
from server.reports.period import Period, local_today, parse_period
from server.reports.reconciliation import Unbalanced, reconcile
from server.reports.statement import Statement, statement_html, statement_report, statements
from server.reports.table import Report, to_csv, to_json
from server.reports.whatif import whatif

KINDS: Final = ("reconciliation", "topups", "consumption", "arrears", "statement", "whatif",
                 "apportionment", "blackhole", "output", "insights")
FORMATS: Final = ("csv", "json", "html")

__all__ = ["FORMATS", "GROUPINGS", "KINDS", "Report", "Unbalanced", "make_report",
           "render_report", "statement_page", "tenant_insights"]


def make_report(kind: str, store: Store, config: ParkConfig, *, first: str | None = None,
                end: str | None = None, by: str = "meter", tenant: str | None = None,
                tariff: str | None = None, today: dt.date | None = None,
                meter_kind: str = "electricity", shift: str | None = None) -> Report:
    """``meter_kind`` (consumption, whatif): electricity in kWh, or water or gas in m3;
    ``shift`` (insights): the percentage of peak energy moved to the valley (default 10)."""
    if kind not in KINDS:
        raise UserError(f"no report {kind!r}: the reports are {', '.join(KINDS)}")
    timezone = config.calendar.timezone
    decimals = config.server.decimals
    if kind == "insights":  # the history only: no journal to read
        return insights_report(store, config, parse_period(
            first, end, timezone, today or local_today(timezone)), shift)
    books = read_books(store, config)
    if kind == "reconciliation":
        return reconcile(books, decimals)
    if kind == "arrears" and by != "day":
        if by != "meter":
            raise UserError(f"--by for arrears must be one of {', '.join(ARREARS_GROUPINGS)}, "
                            f"got {by!r}")
        return arrears(books, decimals)
    period = parse_period(first, end, timezone, today or local_today(timezone))
    if kind == "arrears":
        return arrears_by_day(books, period, decimals)
    if kind == "topups":
        return topups(store, books, period, timezone, decimals)
    if kind == "statement":
        return statement_report(_statement(books, period, timezone, tenant), decimals)
    if kind == "apportionment":
        return apportionment_report(apportion(books, config, period), posted_amounts(books),
                                    period, decimals)
    if kind == "output":
        return output_report(books, config, period)
    if kind == "blackhole":
        return blackhole_report(books, config, period, "hour" if by == "meter" else by)
    if kind == "whatif":
        if not tariff:
            raise UserError("the whatif report needs --tariff NAME (a tariff of the config)")
        return whatif(books, config, period, tariff, meter_kind)
    if by not in GROUPINGS:
        raise UserError(f"--by must be one of {', '.join(GROUPINGS)}, got {by!r}")
    return consumption(books, period, decimals, by, meter_kind)


def statement_page(store: Store, config: ParkConfig, tenant: str | None, *,
                   first: str | None = None, end: str | None = None,
                   today: dt.date | None = None) -> str:
    """A tenant's statement as a printable HTML page."""
    timezone = config.calendar.timezone
    period = parse_period(first, end, timezone, today or local_today(timezone))
    statement = _statement(read_books(store, config), period, timezone, tenant)
    return statement_html(statement, config.server.decimals, config.server.currency,
                          config.source)


def _statement(books: Books, period: Period, timezone: str, tenant: str | None) -> Statement:
    if not tenant:
        raise UserError("a statement needs --tenant NAME")
    [statement] = statements(books, period, timezone, [tenant])
    return statement


def render_report(report: Report, form: str) -> str:
    if form not in FORMATS or form == "html":
        raise UserError(f"--format must be csv or json (html: statements only), got {form!r}")
    return to_csv(report) if form == "csv" else to_json(report)
