"""Energy insights: what a tenant's interval history says about how it uses energy.

Theory of operation
-------------------
The input is each meter's closed history intervals of a period (:class:`MeterSeries`: start,
Wh and the tariff band each was recorded in) and the meter's configured tariff. Everything is
integer arithmetic and exact fractions (``fractions.Fraction``); a figure is rounded only
when it is printed (:func:`fixed`, :func:`percents`).

1. A meter's intervals are summed into its tenant's **load** (:class:`Load`, made by
   :func:`meter_load` and :func:`combine`): Wh per *slot* and Wh per band. A slot is the
   least common multiple of the tenant's meters' interval lengths (each divides a day, so
   their lcm does too), aligned to the epoch like the intervals, so each interval lies in one
   slot. A slot is in the load when at least one meter recorded an interval in it; a meter that
   recorded nothing there adds nothing (so an outage lowers the slot, it does not remove it).

2. :func:`figures` reads the load (:class:`TenantFigures`):

   * **band shares**: Wh per recorded band over all Wh;
   * **peak demand**: the highest slot's average power, ``slot Wh * 3.6e6 / slot ms`` W
     (the earliest such slot is named);
   * **average power**: all Wh over the slots' time, ``wh * 3.6e6 / (slots * slot ms)`` W;
   * **load factor**: average over peak power, ``wh / (slots * max slot Wh)``, in [0, 1];
   * **night base load**: the median of the powers of the slots that start at or after local
     00:00 and before 05:00 (:data:`NIGHT`), the mean of the two middle ones for an even
     count: what runs when nobody works (compressors, lighting, idle machines). Its **share**
     is the night base over the average power: 1 would mean the tenant never uses more than
     at night;
   * **kWh per m2**: all energy over the tenant's floor area, when the area is known;
   * **shift saving**: what moving ``shift`` of the energy recorded in the peak band to the
     valley band of the same local day would have saved, at the meter's configured tariff:
     for every peak interval, ``wh * (band price at its start - valley price of its day)``
     charge units, summed per tenant, times the share, rounded down to a minor unit. Tier
     surcharges do not change (the month's energy is the same, only its time moves), so the
     band prices are the whole difference. A day whose schedule has no valley band moves
     nothing.

3. :func:`compare` sets each tenant beside the **median** of its peers: the other tenants of
   its sector, or, for a tenant without one (or alone in it), every other tenant of the park.
   A peer without a figure (no energy, no area, no night slot) is left out of that figure's
   median.

Pure: no clock, no I/O. Local time comes from the park's zone (``zoneinfo``), memoised in a
:class:`LocalClock` that the caller shares over tenants (their slots start at the same
instants).
"""

from __future__ import annotations

import datetime as dt
import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Final
from zoneinfo import ZoneInfo

import attrs

from policies.money import CHARGE_UNITS_PER_MINOR, format_amount
from policies.tariff import bands_for_date, segment_at
from policies.tariff_records import Tariff

MS_PER_HOUR: Final = 3_600_000
NIGHT: Final = (0, 5 * 60)
"""The night window, local minutes of the day: from 00:00 up to (not including) 05:00."""
PEAK: Final = "peak"
VALLEY: Final = "valley"
DEFAULT_SHIFT_BP: Final = 10_00
"""The default shift: 10 % (in hundredths of a percent)."""
FULL_BP: Final = 100_00
BAND_ORDER: Final = (PEAK, "flat", VALLEY)
"""How bands are listed: these first, in this order, then any other by name."""
_CLOCK_MEMO: Final = 1 << 17
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class LocalClock:
    """The park's wall clock at an instant: local date and minute of the day, memoised."""

    def __init__(self, timezone: str) -> None:
        self.timezone = timezone
        self._zone = ZoneInfo(timezone)
        self._memo: dict[int, tuple[dt.date, int]] = {}

    def local(self, ts_ms: int) -> tuple[dt.date, int]:
        """``(local date, minutes since local midnight on the wall clock)`` at ``ts_ms``."""
        known = self._memo.get(ts_ms)
        if known is not None:
            return known
        if len(self._memo) >= _CLOCK_MEMO:
            self._memo.clear()
        wall = (_EPOCH + dt.timedelta(milliseconds=ts_ms)).astimezone(self._zone)
        known = self._memo[ts_ms] = (wall.date(), wall.hour * 60 + wall.minute)
        return known


@attrs.frozen
class MeterSeries:
    """One meter's closed intervals of a period, in time order."""

    meter_id: str
    interval_ms: int
    tariff: Tariff
    """Its configured tariff: prices the shift saving."""
    starts: tuple[int, ...]
    """Each interval's start (UTC ms, a multiple of ``interval_ms``)."""
    whs: tuple[int, ...]
    bands: tuple[str, ...]
    """The band each interval was recorded in."""


