"""Pricing: what the energy consumed over an interval costs under a tariff.

Theory of operation
-------------------
The price of a Wh is ``band price + tier price`` (see ``policies.tariff_records``). The band is
chosen by the local wall-clock time (``Calendar.timezone``, via ``zoneinfo``): the local date
gives a season (first season of the tariff containing the date, else the top-level schedules)
and a day type (holiday > weekend > weekday), which pick one band tuple; the local minute picks
the band. The tier is chosen by the energy already consumed in the local calendar month.

Turning that into UTC milliseconds is the expensive part (time zones, DST), and it depends only
on the tariff and the day, so it is memoised: ``day_layout(tariff, day)`` returns the segments
``(start_ms, end_ms, price, band, month)`` of one *UTC* day ``[day * DAY_MS, (day + 1) * DAY_MS)``
and caches them in ``tariff._day_cache``. Segment boundaries are the band boundaries and local
midnights (merged away where nothing changes, so a flat tariff has one segment per UTC day
unless a local month starts in it). ``month`` is ``year * 12 + month - 1`` of the local date.

Energy within an interval ``[t0, t1)`` carrying ``wh`` is attributed by time with the
floor-of-cumulative rule ``wh_at(t) = wh * (t - t0) // (t1 - t0)``: the energy of a piece
``[a, b)`` is ``wh_at(b) - wh_at(a)``, so the pieces always sum to ``wh`` exactly. Splitting a
reading interval at ``t`` with the interpolated register ``r0 + wh_at(t)`` yields the same pieces
whenever that interpolation is exact (``wh * (t - t0)`` divisible by ``t1 - t0``); otherwise the
split moves at most one Wh across the band boundary next to ``t`` (an integer register cannot do
better, and the tests pin both facts down). Within a time piece, energy is split again by tier
thresholds (energy-based, hence exact under any split), and a new local month resets the month's
energy to 0.

The common case (the interval lies inside one segment and one tier) is ``fast_price``: a dict
lookup, a bisect and a few comparisons.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from typing import Final, cast
from zoneinfo import ZoneInfo

import attrs

from policies.tariff_records import MINUTES_PER_DAY, Band, Calendar, Season, Tariff, Tier

DAY_MS: Final = 86_400_000
MINUTE_MS: Final = 60_000

# A memo only: it is cleared rather than evicted, since the working set is a day or two per
# tariff and a pathological caller (a replay jumping over years) must not grow it without bound.
_CACHE_LIMIT: Final = 4096

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_MS: Final = dt.timedelta(milliseconds=1)

Segment = tuple[int, int, int, str, int]
"""(start_ms, end_ms, band price, band name, local month key)."""

DayLayout = tuple[tuple[int, ...], tuple[Segment, ...]]
"""Segment starts (for bisect) and the segments of one UTC day."""


@attrs.frozen
class PricedPiece:
    """Energy ``wh`` consumed in ``[start_ms, end_ms)`` at ``price`` charge units per Wh.

    Tier thresholds split a time piece further, so consecutive pieces may share their times.
    """

    start_ms: int
    end_ms: int
    wh: int
    price: int
    band: str
    month: int


@attrs.frozen
class PricedInterval:
    """The pieces of one interval, and the month and month energy after it."""

    pieces: tuple[PricedPiece, ...]
    month: int
    month_wh: int

    @property
    def cost_units(self) -> int:
        return sum(p.wh * p.price for p in self.pieces)


# --- validation (called by the config loader) --------------------------------------------


def validate_bands(bands: tuple[Band, ...], *, what: str = "bands") -> None:
    """Refuse a band tuple that does not cover the day exactly once, in order."""
    if not bands:
        raise ValueError(f"{what}: at least one band is needed")
    expected = 0
    for band in bands:
        if not band.name:
            raise ValueError(f"{what}: a band needs a name")
        if band.price < 0:
            raise ValueError(f"{what}: band {band.name!r} has a negative price")
        if band.end_min <= band.start_min:
            raise ValueError(
                f"{what}: band {band.name!r} must end after it starts "
                f"({_hhmm(band.start_min)}-{_hhmm(band.end_min)})"
            )
        if band.start_min > expected:
            raise ValueError(
                f"{what}: gap from {_hhmm(expected)} to {_hhmm(band.start_min)} "
                f"before band {band.name!r}"
            )
        if band.start_min < expected:
            raise ValueError(
                f"{what}: band {band.name!r} starting {_hhmm(band.start_min)} overlaps the "
                f"previous band (bands must be sorted and not overlap)"
            )
        expected = band.end_min
    if expected != MINUTES_PER_DAY:
        raise ValueError(f"{what}: bands end at {_hhmm(expected)}, they must reach 24:00")


def validate_tiers(tiers: tuple[Tier, ...]) -> None:
    """Tiers: increasing positive caps, only the last one may be open-ended."""
    previous = 0
    for index, tier in enumerate(tiers):
        if tier.price < 0:
            raise ValueError(f"tiers: tier {index + 1} has a negative price")
        if tier.up_to_wh is None:
            if index != len(tiers) - 1:
                raise ValueError("tiers: only the last tier may have no upper limit")
            continue
        if tier.up_to_wh <= previous:
            raise ValueError(
                f"tiers: tier {index + 1} limit {tier.up_to_wh} Wh must be above {previous} Wh"
            )
        previous = tier.up_to_wh


def validate_tariff(tariff: Tariff) -> None:
    """Check every schedule, season and tier of a tariff, and that its time zone exists."""
    try:
        ZoneInfo(tariff.calendar.timezone)
    except (KeyError, ValueError) as exc:  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(f"unknown time zone {tariff.calendar.timezone!r}") from exc
    validate_bands(tariff.bands, what=f"tariff {tariff.name}: bands")
    for label, extra in (("weekend_bands", tariff.weekend_bands),
                         ("holiday_bands", tariff.holiday_bands)):
        if extra:
            validate_bands(extra, what=f"tariff {tariff.name}: {label}")
    for season in tariff.seasons:
        for day in (season.start, season.end):
            try:
                dt.date(2000, *day)  # a leap year, so 02-29 is allowed
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"tariff {tariff.name}: season {season.name!r} has a bad date {day!r}"
                ) from exc
        prefix = f"tariff {tariff.name}: season {season.name}"
        validate_bands(season.bands, what=f"{prefix}: bands")
        if season.weekend_bands:
            validate_bands(season.weekend_bands, what=f"{prefix}: weekend_bands")
        if season.holiday_bands:
            validate_bands(season.holiday_bands, what=f"{prefix}: holiday_bands")
    validate_tiers(tariff.tiers)


# Years whose January and July offsets are checked: a zone's offsets (standard and summer
# time) as of the last decades and the next.
_OFFSET_YEARS: Final = range(2000, 2041)


def interval_misalignment(tariff: Tariff, interval_ms: int) -> str | None:
    """Why history intervals of ``interval_ms`` could straddle one of ``tariff``'s bands, or
    None when they cannot.

    Intervals are aligned to the epoch (``charging.bucket_of``), bands to local minutes of the
    day; an interval lies inside one band when every band boundary and every UTC offset of the
    time zone is a whole number of intervals. Then each closed interval has one band. (A
    tariff whose bands all share one name, a flat one say, cannot be straddled at all.)"""
    step = interval_ms // 60_000
    schedules = [("bands", tariff.bands), ("weekend_bands", tariff.weekend_bands),
                 ("holiday_bands", tariff.holiday_bands)]
    for season in tariff.seasons:
        schedules += [(f"season {season.name!r} {label}", bands) for label, bands in (
            ("bands", season.bands), ("weekend_bands", season.weekend_bands),
            ("holiday_bands", season.holiday_bands))]
    if len({band.name for _, bands in schedules for band in bands}) <= 1:
        return None
    for where, bands in schedules:
        for band in bands:
            for minute in (band.start_min, band.end_min):
                if minute % step:
                    return (f"band {band.name!r} of tariff {tariff.name} ({where}) starts or ends "
                            f"at {minute // 60:02d}:{minute % 60:02d}, which is not on a "
                            f"{step}-minute step")
    try:
        zone = ZoneInfo(tariff.calendar.timezone)
    except (KeyError, ValueError):  # an unknown zone is validate_tariff's (and config's) error
        return None
    for year in _OFFSET_YEARS:
        for month in (1, 7):
            offset = dt.datetime(year, month, 15, tzinfo=zone).utcoffset()
            minutes = 0 if offset is None else int(offset.total_seconds()) // 60
            if minutes % step:
                sign = "+" if minutes >= 0 else "-"
                return (f"the time zone {tariff.calendar.timezone} of tariff {tariff.name} is "
                        f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}, which is not "
                        f"a whole number of {step}-minute steps")
    return None


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


# --- local time --------------------------------------------------------------------------


def local_datetime(calendar: Calendar, ts_ms: int) -> dt.datetime:
    """The wall-clock time of the park at ``ts_ms``."""
    return (_EPOCH + dt.timedelta(milliseconds=ts_ms)).astimezone(ZoneInfo(calendar.timezone))


def day_type(calendar: Calendar, day: dt.date) -> str:
    """"holiday", "weekend" or "weekday": a holiday on a weekend is a holiday."""
    if day in calendar.holidays:
        return "holiday"
    if day.weekday() in calendar.weekend_days:
        return "weekend"
    return "weekday"


def season_for(tariff: Tariff, day: dt.date) -> Season | None:
    """The first season containing ``day`` (start and end inclusive, may wrap over new year)."""
    key = (day.month, day.day)
    for season in tariff.seasons:
        start, end = tuple(season.start), tuple(season.end)
        inside = start <= key <= end if start <= end else (key >= start or key <= end)
        if inside:
            return season
    return None


def bands_for_date(tariff: Tariff, day: dt.date) -> tuple[Band, ...]:
    """The band schedule in force on a local date (season, then day type, with fallbacks)."""
    season = season_for(tariff, day)
    source: Tariff | Season = tariff if season is None else season
    kind = day_type(tariff.calendar, day)
    if kind == "holiday" and source.holiday_bands:
        return source.holiday_bands
    if kind == "weekend" and source.weekend_bands:
        return source.weekend_bands
    return source.bands


def month_key(day: dt.date) -> int:
    return day.year * 12 + day.month - 1


def _local_ms(day: dt.date, minute: int, zone: ZoneInfo) -> int:
    # Wall-clock arithmetic on purpose: 24:00 is the next local midnight even on DST days.
    # A time that falls in a DST gap resolves with fold=0 (zoneinfo's rule); callers clamp.
    wall = dt.datetime.combine(day, dt.time()) + dt.timedelta(minutes=minute)
    return (wall.replace(tzinfo=zone) - _EPOCH) // _ONE_MS


# --- day layouts (memoised) --------------------------------------------------------------


def build_day_layout(tariff: Tariff, day: int) -> DayLayout:
    """Segments of the UTC day ``day`` (days since the epoch); pure, see ``day_layout``."""
    zone = ZoneInfo(tariff.calendar.timezone)
    day_start = day * DAY_MS
    day_end = day_start + DAY_MS
    first = local_datetime(tariff.calendar, day_start).date()
    last = local_datetime(tariff.calendar, day_end - 1).date()
    segments: list[Segment] = []
    cursor = day_start
    local_day = first
    while local_day <= last:
        month = month_key(local_day)
        for band in bands_for_date(tariff, local_day):
            start = max(_local_ms(local_day, band.start_min, zone), cursor)
            end = min(_local_ms(local_day, band.end_min, zone), day_end)
            if end <= start:
                continue
            if start > cursor and segments:
                # Only a DST oddity can open a gap; the earlier band keeps running through it.
                prev = segments[-1]
                segments[-1] = (prev[0], start, prev[2], prev[3], prev[4])
            cursor = end
            if segments:
                prev = segments[-1]
                if prev[2] == band.price and prev[3] == band.name and prev[4] == month:
                    segments[-1] = (prev[0], end, prev[2], prev[3], prev[4])
                    continue
            segments.append((start, end, band.price, band.name, month))
        local_day += dt.timedelta(days=1)
    if not segments:  # unreachable with validated bands; keeps the lookup total
        raise ValueError(f"tariff {tariff.name}: no band covers UTC day {day}")
    first_seg, last_seg = segments[0], segments[-1]
    segments[0] = (day_start, *first_seg[1:])
    segments[-1] = (last_seg[0], day_end, *last_seg[2:])
    return tuple(s[0] for s in segments), tuple(segments)


def day_layout(tariff: Tariff, day: int) -> DayLayout:
    """Memo of :func:`build_day_layout` in ``tariff._day_cache``."""
    cache = tariff._day_cache
    layout = cache.get(day)
    if layout is None:
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        layout = cache[day] = build_day_layout(tariff, day)
    return cast(DayLayout, layout)


def segment_at(tariff: Tariff, ts_ms: int) -> Segment:
    """The segment containing ``ts_ms``."""
    cache: dict[int, DayLayout] = tariff._day_cache  # type: ignore[assignment]  # see fast_price
    layout = cache.get(ts_ms // DAY_MS)
    if layout is None:
        layout = day_layout(tariff, ts_ms // DAY_MS)
    starts, segments = layout
    return segments[bisect_right(starts, ts_ms) - 1]


def band_name_at(tariff: Tariff, ts_ms: int) -> str:
    """Name of the band in force at ``ts_ms`` (for display and reports)."""
    return segment_at(tariff, ts_ms)[3]


def month_at(tariff: Tariff, ts_ms: int) -> int:
    """Local month key (``year * 12 + month - 1``) at ``ts_ms``."""
    return segment_at(tariff, ts_ms)[4]


# --- tiers -------------------------------------------------------------------------------


def tier_at(tiers: tuple[Tier, ...], month_wh: int) -> tuple[int, int | None]:
    """(tier price, Wh left in that tier or None) for the next Wh after ``month_wh``.

    Past the last capped tier the last tier's price continues (a config without an open-ended
    tier should not make energy free).
    """
    for tier in tiers:
        cap = tier.up_to_wh
        if cap is None:
            return tier.price, None
        if month_wh < cap:
            return tier.price, cap - month_wh
    if tiers:
        return tiers[-1].price, None
    return 0, None


# --- pricing -----------------------------------------------------------------------------


def fast_price(tariff: Tariff, t0_ms: int, t1_ms: int, month: int, month_wh: int, wh: int) -> int:
    """The single price of ``wh`` consumed in ``[t0, t1)``, or -1 if it needs splitting.

    -1 means: the interval crosses a segment (band, local day or month) boundary, starts in
    another month than ``month``, or crosses a tier threshold.
    """
    # The cache is declared dict[int, object] in tariff_records (data only, no pricing types
    # there); only this module writes it, always with a DayLayout. An annotated local instead of
    # typing.cast saves a function call on the hot path.
    cache: dict[int, DayLayout] = tariff._day_cache  # type: ignore[assignment]
    layout = cache.get(t0_ms // DAY_MS)
    if layout is None:
        layout = day_layout(tariff, t0_ms // DAY_MS)
    starts, segments = layout
    seg = segments[bisect_right(starts, t0_ms) - 1]
    if t1_ms > seg[1] or seg[4] != month:
        return -1
    tiers = tariff.tiers
    if not tiers:
        return seg[2]
    tier_price, room = tier_at(tiers, month_wh)
    if room is not None and wh > room:
        return -1
    return seg[2] + tier_price


def _segments_between(tariff: Tariff, t0_ms: int, t1_ms: int) -> Iterable[Segment]:
    day = t0_ms // DAY_MS
    while day * DAY_MS < t1_ms:
        starts, segments = day_layout(tariff, day)
        first = max(bisect_right(starts, t0_ms) - 1, 0)
        for seg in segments[first:]:
            if seg[0] >= t1_ms:
                return
            yield seg
        day += 1


def price_interval(
    tariff: Tariff,
    t0_ms: int,
    t1_ms: int,
    wh: int,
    month: int,
    month_wh: int,
    cuts: Sequence[int] = (),
) -> PricedInterval:
    """Split ``wh`` consumed in ``[t0, t1)`` over segments, ``cuts`` and tiers, exactly.

    ``cuts`` are extra split instants (history bucket boundaries), sorted ascending; those
    outside ``(t0, t1)`` are ignored. Pieces with no energy are left out. The returned month is
    the local month at the end of the interval, and ``month_wh`` includes this interval's energy
    consumed in that month.
    """
    if t1_ms <= t0_ms:
        raise ValueError(f"empty interval [{t0_ms}, {t1_ms})")
    if wh < 0:
        raise ValueError(f"negative energy {wh} Wh")
    span = t1_ms - t0_ms
    tiers = tariff.tiers
    pieces: list[PricedPiece] = []
    cut_index = bisect_right(cuts, t0_ms)
    n_cuts = len(cuts)
    for seg_start, seg_end, band_price, band, seg_month in _segments_between(tariff, t0_ms, t1_ms):
        if seg_month != month:
            month, month_wh = seg_month, 0
        a = max(seg_start, t0_ms)
        end = min(seg_end, t1_ms)
        while a < end:
            b = end
            if cut_index < n_cuts and cuts[cut_index] < end:
                b = cuts[cut_index]
                cut_index += 1
                if b <= a:
                    continue
            energy = wh * (b - t0_ms) // span - wh * (a - t0_ms) // span
            while energy > 0:
                tier_price, room = tier_at(tiers, month_wh)
                take = energy if room is None else min(energy, room)
                pieces.append(PricedPiece(a, b, take, band_price + tier_price, band, month))
                month_wh += take
                energy -= take
            a = b
    return PricedInterval(tuple(pieces), month, month_wh)


def cost_units(
    tariff: Tariff, t0_ms: int, t1_ms: int, wh: int, month: int = -1, month_wh: int = 0
) -> int:
    """Total cost in charge units of ``wh`` in ``[t0, t1)`` (reports, tests)."""
    if month == -1:
        month = month_at(tariff, t0_ms)
    return price_interval(tariff, t0_ms, t1_ms, wh, month, month_wh).cost_units
