"""Energy insights per tenant: ``wattkeeper report insights`` and :func:`tenant_insights`.

For each tenant with electricity meters, over a period of local days: its energy per tariff
band, peak demand, average power and load factor, night base load, kWh per m2, the saving if
a share of its peak energy moved to the valley (``--shift``, 10 % by default) at its meters'
configured tariffs, and the medians of its peers (the other tenants of its ``sector``, else
the whole park) for the figures that compare. The definitions are ``policies.insights``'s
(and docs/insights.md's, with a worked example).

The intervals come from the day records (``persistence.days``), a meter's local day at a
time. Water and gas meters are left out (a litre is not a Wh), and so are the park's own
meters: feeder mains (they measure the tenants under them) and common-area meters.

One tenant is read at a time and its load folded into the park's total, so a large park
costs one tenant's slots of memory, not the park's history.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from fractions import Fraction
from zoneinfo import ZoneInfo

import attrs

from persistence.days import day_slots
from persistence.history import DaySource
from persistence.store import Store
from policies.insights import (
    DEFAULT_SHIFT_BP,
    FULL_BP,
    NIGHT,
    PEAK,
    Comparison,
    Load,
    LoadSum,
    LocalClock,
    MeterSeries,
    TenantFigures,
    TenantInsights,
    band_order,
    combine,
    compare,
    compare_all,
    figures,
    fixed,
    meter_load,
    peers_of,
    percents,
    slot_length,
)
from policies.money import MoneyError, format_amount, parse_amount
from server.config import ParkConfig
from server.errors import UserError
from server.reports.period import Period, local_today, parse_period
from server.reports.table import Cell, Report

HEAD = ("tenant", "sector", "meters", "kwh")
TAIL = ("peak_kw", "peak_at", "average_kw", "load_factor", "night_base_kw", "night_base_pct",
        "area_m2", "kwh_per_m2", "shift_pct", "shift_kwh", "saving", "compared_with", "peers",
        "peers_pct_peak", "peers_load_factor", "peers_night_base_pct", "peers_kwh_per_m2")
PARK = "park"
"""``compared_with`` of a tenant compared with the whole park (else ``sector:NAME``)."""


def parse_shift(text: str | int | None) -> int:
    """``--shift``: a percentage of the peak energy, 0 to 100 with at most two decimals
    (``"10"``, ``"12.5"``), in hundredths of a percent; None: the default, 10 %."""
    if text is None or text == "":
        return DEFAULT_SHIFT_BP
    try:
        value = parse_amount(str(text), 2, what="--shift")
    except MoneyError as error:
        raise UserError(f"{error} (a percentage of the peak energy, e.g. 10)") from None
    if not 0 <= value <= FULL_BP:
        raise UserError(f"--shift must be from 0 to 100 (a percentage), got {text!r}")
    return value


def park_meters(config: ParkConfig) -> set[str]:
    """The park's own meters: feeder mains and common-area meters."""
    own = {feeder.main for feeder in config.feeders}
    for pool in config.pools:
        own.update(pool.meters)
    return own


def tenant_meters(config: ParkConfig) -> dict[str, list[str]]:
    """Tenant -> its electricity meters (park meters left out), tenants by name."""
    own = park_meters(config)
    meters: dict[str, list[str]] = {}
    for meter in config.meters:
        if meter.kind == "electricity" and meter.id not in own:
            meters.setdefault(meter.tenant, []).append(meter.id)
    return dict(sorted(meters.items()))


def sectors(config: ParkConfig) -> dict[str, str]:
    return {tenant: section.sector for tenant, section in config.tenants.items()}


class _Reader:
    """Reads tenants' loads from the day records, one tenant at a time."""

    def __init__(self, source: DaySource, config: ParkConfig, period: Period,
                 shift_bp: int) -> None:
        self.source = source
        self.config = config
        self.period = period
        self.shift_bp = shift_bp
        self.clock = LocalClock(config.calendar.timezone)
        self.tariffs = {meter.id: config.tariffs[meter.tariff] for meter in config.meters}

    def series(self, meter_id: str) -> MeterSeries:
        starts: list[int] = []
        whs: list[int] = []
        bands: list[str] = []
        period = self.period
        for day_ms, value in self.source.days(meter_id, period.from_ms, period.to_ms):
            offsets, slot_bands, wh, _minor = day_slots(value)
            starts.extend(day_ms + offset for offset in offsets)
            whs.extend(wh)
            bands.extend(slot_bands)
        return MeterSeries(meter_id, self.config.policies[meter_id].interval_ms,
                           self.tariffs[meter_id], tuple(starts), tuple(whs), tuple(bands))

    def load(self, meter_ids: list[str]) -> Load:
        slot = slot_length(self.config.policies[m].interval_ms for m in meter_ids)
        return combine((meter_load(self.series(m), slot, self.clock) for m in meter_ids), slot)

    def figures(self, tenant: str, load: Load, meters: int) -> TenantFigures:
        section = self.config.tenants.get(tenant)
        return figures(tenant, load, self.clock, meters=meters,
                       area_m2=section.area_m2 if section else 0, shift_bp=self.shift_bp)


