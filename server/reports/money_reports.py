"""The reports over a period: top-ups, and consumption and cost; and arrears, as of now.

* **top-ups**: the journal's top-ups whose time lies in the period, by local day, channel
  (hub, http, opcua, payment...) and operator (the user, ``payment:<key>`` for a payment
  integration), from the audit entry of each (``unknown`` when the audit log has none: it was
  pruned, or the top-up was made by a local tool);
* **consumption**: energy and cost per meter, tenant or gateway, with the time-of-use band
  breakdown, from the interval history (intervals starting in the period);
* **arrears**: meters at or below zero, on emergency credit, or with debt being recovered,
  from their last snapshots.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from zoneinfo import ZoneInfo

from persistence.history import meter_totals, sum_history
from persistence.store import Store
from policies.money import format_amount
from server.reports.books import Books, topup_sources
from server.reports.period import Period
from server.reports.table import Cell, Report

GROUPINGS = ("meter", "tenant", "gateway")


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


def consumption(store: Store, books: Books, period: Period, decimals: int,
                by: str = "meter") -> Report:
    if by not in GROUPINGS:
        raise ValueError(f"--by must be one of {', '.join(GROUPINGS)}, got {by!r}")
    history = sum_history(store, period.from_ms, period.to_ms)
    bands = sorted({band for meter in history.values() for band in meter})
    groups: dict[str, dict[str, tuple[int, int]]] = {}
    for meter_id, info in books.meters.items():
        key = {"meter": meter_id, "tenant": info.tenant, "gateway": info.gateway}[by]
        group = groups.setdefault(key, {})
        for band, (wh, minor) in history.get(meter_id, {}).items():
            old_wh, old_minor = group.get(band, (0, 0))
            group[band] = (old_wh + wh, old_minor + minor)
    columns = (by, "kwh", "cost", *(f"{kind}_{band}" for band in bands
                                    for kind in ("kwh", "cost")))
    rows: list[tuple[Cell, ...]] = []
    park: dict[str, tuple[int, int]] = {}
    for key in (sorted(groups) if by != "meter" else groups):
        group = groups[key]
        wh, minor = meter_totals(group)
        cells: list[Cell] = [key, _kwh(wh), format_amount(minor, decimals)]
        for band in bands:
            band_wh, band_minor = group.get(band, (0, 0))
            cells += [_kwh(band_wh), format_amount(band_minor, decimals)]
            old_wh, old_minor = park.get(band, (0, 0))
            park[band] = (old_wh + band_wh, old_minor + band_minor)
        rows.append(tuple(cells))
    wh, minor = meter_totals(park)
    totals: list[Cell] = ["total", _kwh(wh), format_amount(minor, decimals)]
    for band in bands:
        band_wh, band_minor = park.get(band, (0, 0))
        totals += [_kwh(band_wh), format_amount(band_minor, decimals)]
    return Report("consumption", f"Consumption and cost by {by} and tariff band",
                  period.labels, columns, tuple(rows), tuple(totals))


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
