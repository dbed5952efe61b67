"""Apportionment and the black-hole report, from the park's books.

* :func:`apportion` computes, for a period, each pool's cost (a feeder's loss, or common-area
  meters' charges; ``policies.apportionment``) and each tenant's share, and the posting that
  carries it: an adjustment of kind ``apportionment`` on the tenant's main meter, with the
  reference ``apportion/<pool>/<first>..<end>/<tenant>``. The reference makes posting a period
  idempotent: posting it again finds every reference in the journal and moves nothing.
* :func:`apportionment_report` is the preview (``wattkeeper report apportionment``): every
  pool and share, and whether the journal holds its posting already.
* :func:`blackhole_report` shows unexplained loss per feeder and hour (or day), with the
  hours whose loss ratio is above the feeder's ``loss_alarm_percent`` flagged.

Energy and money come from the day records (``persistence.history.DaySource``), the same
figures the statements and the reconciliation use, so a posted share is explained by them.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping

import attrs

from persistence.days import day_slots
from persistence.history import meter_totals
from policies import apportionment as rules
from policies.apportionment import FeederLoss, Share, Totals
from policies.money import format_amount
from server.config import ParkConfig
from server.config.records import PoolSection, subtree_meters
from server.errors import UserError
from server.reports.books import Books
from server.reports.period import Period
from server.reports.table import Cell, Report

HOUR_MS = 3_600_000
BLACKHOLE_GROUPINGS = ("hour", "day")


@attrs.frozen
class Posting:
    """One tenant's share of one pool, as the ledger posts it (``minor`` is charged)."""

    pool: str
    tenant: str
    meter: str
    minor: int
    wh: int
    weight: int
    reference: str
    reason: str


@attrs.frozen
class PoolResult:
    pool: PoolSection
    energy_wh: int
    cost_minor: int
    source: str
    """What the cost is, in words (the statements' line says it)."""
    postings: tuple[Posting, ...]
    note: str = ""
    """Why nothing is shared (no loss, nobody consumed), or ""."""


def period_key(period: Period) -> str:
    first, end = period.labels
    return f"{first}..{end}"


def posting_reference(pool_id: str, period: Period, tenant: str) -> str:
    return f"apportion/{pool_id}/{period_key(period)}/{tenant}"


class _Totals:
    """Each meter's period totals, read once from the day records."""

    def __init__(self, books: Books, period: Period) -> None:
        self._books = books
        self._period = period
        self._cache: dict[str, Totals] = {}

    def __getitem__(self, meter_id: str) -> Totals:
        found = self._cache.get(meter_id)
        if found is None:
            wh, minor = meter_totals(self._books.history.band_totals(
                meter_id, self._period.from_ms, self._period.to_ms))
            found = self._cache[meter_id] = Totals(wh, minor)
        return found


def feeder_losses(config: ParkConfig, totals: _Totals) -> dict[str, FeederLoss]:
    return {feeder.id: rules.feeder_loss(feeder.id, totals[feeder.main],
                                         [totals[m] for m in feeder.meters])
            for feeder in config.feeders}


def apportion(books: Books, config: ParkConfig, period: Period) -> list[PoolResult]:
    """Every pool's cost and shares for ``period`` (see the module docstring)."""
    totals = _Totals(books, period)
    losses = feeder_losses(config, totals)
    tenant_meters = config.tenant_meters()
    electric = {m.id for m in config.meters if m.kind == "electricity"}
    decimals = config.server.decimals
    results = []
    for pool in config.pools:
        if pool.kind == "loss":
            loss = losses[pool.feeder]
            energy, cost = max(loss.loss_wh, 0), loss.loss_minor
            source = (f"loss of feeder {pool.feeder}: {_kwh(loss.loss_wh)} kWh "
                      f"({100 * loss.ratio:.2f} % of {_kwh(loss.main_wh)} kWh)")
            scope = set(subtree_meters(config.feeders, pool.feeder))
        else:
            energy = sum(totals[m].wh for m in pool.meters)
            cost = sum(totals[m].minor for m in pool.meters)
            source = f"common area {', '.join(pool.meters)}: {_kwh(energy)} kWh"
            scope = electric
        weights = _weights(pool, config, tenant_meters, scope, totals)
        shares = rules.share(cost, energy, pool.tenants, weights)
        note = ""
        if cost <= 0:
            note = "nothing to share: no loss" if pool.kind == "loss" else "nothing consumed"
        elif not shares:
            note = f"nothing shared: no tenant has any {pool.basis} to share by"
        weight_sum = sum(weights)
        postings = tuple(
            _posting(pool, period, tenant_meters, share, weight_sum, source, decimals)
            for share in shares if share.minor > 0)
        results.append(PoolResult(pool, energy, cost, source, postings, note))
    return results