def insights(source: DaySource, config: ParkConfig, period: Period, shift_bp: int,
             only: Iterable[str] | None = None
             ) -> tuple[dict[str, TenantFigures], TenantFigures | None]:
    """Every tenant's figures (or those of ``only``, tenants with electricity meters), and
    the park's: the tenants' loads summed (their savings summed, each rounded down as the
    tenant's is); None with ``only``."""
    reader = _Reader(source, config, period, shift_bp)
    meters = tenant_meters(config)
    wanted = meters if only is None else {tenant: meters[tenant] for tenant in only}
    park_slot = slot_length([config.policies[m].interval_ms for ids in meters.values()
                             for m in ids] or [60_000])
    park = LoadSum(park_slot)
    everyone: dict[str, TenantFigures] = {}
    for tenant, meter_ids in wanted.items():
        load = reader.load(meter_ids)
        everyone[tenant] = reader.figures(tenant, load, len(meter_ids))
        if only is None:
            park.add(load)
    if only is not None:
        return everyone, None
    total = reader.figures("", park.load(), sum(map(len, meters.values())))
    saved = sum(tenant.shift.minor for tenant in everyone.values())
    return everyone, attrs.evolve(total, tenant="total",
                                  shift=attrs.evolve(total.shift, minor=saved))


def tenant_insights(store: Store, config: ParkConfig, tenant: str, first: str | None = None,
                    end: str | None = None, shift_percent: str | int | None = None, *,
                    today: dt.date | None = None) -> TenantInsights:
    """One tenant's insights, for its phone page: its figures and its peers' medians.

    ``store``: the data directory (the server's own store, or
    ``server.reports.books.open_books_store(config)``); ``first``/``end``: local days as
    ``--from``/``--to`` take them (``"2026-11-01"``, ``end`` excluded; by default this month
    up to today, the park's ``today`` unless given); ``shift_percent``: the share of peak
    energy moved to the valley, 0 to 100 (``10``, ``"12.5"``; default 10). Only the tenant
    and its peers are read (its sector's other tenants, or the whole park).

    Returns ``policies.insights.TenantInsights``: ``.figures`` (``TenantFigures``: ``wh``,
    ``bands`` with each band's Wh and exact share, ``peak_w``, ``peak_slot_ms``,
    ``average_w``, ``load_factor``, ``night_base_w``, ``night_base_share``, ``wh_per_m2``,
    ``shift.moved_wh`` and ``shift.minor``, the saving in minor units), ``.comparison``
    (``Comparison``: ``sector`` ("" for the whole park), ``peers`` and the peers' medians of
    ``peak_share``, ``load_factor``, ``wh_per_m2`` and ``night_base_share``; None where no
    peer has the figure) and ``.period``. Ratios are ``Fraction``s: print them with
    :func:`insight_cells` (the report's columns and decimal strings) or
    ``policies.insights.fixed``. Raises ``UserError`` for a tenant without electricity
    meters, a bad period or a bad shift.
    """
    timezone = config.calendar.timezone
    period = parse_period(first, end, timezone, today or local_today(timezone))
    shift_bp = parse_shift(shift_percent)
    meters = tenant_meters(config)
    if tenant not in meters:
        raise UserError(f"no tenant {tenant!r} with electricity meters in this park")
    _sector, peers = peers_of(tenant, sectors(config), meters)
    source = DaySource(store, timezone)
    everyone, _ = insights(source, config, period, shift_bp, [tenant, *peers])
    return TenantInsights(everyone[tenant], compare(tenant, everyone, sectors(config)),
                          period.labels)


# --- the report --------------------------------------------------------------------------


def _kw(watts: Fraction | None) -> str | None:
    return None if watts is None else fixed(watts / 1000, 3)


def _pct(share: Fraction | None) -> str | None:
    return None if share is None else fixed(share * 100, 1)


def _ratio(value: Fraction | None) -> str | None:
    return None if value is None else fixed(value, 3)


