"""The reports over a period: top-ups, and consumption and cost; and arrears, as of now.

* **top-ups**: the journal's top-ups whose time lies in the period, by local day, channel
  (hub, http, opcua, payment...) and operator (the user, ``payment:<key>`` for a payment
  integration), from the audit entry of each (``unknown`` when the audit log has none: it was
  pruned, or the top-up was made by a local tool);
* **consumption**: energy and cost per meter, tenant, gateway or local day, with the
  time-of-use band breakdown, from the day records of the period's days; of one kind of meter
  (``meter_kind``: electricity in kWh, the default; water or gas in m3);
* **arrears**: meters at or below zero, on emergency credit, or with debt being recovered,
  from their last snapshots; or, ``by="day"``, for each day of the period how many meters'
  net position (balance less arrears owed, as a statement counts it) was at or below zero at
  the day's end, and by how much.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from zoneinfo import ZoneInfo

from persistence.days import day_totals
from persistence.history import BandTotals, add_band, meter_totals
from persistence.store import Store
from policies.money import format_amount
from server.reports.books import (
    Books,
    net_change,
    of_kind,
    other_kinds_note,
    quantity_column,
    topup_sources,
)
from server.reports.period import Period
from server.reports.table import Cell, Report

GROUPINGS = ("meter", "tenant", "gateway", "day")
ARREARS_GROUPINGS = ("meter", "day")


def _kwh(wh: int) -> str:
    return f"{wh / 1000:.3f}"


def topups(store: Store, books: Books, period: Period, timezone: str,
           decimals: int) -> Report:
    zone = ZoneInfo(timezone)
    sources = topup_sources(store)
    groups: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for _seq, entry in books.entries:
        if entry.kind != "topup" or not period.from_ms <= entry.ts_ms < period.to_ms:
            continue
        day = dt.datetime.fromtimestamp(entry.ts_ms / 1000, zone).date().isoformat()
        source = sources.get(entry.reference)
        channel = source.channel if source is not None else "unknown"
        operator = source.user if source is not None else "unknown"
        group = groups[day, channel, operator]
        group[0] += 1
        group[1] += entry.amount
    rows: list[tuple[Cell, ...]] = [
        (day, channel, operator, count, format_amount(amount, decimals))
        for (day, channel, operator), (count, amount) in sorted(groups.items())]
    count = sum(c for c, _ in groups.values())
    total = sum(a for _, a in groups.values())
    return Report("topups", "Top-ups by day, channel and operator", period.labels,
                  ("day", "channel", "operator", "count", "amount"), tuple(rows),
                  ("total", "", "", count, format_amount(total, decimals)))


def consumption(books: Books, period: Period, decimals: int, by: str = "meter",
                meter_kind: str = "electricity") -> Report:
    if by not in GROUPINGS:
        raise ValueError(f"--by must be one of {', '.join(GROUPINGS)}, got {by!r}")
    notes = other_kinds_note(books, meter_kind)
    books = of_kind(books, meter_kind)
    quantity = quantity_column(meter_kind)
    groups = _by_day(books, period) if by == "day" else _by_meter_group(books, period, by)
    bands = sorted({band for group in groups.values() for band in group})
    columns = (by, quantity, "cost", *(f"{kind}_{band}" for band in bands
                                       for kind in (quantity, "cost")))
    rows: list[tuple[Cell, ...]] = []
    park: dict[str, tuple[int, int]] = {}
    for key in (sorted(groups) if by != "meter" else groups):  # meters: config order
        group = groups[key]
        wh, minor = meter_totals(group)
        cells: list[Cell] = [key, _kwh(wh), format_amount(minor, decimals)]
        for band in bands:
            band_wh, band_minor = group.get(band, (0, 0))
            cells += [_kwh(band_wh), format_amount(band_minor, decimals)]
            add_band(park, band, band_wh, band_minor)
        rows.append(tuple(cells))
    wh, minor = meter_totals(park)
    totals: list[Cell] = ["total", _kwh(wh), format_amount(minor, decimals)]
    for band in bands:
        band_wh, band_minor = park.get(band, (0, 0))
        totals += [_kwh(band_wh), format_amount(band_minor, decimals)]
    title = f"Consumption and cost by {by} and tariff band"
    if meter_kind != "electricity":
        title = f"{meter_kind.capitalize()} consumption (m3) and cost by {by} and tariff band"
    return Report("consumption", title, period.labels, columns, tuple(rows), tuple(totals),
                  notes=notes)


def _by_meter_group(books: Books, period: Period, by: str) -> dict[str, BandTotals]:
    groups: dict[str, BandTotals] = {}
    for meter_id, info in books.meters.items():
        key = {"meter": meter_id, "tenant": info.tenant, "gateway": info.gateway}[by]
        group = groups.setdefault(key, {})
        for band, (wh, minor) in books.history.band_totals(
                meter_id, period.from_ms, period.to_ms).items():
            add_band(group, band, wh, minor)
    return groups


def _by_day(books: Books, period: Period) -> dict[str, BandTotals]:
    groups: dict[str, BandTotals] = {label: {} for label in period.day_labels()}
    labels = dict(zip(period.day_starts(), period.day_labels(), strict=True))
    for meter_id in books.meters:
        for day_ms, value in books.history.days(meter_id, period.from_ms, period.to_ms):
            group = groups[labels[day_ms]]
            for band, wh, minor in day_totals(value):
                add_band(group, band, wh, minor)
    return groups


def arrears_by_day(books: Books, period: Period, decimals: int) -> Report:
    ends = [*period.day_starts()[1:], period.to_ms]  # each day's end
    counts = [0] * len(ends)
    owed = [0] * len(ends)
    entered: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for _seq, entry in books.entries:
        entered[entry.meter_id].append((entry.ts_ms, net_change(entry)))
    for meter_id, info in books.meters.items():
        changes = entered.get(meter_id, [])
        changes += [(day_ms, -sum(minor for _, _, minor in day_totals(value)))
                    for day_ms, value in books.history.days(meter_id, 0, period.to_ms)]
        changes.sort()  # (a day's charges count from its start: all of it is before its end)
        position, index = info.opening, 0
        for day, end in enumerate(ends):
            while index < len(changes) and changes[index][0] < end:
                position += changes[index][1]
                index += 1
            if position <= 0:
                counts[day] += 1
                owed[day] += position
    rows: list[tuple[Cell, ...]] = [
        (label, counts[day], format_amount(owed[day], decimals))
        for day, label in enumerate(period.day_labels())]
    return Report("arrears", "Arrears by day: meters at or below zero at the day's end (net "
                  "of arrears owed)", period.labels, ("day", "meters", "owed"), tuple(rows),
                  None, notes=("a day's charges are counted from its start",))


def arrears(books: Books, decimals: int) -> Report:
    rows: list[tuple[Cell, ...]] = []
    owed = debt_total = 0
    for meter_id, info in books.meters.items():
        state = books.snapshots.get(meter_id)
        if state is None:
            continue
        credit = state.credit
        if state.balance > 0 and not credit.emergency_in_use and credit.debt <= 0:
            continue
        rows.append((meter_id, info.tenant, format_amount(state.balance, decimals),
                     credit.emergency_in_use, format_amount(credit.debt, decimals),
                     "closed" if state.relay.closed else "open", state.relay.reason or ""))
        owed += min(state.balance, 0)
        debt_total += credit.debt
    return Report("arrears", "Arrears: balances at or below zero, emergency credit in use, "
                  "debt being recovered", ("", ""),
                  ("meter", "tenant", "balance", "emergency_credit_in_use", "debt", "relay",
                   "relay_reason"), tuple(rows),
                  ("total", "", format_amount(owed, decimals), None,
                   format_amount(debt_total, decimals), None, None),
                  notes=("as of each meter's last snapshot",))
