"""Reading what tenants share: ``[tenants.<id>]``, ``[[quotas]]``, ``[[feeders]]`` and
``[[pools]]`` (docs/configuration.md, "Shared costs and budgets").

These sections only refer to meters and tenants, so they are read after the meters, and each
reference is checked against them: an unknown meter, a meter in two quota groups or under two
feeders, a feeder tree with a cycle, a pool whose tenants have no meters, weights that do not
add up to anything. Each problem names its key and line like the rest of the config.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, cast

from policies.money import MoneyError, parse_amount
from policies.quota import QuotaPolicy
from protocols.toml.values import KeyPath, show
from server.config.records import (
    POOL_BASES,
    POOL_KINDS,
    QUOTA_UNITS,
    FeederSection,
    LineSection,
    MeterSection,
    PoolSection,
    QuotaSection,
    TenantSection,
    line_owner,
    quota_owner,
    subtree_meters,
)
from server.config.toolkit import Table

MAX_PERCENT = 1000


def decimal_units(t: Table, key: str, decimals: int, *, default: str | None = None,
                  positive: bool = True, example: str = "6.5") -> int:
    """A decimal string (or an integer) in units of ``10**-decimals``: ``"6.5"`` with two
    decimals is 650, ``"12.5"`` kWh with three is 12,500 Wh (``policies.money.parse_amount``,
    so exact and never negative here; zero only when not ``positive``)."""
    value = t.raw(key, default) if default is not None else t.raw(key)
    if key in t.failed:
        return 0
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    try:
        units = parse_amount(text, decimals, what=key)
    except MoneyError as error:
        t.fail(key, f'{error} (a decimal string like "{example}")')
        return 0
    if units < 0 or (positive and units == 0):
        t.fail(key, f"expected a {'positive' if positive else 'non-negative'} number, got "
                    f"{show(value)}")
        return 0
    return units


def owner_is_free(t: Table, owner: str, meters: Mapping[str, object], what: str) -> None:
    """The journal keeps a group's or line's entries under ``owner``: no meter may be called
    that."""
    if owner in meters:
        t.fail("id", f"the journal keeps this {what} under {show(owner)}, which is a meter's "
                     "id; rename one")


class SharedCostsReader:
    """Reads the sections above against the park's meters (``meters`` in config order)."""

    def __init__(self, meters: Sequence[MeterSection], decimals: int) -> None:
        self.meters = {meter.id: meter for meter in meters}
        self.tenant_ids = list(dict.fromkeys(meter.tenant for meter in meters))
        self.decimals = decimals

    def meter_list(self, t: Table, key: str, what: str) -> tuple[str, ...]:
        """A non-empty array of known meter ids, each once."""
        value = t.raw(key)
        if key in t.failed:
            return ()
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            t.fail(key, f'expected a non-empty array of meter ids like ["M-0001"], '
                        f"got {show(value)}")
            return ()
        unknown = [v for v in value if v not in self.meters]
        if unknown:
            t.fail(key, f"{what}: unknown meter {show(unknown[0])}")
            return ()
        if len(set(value)) != len(value):
            repeated = next(v for v in value if value.count(v) > 1)
            t.fail(key, f"{what}: meter {show(repeated)} is listed twice")
            return ()
        return tuple(value)

    # -- quotas ----------------------------------------------------------------------------

    def read_quotas(self, tables: list[Table]) -> tuple[QuotaSection, ...]:
        quotas: list[QuotaSection] = []
        group_of: dict[str, tuple[str, KeyPath]] = {}
        first_at: dict[str, KeyPath] = {}
        for t in tables:
            group_id = t.name("id", "a quota group id")
            name = t.string("name", group_id)
            meters = self.meter_list(t, "meters", "a quota group's meters")
            unit = self._budget_unit(t)
            budget = 0
            if unit == "kwh":
                budget = decimal_units(t, "budget_kwh", 3, example="12000")
            elif unit == "money":
                budget = t.amount("budget", self.decimals)
                if "budget" not in t.failed and budget <= 0:
                    t.fail("budget", "a budget must be > 0")
            percents = self._percents(t)
            t.finish()
            if not t.first_of(first_at, group_id, "quota group id"):
                continue
            owner_is_free(t, quota_owner(group_id), self.meters, "group's requests")
            for meter_id in meters:
                if meter_id in group_of:
                    other, other_at = group_of[meter_id]
                    t.problems.add(t.at("meters"), f'meter "{meter_id}" is in quota group '
                                                   f'"{other}" already; a meter has one group',
                                   related=other_at)
                else:
                    group_of[meter_id] = (group_id, t.at("meters"))
            if t.failed or not meters or budget <= 0 or unit is None:
                continue
            policy = QuotaPolicy(group_id, cast(Literal["kwh", "money"], unit), budget, percents)
            quotas.append(QuotaSection(group_id, name or group_id, meters, policy))
        return tuple(quotas)

    @staticmethod
    def _budget_unit(t: Table) -> str | None:
        has_energy, has_money = t.has("budget_kwh"), t.has("budget")
        if has_energy == has_money:
            t.fail("budget_kwh", 'give one budget: budget_kwh = "12000" (energy) or '
                                 'budget = "9000.00" (money)')
            return None
        return QUOTA_UNITS[0] if has_energy else QUOTA_UNITS[1]

    @staticmethod
    def _percents(t: Table) -> tuple[int, ...]:
        value = t.raw("alarm_percents", [80, 100])
        if "alarm_percents" in t.failed:
            return (80, 100)
        if (not isinstance(value, list) or not value
                or not all(type(v) is int and 1 <= v <= MAX_PERCENT for v in value)):
            t.fail("alarm_percents", f"expected whole percentages from 1 to {MAX_PERCENT} like "
                                     f"[80, 100], got {show(value)}")
            return (80, 100)
        if value != sorted(set(value)):
            t.fail("alarm_percents", "percentages must rise and not repeat")
            return (80, 100)
        return tuple(value)

    # -- production lines -------------------------------------------------------------------

    def read_lines(self, tables: list[Table]) -> tuple[LineSection, ...]:
        lines: list[LineSection] = []
        first_at: dict[str, KeyPath] = {}
        for t in tables:
            line_id = t.name("id", "a production line id")
            name = t.string("name", line_id)
            meters = self.meter_list(t, "meters", "a production line's meters")
            unit = t.string("output_unit", "units")
            if "output_unit" not in t.failed and not 0 < len(unit) <= 32:
                t.fail("output_unit", 'expected a short name of what the line makes, e.g. '
                                      '"parts" or "tonnes"')
            t.finish()
            if not t.first_of(first_at, line_id, "production line id"):
                continue
            owner_is_free(t, line_owner(line_id), self.meters, "line's counts")
            if not t.failed:
                lines.append(LineSection(line_id, name or line_id, meters, unit))
        return tuple(lines)

    # -- feeders -----------------------------------------------------------------------------

    def read_feeders(self, tables: list[Table]) -> tuple[FeederSection, ...]:
        feeders: list[FeederSection] = []
        first_at: dict[str, KeyPath] = {}
        parent_of: dict[str, tuple[str, KeyPath]] = {}
        main_of: dict[str, str] = {}
        for t in tables:
            feeder_id = t.name("id", "a feeder id")
            main = t.string("main")
            if "main" not in t.failed and main not in self.meters:
                t.fail("main", f"unknown meter {show(main)}")
            meters = self.meter_list(t, "meters", "the meters under a feeder")
            alarm = decimal_units(t, "loss_alarm_percent", 2, default="0", positive=False)
            window = t.duration_ms("loss_window", "1h", low_ms=60_000)
            t.finish()
            if not t.first_of(first_at, feeder_id, "feeder id"):
                continue
            if main in meters:
                t.fail("meters", f'the main meter "{main}" cannot be under its own feeder')
            if main in main_of:
                t.fail("main", f'meter "{main}" is already the main meter of feeder '
                               f'"{main_of[main]}"')
            for meter_id in meters:
                if meter_id in parent_of:
                    other, other_at = parent_of[meter_id]
                    t.problems.add(t.at("meters"), f'meter "{meter_id}" is under feeder '
                                                   f'"{other}" already', related=other_at)
                else:
                    parent_of[meter_id] = (feeder_id, t.at("meters"))
            if t.failed:
                continue
            main_of[main] = feeder_id
            feeders.append(FeederSection(feeder_id, main, meters, alarm, window))
        self._refuse_cycles(tables, feeders, parent_of)
        return tuple(feeders)

    @staticmethod
    def _refuse_cycles(tables: list[Table], feeders: list[FeederSection],
                       parent_of: dict[str, tuple[str, KeyPath]]) -> None:
        """A feeder whose main meter is (transitively) under itself measures nothing."""
        by_id = {feeder.id: feeder for feeder in feeders}
        for feeder in feeders:
            seen = {feeder.id}
            meter = feeder.main
            while meter in parent_of:
                parent = parent_of[meter][0]
                if parent in seen:
                    table = next(t for t in tables if t.data.get("id") == feeder.id)
                    table.fail("main", f'feeder "{feeder.id}" is under itself through meter '
                                       f'"{meter}": feeders must form a tree')
                    break
                seen.add(parent)
                meter = by_id[parent].main if parent in by_id else ""

    # -- pools -------------------------------------------------------------------------------

    def read_pools(self, tables: list[Table], feeders: Sequence[FeederSection],
                   tenants: dict[str, TenantSection]) -> tuple[PoolSection, ...]:
        pools: list[PoolSection] = []
        first_at: dict[str, KeyPath] = {}
        by_feeder = {feeder.id: feeder for feeder in feeders}
        infrastructure = {feeder.main for feeder in feeders}
        for t in tables:
            listed = t.data.get("meters")
            if t.data.get("kind") == "common" and isinstance(listed, list):
                infrastructure.update(m for m in listed if isinstance(m, str))
        for t in tables:
            pool_id = t.name("id", "a pool id")
            name = t.string("name", pool_id)
            kind = t.string("kind", choices=POOL_KINDS)
            basis = t.string("basis", "consumption", choices=POOL_BASES)
            feeder_id, meters = "", cast(tuple[str, ...], ())
            if kind == "loss":
                feeder_id = t.string("feeder")
                if "feeder" not in t.failed and feeder_id not in by_feeder:
                    t.fail("feeder", f"unknown feeder {show(feeder_id)}")
                    feeder_id = ""
            elif kind == "common":
                meters = self.meter_list(t, "meters", "a common pool's meters")
            default_tenants = self._tenants_below(feeders, feeder_id, infrastructure)
            shared_by = self._tenant_list(t, default_tenants)
            shares = self._shares(t, basis, shared_by, tenants)
            t.finish()
            if not t.first_of(first_at, pool_id, "pool id"):
                continue
            if t.failed or not kind:
                continue
            pools.append(PoolSection(pool_id, name or pool_id,
                                     cast(Literal["loss", "common"], kind),
                                     cast(Literal["consumption", "area", "fixed"], basis),
                                     shared_by, feeder_id, meters, shares))
        return tuple(pools)

    def _tenants_below(self, feeders: Sequence[FeederSection], feeder_id: str,
                       infrastructure: set[str]) -> tuple[str, ...]:
        """The default sharers: for a loss pool the tenants of the meters in the feeder's
        subtree, for a common pool every tenant; never the park's own (main and common-area)
        meters' tenants."""
        own = {self.meters[m].tenant for m in infrastructure if m in self.meters}
        if not feeder_id:
            return tuple(t for t in self.tenant_ids if t not in own)
        below = {self.meters[m].tenant for m in subtree_meters(feeders, feeder_id)
                 if m not in infrastructure}
        return tuple(t for t in self.tenant_ids if t in below and t not in own)

    def _tenant_list(self, t: Table, default: tuple[str, ...]) -> tuple[str, ...]:
        if not t.has("tenants"):
            if not default:
                t.fail("tenants", "no tenant would share this pool; list them in tenants")
            return default
        value = t.raw("tenants")
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            t.fail("tenants", f'expected a non-empty array of tenant ids, got {show(value)}')
            return ()
        unknown = [v for v in value if v not in self.tenant_ids]
        if unknown:
            t.fail("tenants", f"no meter has tenant {show(unknown[0])}")
            return ()
        if len(set(value)) != len(value):
            t.fail("tenants", "a tenant is listed twice")
            return ()
        return tuple(value)

    def _shares(self, t: Table, basis: str, sharers: tuple[str, ...],
                tenants: dict[str, TenantSection]) -> tuple[int, ...]:
        if basis != "fixed":
            if t.has("shares"):
                t.fail("shares", f'shares are for basis = "fixed"; this pool is by {basis}')
            if basis == "area":
                missing = [s for s in sharers if s not in tenants or not tenants[s].area_m2]
                if missing:
                    t.fail("basis", f'basis "area" needs every sharing tenant\'s area_m2 in '
                                    f'[tenants.{missing[0]}]')
            return ()
        table = t.table("shares", required=True)
        if "shares" in t.failed:
            return ()
        weights = []
        for tenant in sharers:
            weights.append(decimal_units(table, tenant, 2, example="60") if table.has(tenant)
                           else 0)
            if not table.has(tenant):
                table.fail(tenant, f"tenant {show(tenant)} shares this pool but has no share")
        table.finish()
        return tuple(weights)