@attrs.frozen
class Load:
    """A tenant's (or the park's) energy over a period: Wh per slot and per band, and the
    charge units of moving all its peak energy to the valley (see the module's docstring)."""

    slot_ms: int
    slots: Mapping[int, int]
    """Slot start (UTC ms) -> Wh, for the slots with an interval."""
    bands: Mapping[str, int]
    """Recorded band -> Wh."""
    shift_units: int = 0
    peak_wh: int = 0
    """Wh recorded in the peak band on days that have a valley band (what can move)."""

    @property
    def wh(self) -> int:
        return sum(self.bands.values())


def slot_length(interval_ms: Iterable[int]) -> int:
    """The slot of meters with these interval lengths: their least common multiple."""
    return math.lcm(*interval_ms)


def valley_price(tariff: Tariff, day: dt.date, valley: str = VALLEY) -> int | None:
    """The cheapest price of the band named ``valley`` in the day's schedule, or None."""
    prices = [band.price for band in bands_for_date(tariff, day) if band.name == valley]
    return min(prices) if prices else None


def meter_load(series: MeterSeries, slot_ms: int, clock: LocalClock, *, peak: str = PEAK,
               valley: str = VALLEY) -> Load:
    """One meter's :class:`Load` in slots of ``slot_ms`` (a multiple of its interval).
    ``clock`` is in the park's zone, the one the tariff's calendar uses."""
    if slot_ms <= 0 or slot_ms % series.interval_ms:
        raise ValueError(f"slot of {slot_ms} ms is not a multiple of meter "
                         f"{series.meter_id}'s interval ({series.interval_ms} ms)")
    starts, whs = series.starts, series.whs
    if not len(starts) == len(whs) == len(series.bands):
        raise ValueError(f"meter {series.meter_id}: starts, whs and bands differ in length")
    tariff = series.tariff
    if tariff.calendar.timezone != clock.timezone:
        clock = LocalClock(tariff.calendar.timezone)
    slots: dict[int, int] = {}
    if slot_ms == series.interval_ms and len(set(starts)) == len(starts):
        slots = dict(zip(starts, whs, strict=True))  # (the common case: a slot an interval)
    else:
        for start, wh in zip(starts, whs, strict=True):
            slot = start - start % slot_ms
            slots[slot] = slots.get(slot, 0) + wh
    bands: dict[str, int] = {}
    valleys: dict[dt.date, int | None] = {}
    units = peak_wh = 0
    for start, wh, band in zip(starts, whs, series.bands, strict=True):
        bands[band] = bands.get(band, 0) + wh
        if band == peak and wh:
            day = clock.local(start)[0]
            if day not in valleys:
                valleys[day] = valley_price(tariff, day, valley)
            cheap = valleys[day]
            if cheap is not None:
                units += wh * (segment_at(tariff, start)[2] - cheap)
                peak_wh += wh
    return Load(slot_ms, slots, bands, units, peak_wh)


class LoadSum:
    """A running sum of loads in slots of ``slot_ms`` (each load's slot divides it): the
    park's, a tenant at a time, without keeping the tenants' loads."""

    def __init__(self, slot_ms: int) -> None:
        self.slot_ms = slot_ms
        self._slots: dict[int, int] = {}
        self._bands: dict[str, int] = {}
        self._units = 0
        self._peak_wh = 0

    def add(self, load: Load) -> None:
        slot_ms, slots = self.slot_ms, self._slots
        if slot_ms % load.slot_ms:
            raise ValueError(f"slot of {slot_ms} ms is not a multiple of {load.slot_ms} ms")
        get = slots.get
        if slot_ms == load.slot_ms:
            for start, wh in load.slots.items():
                slots[start] = get(start, 0) + wh
        else:
            for start, wh in load.slots.items():
                slot = start - start % slot_ms
                slots[slot] = get(slot, 0) + wh
        for band, wh in load.bands.items():
            self._bands[band] = self._bands.get(band, 0) + wh
        self._units += load.shift_units
        self._peak_wh += load.peak_wh

    def load(self) -> Load:
        return Load(self.slot_ms, dict(self._slots), dict(self._bands), self._units,
                    self._peak_wh)


def combine(loads: Iterable[Load], slot_ms: int) -> Load:
    """The sum of loads, in slots of ``slot_ms`` (a multiple of each load's slot)."""
    total = LoadSum(slot_ms)
    for load in loads:
        total.add(load)
    return total.load()


@attrs.frozen
class BandShare:
    band: str
    wh: int
    share: Fraction
    """Of the tenant's energy: the shares of a tenant's bands add up to exactly 1."""


