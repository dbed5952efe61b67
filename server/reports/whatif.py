"""What-if: a period's charges recomputed from the interval history under another configured
tariff, side by side with what was charged, per tenant.

Each interval's energy is priced as if the other tariff had been the meter's (its bands and
seasons at the interval's time; its tiers counted from the start of each local month, so the
month's earlier intervals are read too), in charge units carried from interval to interval as
the meters do, so the figures are what the meters would have charged, to the minor unit.
"""

from __future__ import annotations

from collections import defaultdict
from zoneinfo import ZoneInfo

from persistence.history import iter_history
from persistence.store import Store
from policies.money import CHARGE_UNITS_PER_MINOR, format_amount
from policies.tariff import month_at, price_interval
from server.config import ParkConfig
from server.errors import UserError
from server.reports.books import Books
from server.reports.period import Period, local_ms
from server.reports.table import Cell, Report

COLUMNS = ("tenant", "meters", "kwh", "charged", "whatif", "difference")


def whatif(store: Store, books: Books, config: ParkConfig, period: Period,
           tariff_name: str) -> Report:
    tariff = config.tariffs.get(tariff_name)
    if tariff is None:
        raise UserError(f"no tariff {tariff_name!r} in the config (tariffs: "
                        f"{', '.join(sorted(config.tariffs))})")
    decimals = config.server.decimals
    month_start = local_ms(period.first.replace(day=1), ZoneInfo(config.calendar.timezone))
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # meters wh now what-if
    for meter_id, info in books.meters.items():
        interval = config.policies[meter_id].interval_ms
        month, month_wh, residue, whatif_minor = -1, 0, 0, 0
        wh_total = charged = 0
        for start, wh, minor, _band in iter_history(store, meter_id, month_start, period.to_ms):
            this_month = month_at(tariff, start)
            if this_month != month:
                month, month_wh = this_month, 0
            priced = price_interval(tariff, start, start + interval, wh, month, month_wh)
            month, month_wh = priced.month, priced.month_wh
            if start < period.from_ms:
                continue  # (counted for the tiers only)
            units, residue = divmod(priced.cost_units + residue, CHARGE_UNITS_PER_MINOR)
            whatif_minor += units
            wh_total += wh
            charged += minor
        row = totals[info.tenant]
        row[0] += 1
        row[1] += wh_total
        row[2] += charged
        row[3] += whatif_minor
    def money(minor: int) -> str:
        return format_amount(minor, decimals)

    rows: list[tuple[Cell, ...]] = [
        (tenant, meters, f"{wh / 1000:.3f}", money(now), money(then), money(then - now))
        for tenant, (meters, wh, now, then) in sorted(totals.items())]
    park = [sum(values[i] for values in totals.values()) for i in range(4)]
    return Report("whatif", f"What if the tariff had been {tariff_name}", period.labels,
                  COLUMNS, tuple(rows),
                  ("total", park[0], f"{park[1] / 1000:.3f}", money(park[2]), money(park[3]),
                   money(park[3] - park[2])),
                  notes=(f"what-if tariff: {tariff_name}",))
