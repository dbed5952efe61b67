"""The tenants' self-service page (``/t/<token>``): what it shows, read from the park.

Theory of operation
-------------------
A tenant with a good link (``server.tenant_links``) sees, for each of its meters, the
balance, the supply and its reason as the actors hold them now, and, from the data
directory, the last 30 local days of consumption by tariff band, the days the balance is
likely to last, its recent top-ups and its monthly statements.

Everything from the data directory is read by :func:`tenant_summary` in a worker thread
(LMDB read transactions, as the reports do: ``server.report_calls``), and only the tenant's
own records: its meters' journal entries through the owners' index and their day records,
never the whole park's books. The meters' live state is read on the trio thread first, and
handed to the thread as plain records.

Figures (docs/tenant-page.md):

* ``consumption``: per meter, the 30 local days ending today (today so far included), per
  band the quantity (kWh; m3 for water and gas) as decimal strings, and the day's cost;
* ``spend_7d``: the meter's charges over the 7 whole local days before today;
* ``days_left``: ``balance / (spend_7d / 7)``, rounded down to a tenth of a day; ``0`` when
  the balance is at or below zero, ``null`` when nothing was charged in those 7 days (no
  rate to project). A day without a record counts as a day with nothing used;
* ``topups``: the last 20 top-ups of the tenant's meters, newest first;
* ``statements``: one per local month, from the month of the tenant's first record (at
  most 12 months back) to this one, newest first.

Money is integer minor units inside and decimal strings in the answer.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import quote
from zoneinfo import ZoneInfo

import attrs
import trio

from persistence.days import day_totals
from persistence.entries import NON_METER_KINDS, JournalEntry
from persistence.history import DaySource
from persistence.recovery import meter_journal_after
from persistence.store import Store
from policies.money import MoneyError, format_amount, parse_positive_amount
from protocols.stream.views import MeterView
from protocols.ws.protocol import iso_ms
from server.config import ParkConfig
from server.errors import UserError
from server.ledger import BadRequest
from server.reports.books import Books, meter_infos
from server.reports.insights import insight_cells, tenant_insights
from server.reports.period import Period, local_ms
from server.reports.statement import statement_html, statements
from server.tenant_links import TenantLinkDesk, UnknownTenant

CHART_DAYS: Final = 30
SPEND_DAYS: Final = 7
RECENT_TOPUPS: Final = 20
STATEMENT_MONTHS: Final = 12
UNITS: Final = {"electricity": "kWh", "water": "m3", "gas": "m3"}

Clock = Callable[[], int]


@attrs.frozen
class LiveMeter:
    """What the actors say of a meter now (read on the trio thread)."""

    meter_id: str
    balance: int
    relay_closed: bool
    relay_reason: str | None
    online: bool


def local_date(ts_ms: int, zone: ZoneInfo) -> dt.date:
    return dt.datetime.fromtimestamp(ts_ms / 1000, zone).date()


def _quantity(wh: int) -> str:
    """Wh (or litres) as kWh (or m3), exactly, three decimals."""
    sign = "-" if wh < 0 else ""
    whole, part = divmod(abs(wh), 1000)
    return f"{sign}{whole}.{part:03d}"


def days_left(balance: int, spend: int, days: int = SPEND_DAYS) -> float | None:
    """How long ``balance`` lasts at the rate of ``spend`` over ``days``, rounded down to a
    tenth of a day (None when nothing was spent: there is no rate to project)."""
    if spend <= 0:
        return None
    if balance <= 0:
        return 0.0
    return (balance * days * 10 // spend) / 10


def month_start(day: dt.date) -> dt.date:
    return day.replace(day=1)


def next_month(day: dt.date) -> dt.date:
    return (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def previous_month(day: dt.date) -> dt.date:
    return (day.replace(day=1) - dt.timedelta(days=1)).replace(day=1)


def tenant_entries(store: Store, meters: Sequence[str]) -> list[tuple[int, JournalEntry]]:
    """The money entries of ``meters``, in journal order (the statement's and top-ups')."""
    found = [(seq, entry) for meter_id in meters
             for seq, entry in meter_journal_after(store, meter_id, 0)
             if entry.amount != 0 and entry.kind not in NON_METER_KINDS]
    found.sort(key=lambda item: item[0])
    return found


def tenant_books(store: Store, config: ParkConfig, tenant: str) -> Books:
    """The books of one tenant's meters only (what its statement reads)."""
    infos = {meter_id: info for meter_id, info in meter_infos(config).items()
             if info.tenant == tenant}
    return Books(infos, {}, tuple(tenant_entries(store, list(infos))),
                 DaySource(store, config.calendar.timezone))