@attrs.frozen
class ShiftSaving:
    """Moving ``percent_bp`` (hundredths of a percent) of the peak energy to the valley."""

    percent_bp: int
    peak_wh: int
    """The peak energy that could move (on days with a valley band)."""
    minor: int
    """The saving, rounded down to a minor unit (negative if the valley is dearer)."""

    @property
    def moved_wh(self) -> Fraction:
        return Fraction(self.peak_wh * self.percent_bp, FULL_BP)


@attrs.frozen
class TenantFigures:
    """A tenant's insights over a period (definitions: the module's docstring)."""

    tenant: str
    meters: int
    wh: int
    bands: tuple[BandShare, ...]
    slot_ms: int
    slots: int
    """Slots with at least one interval."""
    peak_slot_wh: int
    peak_slot_ms: int | None
    """The start of the (earliest) slot of the peak demand; None without slots."""
    night_slots: int
    night_base_slot_wh: Fraction | None
    """The median Wh of the night slots; None without any."""
    area_m2: int
    shift: ShiftSaving

    @property
    def peak_w(self) -> Fraction:
        return Fraction(self.peak_slot_wh * MS_PER_HOUR, self.slot_ms)

    @property
    def average_w(self) -> Fraction | None:
        if not self.slots:
            return None
        return Fraction(self.wh * MS_PER_HOUR, self.slots * self.slot_ms)

    @property
    def load_factor(self) -> Fraction | None:
        """Average over peak power, in [0, 1]; None without energy."""
        if not self.peak_slot_wh:
            return None
        return Fraction(self.wh, self.slots * self.peak_slot_wh)

    @property
    def night_base_w(self) -> Fraction | None:
        if self.night_base_slot_wh is None:
            return None
        return self.night_base_slot_wh * MS_PER_HOUR / self.slot_ms

    @property
    def night_base_share(self) -> Fraction | None:
        """The night base load over the average power; None without energy or night slots."""
        if self.night_base_slot_wh is None or not self.wh:
            return None
        return self.night_base_slot_wh * self.slots / self.wh

    @property
    def wh_per_m2(self) -> Fraction | None:
        return Fraction(self.wh, self.area_m2) if self.area_m2 else None

    def share_of(self, band: str) -> Fraction | None:
        """The band's share of the energy (0 for a band it did not use); None without
        energy."""
        if not self.wh:
            return None
        return next((b.share for b in self.bands if b.band == band), Fraction(0))


def band_order(names: Iterable[str]) -> list[str]:
    """Band names in :data:`BAND_ORDER`, then the others by name."""
    known = {name: rank for rank, name in enumerate(BAND_ORDER)}
    return sorted(set(names), key=lambda name: (known.get(name, len(known)), name))


def median(values: Sequence[Fraction]) -> Fraction | None:
    """The middle value, or the mean of the two middle ones; None for no values."""
    return _sorted_median(sorted(values))


def _sorted_median(ordered: Sequence[Fraction | int], skip: int = -1) -> Fraction | None:
    """The median of sorted values, leaving out the one at index ``skip`` (if >= 0)."""
    count = len(ordered) - (skip >= 0)
    if count <= 0:
        return None

    def at(index: int) -> Fraction:
        return Fraction(ordered[index + (0 <= skip <= index)])

    middle = count // 2
    if count % 2:
        return at(middle)
    return (at(middle - 1) + at(middle)) / 2


def figures(tenant: str, load: Load, clock: LocalClock, *, meters: int, area_m2: int = 0,
            shift_bp: int = DEFAULT_SHIFT_BP, night: tuple[int, int] = NIGHT
            ) -> TenantFigures:
    """A tenant's :class:`TenantFigures` from its load (``shift_bp``: 0 to 100 %, in
    hundredths of a percent; ``night``: local minutes, start included, end not)."""
    if not 0 <= shift_bp <= FULL_BP:
        raise ValueError(f"the shift must be 0 to 100 %, got {shift_bp / 100} %")
    wh = load.wh
    bands = tuple(BandShare(name, load.bands[name], Fraction(load.bands[name], wh or 1))
                  for name in band_order(load.bands))
    peak_slot_ms: int | None = None
    peak_slot_wh = 0
    night_whs: list[int] = []
    for start, slot_wh in load.slots.items():
        if peak_slot_ms is None or slot_wh > peak_slot_wh or (
                slot_wh == peak_slot_wh and start < peak_slot_ms):
            peak_slot_ms, peak_slot_wh = start, slot_wh
        if night[0] <= clock.local(start)[1] < night[1]:
            night_whs.append(slot_wh)
    night_whs.sort()
    saving = load.shift_units * shift_bp // (FULL_BP * CHARGE_UNITS_PER_MINOR)
    return TenantFigures(
        tenant, meters, wh, bands, load.slot_ms, len(load.slots), peak_slot_wh, peak_slot_ms,
        len(night_whs), _sorted_median(night_whs), area_m2,
        ShiftSaving(shift_bp, load.peak_wh, saving))


