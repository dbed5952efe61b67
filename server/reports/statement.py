"""A tenant's statement for a period: opening balance, each top-up and adjustment, charges
by day and tariff band, closing balance; as CSV, JSON or a printable HTML page.

The balance here is the tenant's net position, balance minus arrears still owed (an
"arrears" adjustment is money the tenant owes, so it shows as a charge-like line, and the
share of a later top-up that pays it off leaves the net position as the top-up does), summed
over the tenant's meters. At any instant ``t`` it is::

    opening_balance + journal entries before t - interval charges starting before t

so the statement's opening is that at the period's first local midnight, and its closing is
the opening plus the period's lines: the statement balances by construction, and the
reconciliation report checks the same books against the meters' own balances.
"""

from __future__ import annotations

import datetime as dt
import html
from collections import defaultdict
from collections.abc import Iterable
from zoneinfo import ZoneInfo

import attrs

from persistence.days import day_totals
from persistence.entries import JournalEntry
from policies.money import format_amount
from server.errors import UserError
from server.reports.books import Books, net_change
from server.reports.period import Period
from server.reports.table import Cell, Report

COLUMNS = ("date", "meter", "item", "detail", "kwh", "amount", "balance")
ITEM_ORDER = {"topup": 0, "adjustment": 1, "arrears": 1, "apportionment": 1, "charge": 2}
"""A day's lines: money in first, then corrections, then what was used."""


@attrs.frozen
class Line:
    date: str
    meter: str
    item: str  # "topup" | "adjustment" | "arrears" | "apportionment" | "charge"
    detail: str
    wh: int
    amount: int  # signed: what it did to the balance


@attrs.frozen
class Statement:
    tenant: str
    meters: tuple[str, ...]
    period: Period
    opening: int
    lines: tuple[Line, ...]

    @property
    def closing(self) -> int:
        return self.opening + sum(line.amount for line in self.lines)

    def total(self, item: str) -> int:
        return sum(line.amount for line in self.lines if line.item == item)


def _item(entry: JournalEntry) -> str:
    if entry.kind == "adjustment" and entry.detail == "arrears":
        return "arrears"
    if entry.kind == "apportionment":
        return "apportionment"  # its detail says which pool, what and why
    return "topup" if entry.kind == "topup" else "adjustment"


def statements(books: Books, period: Period, timezone: str,
               tenants: Iterable[str] | None = None) -> list[Statement]:
    zone = ZoneInfo(timezone)
    labels: dict[int, str] = {}  # a day's start -> its date, shared by every meter
    by_tenant: dict[str, list[str]] = defaultdict(list)
    for meter_id, info in books.meters.items():
        by_tenant[info.tenant].append(meter_id)
    chosen = sorted(by_tenant) if tenants is None else list(tenants)
    for tenant in chosen:
        if tenant not in by_tenant:
            raise UserError(f"no tenant {tenant!r} in this park (tenants: "
                            f"{', '.join(sorted(by_tenant)[:10])}...)")
    entries: dict[str, list[tuple[int, str, str, int, str]]] = defaultdict(list)
    for _seq, entry in books.entries:
        entries[entry.meter_id].append((entry.ts_ms, _item(entry), entry.reference,
                                        net_change(entry), entry.detail))
    result = []
    for tenant in chosen:
        meters = by_tenant[tenant]
        opening = 0
        lines: list[Line] = []
        for meter_id in meters:
            opening += books.meters[meter_id].opening
            # A water or gas meter's charges count m3, and are never summed with kWh.
            unit = "" if books.meters[meter_id].kind == "electricity" else " (m3)"
            for ts_ms, item, reference, amount, detail in entries[meter_id]:
                if ts_ms < period.from_ms:
                    opening += amount
                elif ts_ms < period.to_ms:
                    day = dt.datetime.fromtimestamp(ts_ms / 1000, zone).date().isoformat()
                    lines.append(Line(day, meter_id, item, reference if item == "topup"
                                      else detail or reference, 0, amount))
            for day_ms, value in books.history.days(meter_id, 0, period.to_ms):
                if day_ms < period.from_ms:
                    opening -= sum(minor for _, _, minor in day_totals(value))
                    continue
                label = labels.get(day_ms)
                if label is None:
                    label = labels[day_ms] = dt.datetime.fromtimestamp(
                        day_ms / 1000, zone).date().isoformat()
                lines += [Line(label, meter_id, "charge", band + unit, wh, -minor)
                          for band, wh, minor in day_totals(value)]
        lines.sort(key=lambda line: (line.date, ITEM_ORDER[line.item], line.meter,
                                     line.detail))
        result.append(Statement(tenant, tuple(meters), period, opening, tuple(lines)))
    return result