def tenant_summary(store: Store, config: ParkConfig, tenant: str, live: Sequence[LiveMeter],
                   today: dt.date, page_path: str) -> dict[str, Any]:
    """The page's figures (see the module docstring); blocking: run it in a worker thread."""
    decimals = config.server.decimals
    timezone = config.calendar.timezone
    zone = ZoneInfo(timezone)
    section = config.tenant(tenant)
    kinds = {meter.id: meter.kind for meter in config.meters}
    source = DaySource(store, timezone)
    chart = Period(today - dt.timedelta(days=CHART_DAYS - 1), today + dt.timedelta(days=1),
                   local_ms(today - dt.timedelta(days=CHART_DAYS - 1), zone),
                   local_ms(today + dt.timedelta(days=1), zone), timezone)
    starts = chart.day_starts()
    labels = chart.day_labels()
    spend_from = local_ms(today - dt.timedelta(days=SPEND_DAYS), zone)
    spend_to = local_ms(today, zone)
    earliest = month_start(today)
    horizon = today.replace(day=1)
    for _ in range(STATEMENT_MONTHS - 1):
        horizon = previous_month(horizon)
    horizon_ms = local_ms(horizon, zone)

    meters = []
    for meter in live:
        records = dict(source.days(meter.meter_id, min(starts[0], horizon_ms), chart.to_ms))
        first_day = min(records, default=None)
        if first_day is not None:
            earliest = min(earliest, month_start(local_date(first_day, zone)))
        days = []
        spend = 0
        for start, label in zip(starts, labels, strict=True):
            value = records.get(start)
            bands: dict[str, str] = {}
            cost = 0
            if value is not None:
                for band, wh, minor in day_totals(value):
                    bands[band] = _quantity(wh)
                    cost += minor
            if spend_from <= start < spend_to:
                spend += cost
            days.append({"date": label, "bands": bands, "cost": format_amount(cost, decimals)})
        kind = kinds[meter.meter_id]
        meters.append({
            "meter": meter.meter_id, "kind": kind, "unit": UNITS[kind],
            "balance": format_amount(meter.balance, decimals),
            "relay": "closed" if meter.relay_closed else "open",
            "relay_reason": meter.relay_reason, "online": meter.online,
            "spend_7d": format_amount(spend, decimals),
            "days_left": days_left(meter.balance, spend),
            "consumption": days,
        })

    entries = tenant_entries(store, [meter.meter_id for meter in live])
    if entries:
        first_entry = local_date(min(entry.ts_ms for _, entry in entries), zone)
        earliest = min(earliest, month_start(first_entry))
    earliest = max(earliest, horizon)
    topups = [entry for _, entry in entries if entry.kind == "topup"]
    topups.sort(key=lambda entry: entry.ts_ms, reverse=True)
    months = []
    month = month_start(today)
    while month >= earliest:
        label = f"{month.year:04d}-{month.month:02d}"
        months.append({"month": label, "url": f"{page_path}/statement?month={label}"})
        month = previous_month(month)
    return {
        "tenant": tenant, "name": section.name, "language": section.language,
        "currency": config.server.currency, "decimals": decimals, "today": today.isoformat(),
        "days": labels,
        "topup": bool(config.tenant_page.topup_url),
        "meters": meters,
        "topups": [{"ts": iso_ms(entry.ts_ms), "date": local_date(entry.ts_ms, zone)
                    .isoformat(), "meter": entry.meter_id,
                    "amount": format_amount(entry.amount, decimals)}
                   for entry in topups[:RECENT_TOPUPS]],
        "statements": months,
        "insights": _insights(store, config, tenant, today),
    }


INSIGHT_KEYS: Final = ("pct_peak", "load_factor", "night_base_kw", "peak_kw", "saving")