# --- comparison with peers ---------------------------------------------------------------

COMPARED: Final = ("peak_share", "load_factor", "wh_per_m2", "night_base_share")


@attrs.frozen
class Comparison:
    """The medians of a tenant's peers, figure by figure (None: no peer has it)."""

    sector: str
    """The peers' sector, or "" for the whole park."""
    peers: int
    peak_share: Fraction | None
    load_factor: Fraction | None
    wh_per_m2: Fraction | None
    night_base_share: Fraction | None


def compared_values(tenant: TenantFigures) -> tuple[Fraction | None, ...]:
    """A tenant's figures of :data:`COMPARED`, in that order."""
    return (tenant.share_of(PEAK), tenant.load_factor, tenant.wh_per_m2,
            tenant.night_base_share)


def peers_of(tenant: str, sectors: Mapping[str, str], tenants: Iterable[str]
             ) -> tuple[str, list[str]]:
    """``(sector, peers)``: the other tenants of ``tenant``'s sector, or every other tenant
    (sector "") when it has none or is alone in it. ``sectors``: tenant -> sector ("" or
    missing: none)."""
    others = [name for name in tenants if name != tenant]
    sector = sectors.get(tenant, "")
    if sector:
        same = [name for name in others if sectors.get(name, "") == sector]
        if same:
            return sector, same
    return "", others


def compare(tenant: str, everyone: Mapping[str, TenantFigures], sectors: Mapping[str, str]
            ) -> Comparison:
    """``tenant`` against the medians of its peers among ``everyone`` (see :func:`peers_of`).
    """
    sector, peers = peers_of(tenant, sectors, everyone)
    columns = list(zip(*(compared_values(everyone[peer]) for peer in peers), strict=True))
    medians = [median([value for value in column if value is not None]) for column in columns]
    if not medians:
        medians = [None] * len(COMPARED)
    peak_share, load_factor, wh_per_m2, night_base_share = medians
    return Comparison(sector, len(peers), peak_share, load_factor, wh_per_m2,
                      night_base_share)


def compare_all(everyone: Mapping[str, TenantFigures], sectors: Mapping[str, str]
                ) -> dict[str, Comparison]:
    """:func:`compare` for every tenant of ``everyone``, each group's values sorted once (a
    tenant's median leaves its own value out of its group's sorted list)."""
    names = list(everyone)
    groups: dict[str, list[str]] = {"": names}
    for name in names:
        sector = sectors.get(name, "")
        if sector:
            groups.setdefault(sector, []).append(name)
    values = {name: compared_values(figures) for name, figures in everyone.items()}
    ordered: dict[str, list[list[Fraction]]] = {
        group: [sorted(v for member in members if (v := values[member][k]) is not None)
                for k in range(len(COMPARED))]
        for group, members in groups.items()}
    result: dict[str, Comparison] = {}
    for name in names:
        sector = sectors.get(name, "")
        group = sector if sector and len(groups[sector]) > 1 else ""
        medians = []
        for k, column in enumerate(ordered[group]):
            own = values[name][k]
            skip = -1 if own is None else bisect_left(column, own)
            medians.append(_sorted_median(column, skip))
        peak_share, load_factor, wh_per_m2, night_base_share = medians
        result[name] = Comparison(group, len(groups[group]) - 1, peak_share, load_factor,
                                  wh_per_m2, night_base_share)
    return result


@attrs.frozen
class TenantInsights:
    """A tenant's figures and its peers' medians over a period (``from``/``to``: ISO days,
    ``to`` excluded)."""

    figures: TenantFigures
    comparison: Comparison
    period: tuple[str, str]


# --- printing ----------------------------------------------------------------------------


def fixed(value: Fraction, places: int) -> str:
    """A decimal string with ``places`` decimals, rounded half away from zero."""
    scaled = abs(value) * 10**places
    whole = math.floor(scaled + Fraction(1, 2))
    return format_amount(-whole if value < 0 else whole, places)


def percents(parts: Sequence[int], places: int = 1) -> tuple[str, ...]:
    """``parts`` as percentages of their sum with ``places`` decimals that add up to exactly
    100 (largest remainders get the units left over, ties in order); all "0.0" for no sum."""
    total = sum(parts)
    if any(part < 0 for part in parts):
        raise ValueError("percentages of negative parts")
    if not total:
        return tuple(format_amount(0, places) for _ in parts)
    units = 100 * 10**places
    floors = [part * units // total for part in parts]
    left = units - sum(floors)
    by_remainder = sorted(range(len(parts)), key=lambda i: -(parts[i] * units % total))
    for i in by_remainder[:left]:
        floors[i] += 1
    return tuple(format_amount(value, places) for value in floors)