def _weights(pool: PoolSection, config: ParkConfig, tenant_meters: Mapping[str, tuple[str, ...]],
             scope: set[str], totals: _Totals) -> list[int]:
    if pool.basis == "fixed":
        return list(pool.shares)
    if pool.basis == "area":
        return [config.tenants[tenant].area_m2 for tenant in pool.tenants]
    return [sum(totals[m].wh for m in tenant_meters[tenant] if m in scope)
            for tenant in pool.tenants]


def _posting(pool: PoolSection, period: Period, tenant_meters: Mapping[str, tuple[str, ...]],
             share: Share, weight_sum: int, source: str, decimals: int) -> Posting:
    first, end = period.labels
    percent = 100 * share.weight / weight_sum
    reason = (f"{pool.name} {first}..{end}: {source}; share {percent:.2f} % by {pool.basis}, "
              f"{_kwh(share.wh)} kWh")
    return Posting(pool.id, share.tenant, tenant_meters[share.tenant][0], share.minor,
                   share.wh, share.weight, posting_reference(pool.id, period, share.tenant),
                   reason)


def _kwh(wh: int) -> str:
    return format_amount(wh, 3)


def posted_amounts(books: Books) -> dict[str, int]:
    """Reference -> amount of every apportionment the journal holds (charges are negative)."""
    return {entry.reference: entry.amount for _, entry in books.entries
            if entry.kind == "apportionment"}


APPORTIONMENT_COLUMNS = ("pool", "kind", "basis", "source", "pool_kwh", "pool_cost", "tenant",
                         "meter", "share_kwh", "share", "reference", "posted")


def apportionment_report(results: list[PoolResult], posted: Mapping[str, int],
                         period: Period, decimals: int) -> Report:
    """The preview: every share and whether it is posted ("yes", "no", or "differs: X")."""
    rows: list[tuple[Cell, ...]] = []
    for result in results:
        pool = result.pool
        head = (pool.id, pool.kind, pool.basis, result.source, _kwh(result.energy_wh),
                format_amount(result.cost_minor, decimals))
        if not result.postings:
            rows.append((*head, "", "", "", "", "", result.note))
        for posting in result.postings:
            found = posted.get(posting.reference)
            state = ("no" if found is None else "yes" if found == -posting.minor
                     else f"differs: {format_amount(-found, decimals)} posted")
            rows.append((*head, posting.tenant, posting.meter, _kwh(posting.wh),
                         format_amount(posting.minor, decimals), posting.reference, state))
    total = sum(p.minor for r in results for p in r.postings)
    return Report("apportionment", "Apportionment of losses and common areas", period.labels,
                  APPORTIONMENT_COLUMNS, tuple(rows),
                  notes=(f"{len(results)} pools; {format_amount(total, decimals)} shared",))


BLACKHOLE_COLUMNS = ("feeder", "start", "main_kwh", "sub_kwh", "loss_kwh", "loss_percent",
                     "over_threshold")


def blackhole_report(books: Books, config: ParkConfig, period: Period, by: str = "hour"
                     ) -> Report:
    """Unexplained loss per feeder and hour (or day); flags hours above the threshold."""
    if by not in BLACKHOLE_GROUPINGS:
        raise UserError(f"--by for blackhole must be one of {', '.join(BLACKHOLE_GROUPINGS)}, "
                        f"got {by!r}")
    if not config.feeders:
        raise UserError("this park has no [[feeders]]: nothing to compare")
    starts = period.day_starts()
    rows: list[tuple[Cell, ...]] = []
    flagged = 0
    for feeder in config.feeders:
        main = _energy_by(books, feeder.main, period, by, starts)
        sub: dict[int, int] = defaultdict(int)
        for meter_id in feeder.meters:
            for start, wh in _energy_by(books, meter_id, period, by, starts).items():
                sub[start] += wh
        for start in sorted(set(main) | set(sub)):
            loss = FeederLoss(feeder.id, main.get(start, 0), sub.get(start, 0), 0)
            over = rules.loss_ratio_exceeded(loss, feeder.loss_alarm_percent)
            flagged += over
            rows.append((feeder.id, _iso(start), _kwh(loss.main_wh), _kwh(loss.sub_wh),
                         _kwh(loss.loss_wh), round(100 * loss.ratio, 2), over))
    return Report("blackhole", f"Unexplained loss by feeder and {by}", period.labels,
                  BLACKHOLE_COLUMNS, tuple(rows),
                  notes=(f"{flagged} {by}s above their feeder's loss_alarm_percent",))


def _energy_by(books: Books, meter_id: str, period: Period, by: str,
               day_starts: list[int]) -> dict[int, int]:
    """A meter's energy per hour (interval start floored to the hour) or per local day."""
    found: dict[int, int] = defaultdict(int)
    for day_ms, value in books.history.days(meter_id, period.from_ms, period.to_ms):
        if by == "day":
            found[day_ms] += sum(day_slots(value)[2])
            continue
        offsets, _, energy, _ = day_slots(value)
        for offset, wh in zip(offsets, energy, strict=True):
            start = day_ms + offset
            found[start - start % HOUR_MS] += wh
    return found


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%MZ")