def _local_minute(ts_ms: int | None, zone: ZoneInfo) -> str | None:
    if ts_ms is None:
        return None
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ts_ms)
    return moment.astimezone(zone).isoformat(timespec="minutes")


def insight_cells(tenant: TenantFigures, comparison: Comparison | None, config: ParkConfig,
                  bands: list[str] | None = None) -> dict[str, Cell]:
    """A tenant's figures as the report's cells (decimal strings, None where there is no
    figure), with ``pct_<band>`` for each of ``bands`` (by default its own bands and peak);
    without a comparison (the park's total) the sector and the peers' columns are empty."""
    if bands is None:
        bands = band_order({share.band for share in tenant.bands} | {PEAK})
    by_band = {share.band: share.wh for share in tenant.bands}
    shares = percents([by_band.get(band, 0) for band in bands]) if tenant.wh else \
        (None,) * len(bands)
    section = config.tenants.get(tenant.tenant) if comparison is not None else None
    cells: dict[str, Cell] = {
        "tenant": tenant.tenant, "sector": section.sector if section else "",
        "meters": tenant.meters, "kwh": format_amount(tenant.wh, 3)}
    cells.update({f"pct_{band}": share for band, share in zip(bands, shares, strict=True)})
    cells.update({
        "peak_kw": _kw(tenant.peak_w if tenant.slots else None),
        "peak_at": _local_minute(tenant.peak_slot_ms, ZoneInfo(config.calendar.timezone)),
        "average_kw": _kw(tenant.average_w), "load_factor": _ratio(tenant.load_factor),
        "night_base_kw": _kw(tenant.night_base_w), "night_base_pct": _pct(tenant.night_base_share),
        "area_m2": tenant.area_m2 or None,
        "kwh_per_m2": None if tenant.wh_per_m2 is None else fixed(tenant.wh_per_m2 / 1000, 3),
        "shift_pct": format_amount(tenant.shift.percent_bp, 2),
        "shift_kwh": fixed(tenant.shift.moved_wh / 1000, 3),
        "saving": format_amount(tenant.shift.minor, config.server.decimals),
        "compared_with": None, "peers": None, "peers_pct_peak": None,
        "peers_load_factor": None, "peers_night_base_pct": None, "peers_kwh_per_m2": None})
    if comparison is not None:
        cells.update({
            "compared_with": f"sector:{comparison.sector}" if comparison.sector else PARK,
            "peers": comparison.peers, "peers_pct_peak": _pct(comparison.peak_share),
            "peers_load_factor": _ratio(comparison.load_factor),
            "peers_night_base_pct": _pct(comparison.night_base_share),
            "peers_kwh_per_m2": None if comparison.wh_per_m2 is None
            else fixed(comparison.wh_per_m2 / 1000, 3)})
    return cells


def insights_report(store: Store, config: ParkConfig, period: Period,
                    shift: str | None = None) -> Report:
    """``wattkeeper report insights``: one row per tenant (by name), and the park's total."""
    shift_bp = parse_shift(shift)
    everyone, park = insights(DaySource(store, config.calendar.timezone), config, period,
                              shift_bp)
    bands = band_order({share.band for tenant in everyone.values() for share in tenant.bands}
                       | {PEAK})
    columns = (*HEAD, *(f"pct_{band}" for band in bands), *TAIL)
    comparisons = compare_all(everyone, sectors(config))
    rows = []
    for name, tenant in everyone.items():
        cells = insight_cells(tenant, comparisons[name], config, bands)
        rows.append(tuple(cells[column] for column in columns))
    totals = None
    if park is not None:
        cells = insight_cells(park, None, config, bands)
        totals = tuple(cells[column] for column in columns)
    notes = [f"shift: {format_amount(shift_bp, 2)} % of each tenant's peak energy moved to "
             "the valley band of the same day, priced at its meters' configured tariffs",
             f"night base: the median power of the slots starting {NIGHT[0] // 60:02d}:00 to "
             f"{NIGHT[1] // 60:02d}:00 local; peers: the medians of the other tenants of the "
             "same sector, else of the whole park",
             "the total's saving is the sum of the tenants' savings"]
    left_out = sorted({meter.kind for meter in config.meters} - {"electricity"})
    own = park_meters(config)
    if left_out or own:
        what = [f"{kind} meters" for kind in left_out]
        if own:
            what.append(f"the park's own meters ({', '.join(sorted(own))})")
        notes.append(f"electricity of tenants' meters only: {' and '.join(what)} left out")
    return Report("insights", "Energy insights per tenant", period.labels, columns,
                  tuple(rows), totals, notes=tuple(notes))