def statement_report(statement: Statement, decimals: int) -> Report:
    def money(minor: int) -> str:
        return format_amount(minor, decimals)

    balance = statement.opening
    rows: list[tuple[Cell, ...]] = [(statement.period.labels[0], "", "opening", "", "", "",
                                     money(balance))]
    for line in statement.lines:
        balance += line.amount
        rows.append((line.date, line.meter, line.item, line.detail,
                     f"{line.wh / 1000:.3f}" if line.item == "charge" else "",
                     money(line.amount), money(balance)))
    return Report("statement", f"Statement of {statement.tenant}", statement.period.labels,
                  COLUMNS, tuple(rows),
                  (statement.period.labels[1], "", "closing", "", "", "",
                   money(statement.closing)),
                  notes=(f"tenant {statement.tenant}; meters {', '.join(statement.meters)}",))


def statement_html(statement: Statement, decimals: int, currency: str, park: str) -> str:
    """A printable page (A4 portrait, no scripts, no external files)."""
    def money(minor: int) -> str:
        return format_amount(minor, decimals)

    e = html.escape
    first, end = statement.period.labels
    charges: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for line in statement.lines:
        if line.item == "charge":
            cell = charges[line.date, line.detail]
            cell[0] += line.wh
            cell[1] -= line.amount
    money_lines = [line for line in statement.lines if line.item != "charge"]
    rows_money = "".join(
        f"<tr><td>{e(line.date)}</td><td>{e(line.meter)}</td><td>{e(line.item)}</td>"
        f"<td>{e(line.detail)}</td><td class=n>{money(line.amount)}</td></tr>"
        for line in money_lines) or "<tr><td colspan=5>none</td></tr>"
    rows_charges = "".join(
        f"<tr><td>{e(day)}</td><td>{e(band)}</td><td class=n>{wh / 1000:.3f}</td>"
        f"<td class=n>{money(minor)}</td></tr>"
        for (day, band), (wh, minor) in sorted(charges.items())) or \
        "<tr><td colspan=4>none</td></tr>"
    summary = [("Opening balance", statement.opening), ("Top-ups", statement.total("topup")),
               ("Adjustments", statement.total("adjustment") + statement.total("arrears")),
               ("Charges", statement.total("charge")), ("Closing balance", statement.closing)]
    rows_summary = "".join(f"<tr><th>{label}</th><td class=n>{money(value)} {e(currency)}"
                           f"</td></tr>" for label, value in summary)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Statement {e(statement.tenant)} {first}</title>
<style>
@page {{ size: A4; margin: 18mm; }}
body {{ font: 11pt/1.4 system-ui, sans-serif; color: #111; }}
h1 {{ font-size: 16pt; margin: 0 0 4pt; }}
table {{ border-collapse: collapse; width: 100%; margin: 8pt 0 14pt; }}
th, td {{ border-bottom: 1px solid #ccc; padding: 3pt 6pt; text-align: left; }}
.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
.summary {{ width: 50%; }}
</style></head><body>
<h1>Statement: {e(statement.tenant)}</h1>
<p>{e(park)} &middot; {first} to {end} (exclusive) &middot;
meters {e(", ".join(statement.meters))}</p>
<table class=summary>{rows_summary}</table>
<h2>Top-ups and adjustments</h2>
<table><tr><th>Date</th><th>Meter</th><th>Item</th><th>Reference / reason</th>
<th class=n>Amount</th></tr>
{rows_money}</table>
<h2>Charges by day and tariff band</h2>
<table><tr><th>Date</th><th>Band</th><th class=n>kWh</th><th class=n>Amount</th></tr>
{rows_charges}</table>
</body></html>
"""