def _insights(store: Store, config: ParkConfig, tenant: str,
              today: dt.date) -> list[dict[str, str]]:
    """This month's energy insights (``server.reports.insights``) as the page's items: a
    figure and, where there are peers, their median; none for a tenant without electricity."""
    try:
        found = tenant_insights(store, config, tenant, today=today)
    except UserError:
        return []
    cells = insight_cells(found.figures, found.comparison, config)
    items = []
    for key in INSIGHT_KEYS:
        value = cells.get(key)
        if value is None:
            continue
        peers = cells.get(f"peers_{key}")
        items.append({"key": key, "value": str(value),
                      "peers": "" if peers is None else str(peers)})
    return items


def tenant_statement(store: Store, config: ParkConfig, tenant: str, month: str) -> str:
    """The tenant's statement of a local month (``2026-11``) as a printable page, the same
    page as ``GET /api/reports/statement?format=html``; blocking."""
    try:
        first = dt.date.fromisoformat(f"{month}-01") if len(month) == 7 else None
    except ValueError:
        first = None
    if first is None:
        raise BadRequest(f'"month" must be a month like 2026-11, got {month!r}')
    zone = ZoneInfo(config.calendar.timezone)
    end = next_month(first)
    period = Period(first, end, local_ms(first, zone), local_ms(end, zone),
                    config.calendar.timezone)
    try:
        [statement] = statements(tenant_books(store, config, tenant), period,
                                 config.calendar.timezone, [tenant])
    except UserError as error:
        raise BadRequest(str(error)) from None
    return statement_html(statement, config.server.decimals, config.server.currency,
                          config.source)


def topup_location(template: str, tenant: str, meter: str, amount: int, decimals: int,
                   page_url: str) -> str:
    """``[tenant_page] topup_url`` with its placeholders filled, each URL-encoded."""
    values = {"tenant": tenant, "meter": meter, "amount": format_amount(amount, decimals),
              "return": page_url}
    location = template
    for name, value in values.items():
        location = location.replace("{" + name + "}", quote(value, safe=""))
    return location


class TenantPage:
    """``protocols.http.tenant_page.TenantPageBackend`` for a running park."""

    def __init__(self, config: ParkConfig, store: Store, links: TenantLinkDesk,
                 meters: Callable[[], Mapping[str, MeterView]], wall_ms: Clock) -> None:
        self._config = config
        self._store = store
        self._links = links
        self._meters = meters
        self._wall_ms = wall_ms
        self._zone = ZoneInfo(config.calendar.timezone)
        self._tenant_meters = config.tenant_meters()
        self.base_url = config.tenant_page.base_url
        self.topup_url = config.tenant_page.topup_url

    def tenant_of(self, token: str) -> str:
        return self._links.tenant_of(token)

    def language_of(self, tenant: str) -> str:
        return self._config.tenant(tenant).language

    def _live(self, tenant: str) -> list[LiveMeter]:
        views = self._meters()
        if tenant not in self._tenant_meters:
            raise UnknownTenant(tenant)
        return [LiveMeter(v.meter_id, v.balance, v.relay_closed, v.relay_reason,
                          v.online and not v.faulted)
                for meter_id in self._tenant_meters[tenant] if (v := views.get(meter_id))]

    async def summary(self, tenant: str, page_path: str) -> dict[str, Any]:
        live = self._live(tenant)  # on the trio thread: the actors' state
        today = local_date(self._wall_ms(), self._zone)
        return await trio.to_thread.run_sync(functools.partial(
            tenant_summary, self._store, self._config, tenant, live, today, page_path))

    async def statement(self, tenant: str, month: str) -> str:
        return await trio.to_thread.run_sync(functools.partial(
            tenant_statement, self._store, self._config, tenant, month))

    def topup_location(self, tenant: str, meter: str, amount: str, page_url: str) -> str:
        if not self.topup_url:
            raise BadRequest("this park takes no payments through the tenants' page")
        if meter not in self._tenant_meters.get(tenant, ()):
            raise BadRequest(f"{meter!r} is not one of this tenant's meters")
        try:
            minor = parse_positive_amount(amount, self._config.server.decimals)
        except MoneyError as error:
            raise BadRequest(str(error)) from None
        return topup_location(self.topup_url, tenant, meter, minor,
                              self._config.server.decimals, page_url)
