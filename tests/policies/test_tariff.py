"""Pricing: bands, day types, seasons, tiers, months, and exact energy attribution."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies import tariff as pricing
from policies.tariff import MINUTE_MS, interval_misalignment
from policies.tariff_records import MINUTES_PER_DAY, Band, Calendar, Season, Tariff, Tier
from tests.policies.builders import (
    FLAT,
    HOUR_MS,
    PEAK,
    TOU_BANDS,
    TZ,
    VALLEY,
    flat_tariff,
    local_ms,
    tou_tariff,
)

# --- validation ---------------------------------------------------------------------------


def test_validate_bands_accepts_a_full_day() -> None:
    pricing.validate_bands(TOU_BANDS)


@pytest.mark.parametrize(
    ("bands", "message"),
    [
        ((), "at least one band"),
        ((Band("a", 0, 600, 1), Band("b", 660, 1440, 1)), "gap from 10:00 to 11:00"),
        ((Band("a", 0, 700, 1), Band("b", 600, 1440, 1)), "overlaps"),
        ((Band("a", 0, 600, 1),), "must reach 24:00"),
        ((Band("a", 60, 1440, 1),), "gap from 00:00 to 01:00"),
        ((Band("a", 0, 0, 1), Band("b", 0, 1440, 1)), "must end after it starts"),
        ((Band("a", 0, 1440, -1),), "negative price"),
    ],
)
def test_validate_bands_refuses_with_a_clear_message(
    bands: tuple[Band, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        pricing.validate_bands(bands)


def test_validate_tariff_checks_tiers_seasons_and_zone() -> None:
    with pytest.raises(ValueError, match="only the last tier"):
        pricing.validate_tiers((Tier(None, 1), Tier(100, 2)))
    with pytest.raises(ValueError, match="must be above"):
        pricing.validate_tiers((Tier(100, 1), Tier(100, 2), Tier(None, 3)))
    with pytest.raises(ValueError, match="time zone"):
        pricing.validate_tariff(Tariff("x", TOU_BANDS, calendar=Calendar(timezone="Mars/Base")))
    bad_season = Season("s", (2, 30), (3, 1), TOU_BANDS)
    with pytest.raises(ValueError, match="bad date"):
        pricing.validate_tariff(Tariff("x", TOU_BANDS, seasons=(bad_season,)))
    pricing.validate_tariff(tou_tariff(tiers=(Tier(100, 1), Tier(None, 2))))


# --- band selection -----------------------------------------------------------------------


def test_band_names_follow_local_time() -> None:
    t = tou_tariff()
    assert pricing.band_name_at(t, local_ms(2026, 3, 2, 7, 59)) == "valley"
    assert pricing.band_name_at(t, local_ms(2026, 3, 2, 8, 0)) == "flat"
    assert pricing.band_name_at(t, local_ms(2026, 3, 2, 17, 59)) == "flat"
    assert pricing.band_name_at(t, local_ms(2026, 3, 2, 18, 0)) == "peak"
    assert pricing.band_name_at(t, local_ms(2026, 3, 2, 23, 59)) == "peak"
    assert pricing.band_name_at(t, local_ms(2026, 3, 3, 0, 0)) == "valley"


def test_tou_split_exactly_at_0800_and_1800() -> None:
    t = tou_tariff()
    t0 = local_ms(2026, 3, 2, 7, 0)  # a Monday
    t1 = local_ms(2026, 3, 2, 19, 0)
    # 12 h, 1200 Wh: 100 Wh per hour -> 100 valley, 1000 flat, 100 peak.
    priced = pricing.price_interval(t, t0, t1, 1200, pricing.month_at(t, t0), 0)
    by_band = {(p.band, p.start_ms, p.end_ms): p.wh for p in priced.pieces}
    assert by_band == {
        ("valley", t0, local_ms(2026, 3, 2, 8)): 100,
        ("flat", local_ms(2026, 3, 2, 8), local_ms(2026, 3, 2, 18)): 1000,
        ("peak", local_ms(2026, 3, 2, 18), t1): 100,
    }
    assert priced.cost_units == 100 * VALLEY + 1000 * FLAT + 100 * PEAK


def test_weekend_and_holiday_schedules() -> None:
    all_valley = (Band("weekend", 0, 1440, VALLEY),)
    all_peak = (Band("holiday", 0, 1440, PEAK),)
    holiday = dt.date(2026, 3, 4)  # a Wednesday
    saturday_holiday = dt.date(2026, 3, 7)
    t = tou_tariff(
        weekend_bands=all_valley,
        holiday_bands=all_peak,
        calendar=Calendar(timezone=TZ, holidays=frozenset({holiday, saturday_holiday})),
    )
    assert pricing.band_name_at(t, local_ms(2026, 3, 2, 12)) == "flat"  # Monday
    assert pricing.band_name_at(t, local_ms(2026, 3, 4, 12)) == "holiday"
    assert pricing.band_name_at(t, local_ms(2026, 3, 7, 12)) == "holiday"  # holiday > weekend
    assert pricing.band_name_at(t, local_ms(2026, 3, 8, 12)) == "weekend"  # Sunday
    # No holiday schedule: a holiday falls back to the ordinary bands (tariff_records rule).
    plain = tou_tariff(calendar=Calendar(timezone=TZ, holidays=frozenset({holiday})))
    assert pricing.band_name_at(plain, local_ms(2026, 3, 4, 12)) == "flat"


def test_season_selection_first_match_and_wrap_over_new_year() -> None:
    summer = Season("summer", (6, 1), (8, 31), (Band("summer", 0, 1440, PEAK),))
    winter = Season("winter", (12, 1), (2, 28), (Band("winter", 0, 1440, VALLEY),),
                    weekend_bands=(Band("winter-weekend", 0, 1440, FLAT),))
    t = tou_tariff(seasons=(summer, winter))
    assert pricing.band_name_at(t, local_ms(2026, 7, 15, 12)) == "summer"
    assert pricing.band_name_at(t, local_ms(2026, 6, 1, 0)) == "summer"
    assert pricing.band_name_at(t, local_ms(2026, 8, 31, 23, 59)) == "summer"
    assert pricing.band_name_at(t, local_ms(2026, 9, 1, 0)) == "valley"  # top level, 00:00
    assert pricing.band_name_at(t, local_ms(2026, 12, 15, 12)) == "winter"  # Tuesday
    assert pricing.band_name_at(t, local_ms(2027, 1, 6, 12)) == "winter"  # Wednesday
    assert pricing.band_name_at(t, local_ms(2027, 1, 9, 12)) == "winter-weekend"  # Saturday
    assert pricing.band_name_at(t, local_ms(2027, 3, 1, 12)) == "flat"


# --- tiers and months ---------------------------------------------------------------------


def tiered() -> Tariff:
    # Tiered: one band priced 0, tiers carry the price.
    return Tariff(
        "tiered",
        bands=(Band("all", 0, 1440, 0),),
        tiers=(Tier(1000, 100), Tier(2000, 200), Tier(None, 300)),
        calendar=Calendar(timezone=TZ),
    )


def test_tier_crossing_mid_interval() -> None:
    t = tiered()
    t0 = local_ms(2026, 3, 10, 12)
    month = pricing.month_at(t, t0)
    priced = pricing.price_interval(t, t0, t0 + HOUR_MS, 600, month, 900)
    assert [(p.wh, p.price) for p in priced.pieces] == [(100, 100), (500, 200)]
    assert priced.month_wh == 1500
    # Across two thresholds at once.
    priced = pricing.price_interval(t, t0, t0 + HOUR_MS, 1500, month, 900)
    assert [(p.wh, p.price) for p in priced.pieces] == [(100, 100), (1000, 200), (400, 300)]
    assert pricing.fast_price(t, t0, t0 + HOUR_MS, month, 900, 100) == 100
    assert pricing.fast_price(t, t0, t0 + HOUR_MS, month, 900, 101) == -1


def test_tiers_are_surcharges_on_band_price() -> None:
    t = tou_tariff(tiers=(Tier(1000, 0), Tier(None, 50_000)))
    t0 = local_ms(2026, 3, 10, 12)
    priced = pricing.price_interval(t, t0, t0 + HOUR_MS, 10, pricing.month_at(t, t0), 995)
    assert [(p.wh, p.price) for p in priced.pieces] == [(5, FLAT), (5, FLAT + 50_000)]


def test_month_boundary_resets_month_wh() -> None:
    t = tiered()
    t0 = local_ms(2026, 3, 31, 23)
    t1 = local_ms(2026, 4, 1, 1)
    march = pricing.month_at(t, t0)
    april = pricing.month_at(t, t1)
    assert april == march + 1
    # 200 Wh over 2 h: 100 Wh in March (still tier 2 at 1950 -> 50@200 + 50@300) and 100 Wh in
    # April, where the month starts over in tier 1.
    priced = pricing.price_interval(t, t0, t1, 200, march, 1950)
    assert [(p.wh, p.price, p.month) for p in priced.pieces] == [
        (50, 200, march), (50, 300, march), (100, 100, april),
    ]
    assert (priced.month, priced.month_wh) == (april, 100)
    # Local, not UTC: 23:30 local on the 31st is still March (15:30 UTC).
    assert pricing.month_at(t, local_ms(2026, 3, 31, 23, 30)) == march
    assert pricing.month_at(t, local_ms(2026, 4, 1, 0, 0)) == april


def test_dst_zone_layouts_cover_every_day_contiguously() -> None:
    t = Tariff("tou", TOU_BANDS, calendar=Calendar(timezone="Europe/Berlin"))
    start_day = local_ms(2026, 3, 27, tz="UTC") // pricing.DAY_MS
    for day in range(start_day, start_day + 220):  # spans both DST changes
        _starts, segments = pricing.day_layout(t, day)
        assert segments[0][0] == day * pricing.DAY_MS
        assert segments[-1][1] == (day + 1) * pricing.DAY_MS
        for a, b in itertools.pairwise(segments):
            assert a[1] == b[0] and a[0] < a[1]
    # 08:00 local is 06:00 UTC in summer, 07:00 UTC in winter.
    assert pricing.band_name_at(t, local_ms(2026, 7, 1, 8, 0, tz="Europe/Berlin")) == "flat"
    assert pricing.band_name_at(t, local_ms(2026, 7, 1, 7, 59, tz="Europe/Berlin")) == "valley"
    assert pricing.band_name_at(t, local_ms(2026, 12, 1, 8, 0, tz="Europe/Berlin")) == "flat"


def test_day_cache_is_a_memo() -> None:
    t = tou_tariff()
    ts = local_ms(2026, 5, 5, 12)
    first = pricing.day_layout(t, ts // pricing.DAY_MS)
    assert pricing.day_layout(t, ts // pricing.DAY_MS) is first
    assert first == pricing.build_day_layout(t, ts // pricing.DAY_MS)
    assert t == tou_tariff()  # the cache takes no part in equality


# --- properties ---------------------------------------------------------------------------

BASE = local_ms(2026, 1, 1)
SPAN = 70 * pricing.DAY_MS  # crosses month boundaries and weekends

times = st.integers(min_value=BASE, max_value=BASE + SPAN)
tariffs = st.sampled_from([flat_tariff(), tou_tariff(), tiered(),
                           tou_tariff(tiers=(Tier(5000, 0), Tier(None, 7000)))])


@given(tariffs, times, st.integers(1, 5 * pricing.DAY_MS), st.integers(0, 100_000),
       st.integers(0, 20_000), st.lists(times, max_size=20))
def test_pieces_sum_to_the_energy_and_fast_price_agrees(
    t: Tariff, t0: int, length: int, wh: int, month_wh: int, cuts: list[int]
) -> None:
    t1 = t0 + length
    month = pricing.month_at(t, t0)
    priced = pricing.price_interval(t, t0, t1, wh, month, month_wh, sorted(cuts))
    assert sum(p.wh for p in priced.pieces) == wh
    assert all(p.wh > 0 and p.price >= 0 and t0 <= p.start_ms < p.end_ms <= t1
               for p in priced.pieces)
    # Extra cuts never change the cost: they only split pieces.
    assert priced.cost_units == pricing.price_interval(t, t0, t1, wh, month, month_wh).cost_units
    fast = pricing.fast_price(t, t0, t1, month, month_wh, wh)
    if fast >= 0:
        assert priced.cost_units == wh * fast


@st.composite
def exact_splits(draw: st.DrawFn) -> tuple[int, int, int, list[int]]:
    """An interval and split instants at which the interpolated register is an integer."""
    step = draw(st.sampled_from([1000, 60_000, 900_000, 3_600_000]))
    n = draw(st.integers(1, 400))
    per_step = draw(st.integers(0, 50))
    t0 = draw(times)
    splits = draw(st.lists(st.integers(1, n - 1), max_size=10, unique=True)) if n > 1 else []
    return t0, step * n, per_step * n, sorted(t0 + k * step for k in splits)


@given(tariffs, exact_splits())
def test_splitting_with_exactly_interpolated_register_gives_identical_cost(
    t: Tariff, case: tuple[int, int, int, list[int]]
) -> None:
    t0, length, wh, splits = case
    t1 = t0 + length
    month = pricing.month_at(t, t0)
    whole = pricing.price_interval(t, t0, t1, wh, month, 0)
    total = 0
    bounds = [t0, *splits, t1]
    m, mwh = month, 0
    for a, b in itertools.pairwise(bounds):
        part_wh = wh * (b - t0) // length - wh * (a - t0) // length
        part = pricing.price_interval(t, a, b, part_wh, m, mwh)
        total += part.cost_units
        m, mwh = part.month, part.month_wh
    assert total == whole.cost_units
    assert (m, mwh) == (whole.month, whole.month_wh)


@given(tariffs, times, st.integers(2, 3 * pricing.DAY_MS), st.integers(0, 10_000),
       st.lists(st.floats(0.0, 1.0), max_size=8))
def test_arbitrary_split_moves_at_most_one_wh_per_split_point(
    t: Tariff, t0: int, length: int, wh: int, fractions: list[float]
) -> None:
    """With an inexact interpolation a split may move a Wh across a band boundary, no more."""
    t1 = t0 + length
    splits = sorted({t0 + 1 + int(f * (length - 2)) for f in fractions})
    month = pricing.month_at(t, t0)
    whole = pricing.price_interval(t, t0, t1, wh, month, 0).cost_units
    total = 0
    bounds = [t0, *splits, t1]
    m, mwh = month, 0
    for a, b in itertools.pairwise(bounds):
        part_wh = wh * (b - t0) // length - wh * (a - t0) // length
        part = pricing.price_interval(t, a, b, part_wh, m, mwh)
        total += part.cost_units
        m, mwh = part.month, part.month_wh
    max_price = max(b.price for b in TOU_BANDS) + 7000 + 300
    assert abs(total - whole) <= len(splits) * max_price


def test_intervals_that_straddle_no_band_are_accepted() -> None:
    assert interval_misalignment(tou_tariff(), 15 * MINUTE_MS) is None
    assert interval_misalignment(tou_tariff(), 60 * MINUTE_MS) is None
    assert interval_misalignment(flat_tariff(), 24 * 60 * MINUTE_MS) is None


def test_a_band_boundary_off_the_interval_grid_is_named() -> None:
    season = Season("summer", (6, 1), (8, 31), bands=(
        Band("night", 0, 450, 1), Band("day", 450, MINUTES_PER_DAY, 2)))
    tariff = tou_tariff(seasons=(season,))
    assert interval_misalignment(tariff, 15 * MINUTE_MS) is None
    assert interval_misalignment(tariff, 60 * MINUTE_MS) == (
        "band 'night' of tariff tou (season 'summer' bands) starts or ends at 07:30, which is "
        "not on a 60-minute step")


@pytest.mark.parametrize(("zone", "offset"), [("Asia/Kolkata", "UTC+05:30"),
                                               ("America/St_Johns", "UTC-03:30")])
def test_a_time_zone_off_the_interval_grid_is_named(zone: str, offset: str) -> None:
    tariff = tou_tariff(calendar=Calendar(timezone=zone))
    assert interval_misalignment(tariff, 30 * MINUTE_MS) is None
    problem = interval_misalignment(tariff, 60 * MINUTE_MS)
    assert problem is not None and f"is {offset}, which is not" in problem
