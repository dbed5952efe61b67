"""Energy insights (policies.insights): the figures by hand, and their properties."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from fractions import Fraction

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.insights import (
    Comparison,
    Load,
    LocalClock,
    MeterSeries,
    TenantFigures,
    band_order,
    combine,
    compare,
    compare_all,
    figures,
    fixed,
    median,
    meter_load,
    peers_of,
    percents,
    slot_length,
)
from policies.money import parse_price
from policies.tariff import band_name_at
from policies.tariff_records import Band, Calendar, Tariff
from tests.policies.builders import HOUR_MS, TZ, local_ms, tou_tariff

QUARTER = 900_000
CLOCK = LocalClock(TZ)
DAY0 = local_ms(2026, 11, 10)  # a Tuesday, local midnight in Shanghai


def hours(meter: str, whs: list[int], tariff: Tariff | None = None, start: int = DAY0,
          interval: int = HOUR_MS) -> MeterSeries:
    """Consecutive intervals from ``start``, banded as the TOU builder's tariff bands them
    (valley 00-08 0.40, flat 08-18 0.80, peak 18-24 1.20)."""
    tariff = tariff or tou_tariff()
    starts = tuple(start + k * interval for k in range(len(whs)))
    bands = tuple(band_name_at(tariff, s) for s in starts)
    return MeterSeries(meter, interval, tariff, starts, tuple(whs), bands)


def one(series: MeterSeries, **kwargs: int) -> TenantFigures:
    load = meter_load(series, series.interval_ms, CLOCK)
    return figures("t", load, CLOCK, meters=1, **kwargs)


# --- by hand ------------------------------------------------------------------------------


def test_a_day_by_hand() -> None:
    # 24 hours: 1 kWh each in the valley (0-7), 3 kWh in the flat (8-17), 2 kWh in the peak
    # (18-23), except 4 kWh at 20:00. 8 + 30 + 14 = 52 kWh.
    whs = [1000] * 8 + [3000] * 10 + [2000, 2000, 4000, 2000, 2000, 2000]
    tenant = one(hours("M", whs), area_m2=26)
    assert [(b.band, b.wh, b.share) for b in tenant.bands] == [
        ("peak", 14_000, Fraction(14, 52)), ("flat", 30_000, Fraction(30, 52)),
        ("valley", 8_000, Fraction(8, 52))]
    assert (tenant.peak_w, tenant.peak_slot_ms) == (4000, DAY0 + 20 * HOUR_MS)
    assert tenant.average_w == Fraction(52_000, 24)
    assert tenant.load_factor == Fraction(52_000, 24 * 4000)
    assert (tenant.night_slots, tenant.night_base_w) == (5, 1000)  # 00:00-04:00
    assert tenant.night_base_share == Fraction(1000 * 24, 52_000)
    assert tenant.wh_per_m2 == 2000
    # 10 % of 14 kWh = 1.4 kWh, from 1.20 to 0.40: 1.12.
    assert (tenant.shift.peak_wh, tenant.shift.moved_wh, tenant.shift.minor) == (
        14_000, 1400, 112)


def test_the_saving_is_rounded_down_once_per_tenant() -> None:
    # Peak 1.20 less valley 0.40: 0.80 a kWh, 80,000 charge units a Wh.
    def two_meters(wh: int, shift_bp: int) -> int:
        loads = [meter_load(hours(m, [wh], start=DAY0 + 18 * HOUR_MS), HOUR_MS, CLOCK)
                 for m in ("A", "B")]
        return figures("t", combine(loads, HOUR_MS), CLOCK, meters=2,
                       shift_bp=shift_bp).shift.minor

    assert two_meters(1, 100_00) == 0  # 2 Wh x 0.80 a kWh: 0.0016
    # 2 x 1019 Wh x 0.80 a kWh x 50 % = 0.8152 -> 0.81; rounding each meter's 0.4076 first
    # would have given 0.80.
    assert two_meters(1019, 50_00) == 81


def test_a_day_without_a_valley_band_moves_nothing() -> None:
    weekend = (Band("flat", 0, 1080, parse_price("0.80")),
               Band("peak", 1080, 1440, parse_price("1.20")))
    tariff = tou_tariff(weekend_bands=weekend)
    saturday = local_ms(2026, 11, 14, 18)
    tenant = one(hours("M", [1000, 1000], tariff, start=saturday))
    assert (tenant.share_of("peak"), tenant.shift.peak_wh, tenant.shift.minor) == (1, 0, 0)
    tuesday = one(hours("M", [1000, 1000], tariff, start=DAY0 + 18 * HOUR_MS))
    assert (tuesday.shift.peak_wh, tuesday.shift.minor) == (2000, 16)  # 200 Wh x 0.80


def test_a_dearer_valley_is_a_negative_saving_rounded_down() -> None:
    upside_down = Tariff("odd", (Band("valley", 0, 480, parse_price("1.50")),
                                 Band("flat", 480, 1080, parse_price("0.80")),
                                 Band("peak", 1080, 1440, parse_price("1.00"))),
                         calendar=Calendar(TZ))
    tenant = one(hours("M", [1001], upside_down, start=DAY0 + 19 * HOUR_MS))
    # 100.1 Wh moved from 1.00 to 1.50: -0.05005, rounded down to -0.06.
    assert tenant.shift.minor == -6


def test_the_band_price_at_the_time_is_the_configured_tariffs() -> None:
    # Recorded as peak, but the tariff now says 19:00 is a 2.00 "peak" and the valley 0.50.
    dearer = Tariff("new", (Band("valley", 0, 480, parse_price("0.50")),
                            Band("flat", 480, 1140, parse_price("0.80")),
                            Band("peak", 1140, 1440, parse_price("2.00"))),
                    calendar=Calendar(TZ))
    series = attrs.evolve(hours("M", [1000, 1000], start=DAY0 + 18 * HOUR_MS), tariff=dearer)
    # 18:00 is flat now (0.30 over the valley), 19:00 peak (1.50): 10 % of each kWh: 0.18.
    assert one(series).shift.minor == 18


def test_slots_of_a_tenant_with_two_interval_lengths() -> None:
    assert slot_length([HOUR_MS, QUARTER]) == HOUR_MS
    assert slot_length([20 * 60_000, QUARTER]) == HOUR_MS
    quarters = hours("Q", [100, 200, 300, 400, 500], interval=QUARTER)  # 00:00-01:15
    hourly = hours("H", [1000, 2000])
    slot = slot_length([QUARTER, HOUR_MS])
    load = combine([meter_load(quarters, slot, CLOCK), meter_load(hourly, slot, CLOCK)], slot)
    assert dict(load.slots) == {DAY0: 1000 + 1000, DAY0 + HOUR_MS: 500 + 2000}
    with pytest.raises(ValueError, match="not a multiple"):
        meter_load(hourly, QUARTER, CLOCK)
    with pytest.raises(ValueError, match="not a multiple"):
        combine([load], QUARTER)


def test_a_missing_slot_is_not_a_zero_slot() -> None:
    with_zero = one(hours("M", [2000, 0]))
    missing = one(hours("M", [2000]))
    assert (with_zero.slots, with_zero.load_factor) == (2, Fraction(1, 2))
    assert (missing.slots, missing.load_factor) == (1, 1)


def test_no_energy_has_no_ratios() -> None:
    empty = one(hours("M", []))
    assert (empty.wh, empty.slots, empty.load_factor, empty.average_w, empty.night_base_w,
            empty.share_of("peak"), empty.peak_slot_ms) == (0, 0, None, None, None, None, None)
    zero = one(hours("M", [0, 0]))
    assert (zero.load_factor, zero.night_base_share, zero.share_of("peak")) == (None, None, None)
    assert zero.night_base_w == 0


def test_the_night_follows_the_wall_clock_on_a_dst_day() -> None:
    berlin = LocalClock("Europe/Berlin")
    tariff = Tariff.flat("flat", parse_price("1.00"), Calendar("Europe/Berlin"))
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST. Local midnight is 23:00 UTC the day before;
    # the hours from it are 00, 01, 03, 04, 05 on the wall clock: four night slots.
    midnight = int(dt.datetime(2026, 3, 28, 23, tzinfo=dt.UTC).timestamp() * 1000)
    series = hours("M", [100, 200, 300, 400, 5000], tariff, start=midnight)
    load = meter_load(series, HOUR_MS, berlin)
    tenant = figures("t", load, berlin, meters=1)
    assert tenant.night_slots == 4
    assert tenant.night_base_w == 250  # the median of 100, 200, 300, 400


def test_median() -> None:
    assert median([]) is None
    assert median([Fraction(3), Fraction(1), Fraction(2)]) == 2
    assert median([Fraction(4), Fraction(1), Fraction(2), Fraction(10)]) == 3


def test_fixed_rounds_half_away_from_zero() -> None:
    assert [fixed(Fraction(n, 200), 2) for n in (1, -1, 3)] == ["0.01", "-0.01", "0.02"]
    assert fixed(Fraction(1, 3), 0) == "0"
    assert fixed(Fraction(2, 3), 3) == "0.667"


def test_percents_by_hand() -> None:
    assert percents([1, 1, 1]) == ("33.4", "33.3", "33.3")  # ties: the first gets the unit
    assert percents([0, 5]) == ("0.0", "100.0")
    assert percents([0, 0]) == ("0.0", "0.0")
    assert percents([2, 1], 0) == ("67", "33")
    with pytest.raises(ValueError):
        percents([1, -1])


def test_band_order() -> None:
    assert band_order(["valley", "sharp", "flat", "peak", "tiered"]) == [
        "peak", "flat", "valley", "sharp", "tiered"]


def test_shift_must_be_a_percentage() -> None:
    with pytest.raises(ValueError, match="0 to 100"):
        one(hours("M", [1]), shift_bp=100_01)


# --- peers --------------------------------------------------------------------------------


def tenant_with(name: str, whs: list[int], area_m2: int = 0) -> TenantFigures:
    return attrs.evolve(one(hours("M", whs), area_m2=area_m2), tenant=name)


def test_peers_of_a_sector_a_lone_tenant_and_one_without() -> None:
    sectors = {"a": "machining", "b": "machining", "c": "cold-store", "d": ""}
    everyone = ["a", "b", "c", "d", "e"]
    assert peers_of("a", sectors, everyone) == ("machining", ["b"])
    assert peers_of("c", sectors, everyone) == ("", ["a", "b", "d", "e"])  # alone in its own
    assert peers_of("d", sectors, everyone) == ("", ["a", "b", "c", "e"])
    assert peers_of("e", sectors, everyone) == ("", ["a", "b", "c", "d"])  # not described


def test_compare_takes_the_median_of_the_peers_that_have_the_figure() -> None:
    everyone = {
        "a": tenant_with("a", [1000, 1000], area_m2=10),  # 2 kWh, lf 1, 0.2 kWh/m2
        "b": tenant_with("b", [1000, 3000], area_m2=40),  # 4 kWh, lf 2/3, 0.1 kWh/m2
        "c": tenant_with("c", [0, 4000]),  # lf 1/2, no area
        "d": tenant_with("d", []),  # no energy: no figure at all
    }
    result = compare("a", everyone, {})
    assert result == Comparison("", 3, Fraction(0), Fraction(7, 12), Fraction(100),
                                Fraction(1))  # valley only; (2/3 + 1/2) / 2; b's Wh/m2
    alone = compare("a", {"a": everyone["a"]}, {})
    assert alone == Comparison("", 0, None, None, None, None)


# --- properties ---------------------------------------------------------------------------

prices = st.integers(min_value=0, max_value=parse_price("5.00"))


@st.composite
def tariffs(draw: st.DrawFn, valley_cheaper: bool = True) -> Tariff:
    valley = draw(prices)
    flat = draw(prices)
    peak = draw(st.integers(min_value=valley, max_value=valley + parse_price("5.00"))
                if valley_cheaper else prices)
    return Tariff("t", (Band("valley", 0, 480, valley), Band("flat", 480, 1080, flat),
                        Band("peak", 1080, 1440, peak)), calendar=Calendar(TZ))


@st.composite
def meters(draw: st.DrawFn, tariff: Tariff) -> MeterSeries:
    interval = draw(st.sampled_from([QUARTER, HOUR_MS, 2 * HOUR_MS]))
    first = draw(st.integers(min_value=0, max_value=3 * 86_400_000 // interval))
    count = draw(st.integers(min_value=0, max_value=60))
    gaps = draw(st.lists(st.integers(min_value=1, max_value=5), min_size=count, max_size=count))
    starts, at = [], DAY0 + first * interval
    for gap in gaps:
        starts.append(at)
        at += gap * interval
    whs = draw(st.lists(st.integers(min_value=0, max_value=100_000), min_size=count,
                        max_size=count))
    return MeterSeries("M", interval, tariff, tuple(starts), tuple(whs),
                       tuple(band_name_at(tariff, s) for s in starts))


@st.composite
def tenants(draw: st.DrawFn) -> tuple[TenantFigures, list[Load]]:
    tariff = draw(tariffs())
    series = draw(st.lists(meters(tariff), min_size=1, max_size=3))
    slot = slot_length(s.interval_ms for s in series)
    loads = [meter_load(s, slot, CLOCK) for s in series]
    shift = draw(st.integers(min_value=0, max_value=100_00))
    return figures("t", combine(loads, slot), CLOCK, meters=len(series), shift_bp=shift), loads


@given(tenants())
def test_shares_add_up_to_one_and_ratios_stay_in_range(drawn: tuple[TenantFigures, list[Load]]
                                                        ) -> None:
    tenant, loads = drawn
    assert tenant.wh == sum(load.wh for load in loads)
    if tenant.wh:
        assert sum(b.share for b in tenant.bands) == 1
        assert sum(Decimal(text) for text in percents([b.wh for b in tenant.bands])) == 100
        assert tenant.load_factor is not None and 0 < tenant.load_factor <= 1
        assert tenant.average_w is not None and tenant.average_w <= tenant.peak_w
        if tenant.night_base_w is not None:
            assert 0 <= tenant.night_base_w <= tenant.peak_w
    else:
        assert tenant.load_factor is None
    assert tenant.shift.minor >= 0  # the valley is never dearer here
    assert tenant.shift.moved_wh <= tenant.shift.peak_wh <= (tenant.share_of("peak") or 0) * \
        tenant.wh


@given(tariffs(), st.data())
def test_more_shift_never_saves_less(tariff: Tariff, data: st.DataObject) -> None:
    series = data.draw(meters(tariff))
    load = meter_load(series, series.interval_ms, CLOCK)
    low, high = sorted(data.draw(st.lists(st.integers(0, 100_00), min_size=2, max_size=2)))
    saving = [figures("t", load, CLOCK, meters=1, shift_bp=bp).shift.minor for bp in (low, high)]
    assert 0 <= saving[0] <= saving[1]


@given(st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=8),
       st.integers(min_value=0, max_value=3))
def test_percents_add_up_and_stay_close(parts: list[int], places: int) -> None:
    texts = percents(parts, places)
    total = sum(parts)
    if not total:
        assert all(Decimal(text) == 0 for text in texts)
        return
    assert sum(Decimal(text) for text in texts) == 100
    for part, text in zip(parts, texts, strict=True):
        assert abs(Fraction(Decimal(text)) - Fraction(100 * part, total)) < \
            Fraction(1, 10**places)


@given(tenants(), tenants(), tenants())
def test_a_median_lies_between_the_peers(a: tuple[TenantFigures, list[Load]],
                                         b: tuple[TenantFigures, list[Load]],
                                         c: tuple[TenantFigures, list[Load]]) -> None:
    everyone = {name: attrs.evolve(drawn[0], tenant=name)
                for name, drawn in zip("abc", (a, b, c), strict=True)}
    result = compare("a", everyone, {})
    factors = [f.load_factor for f in (everyone["b"], everyone["c"]) if f.load_factor]
    if factors:
        assert result.load_factor is not None
        assert min(factors) <= result.load_factor <= max(factors)
    else:
        assert result.load_factor is None


@given(st.lists(tenants(), min_size=1, max_size=6),
       st.lists(st.sampled_from(["", "machining", "cold-store"]), min_size=6, max_size=6))
def test_comparing_everyone_at_once_is_comparing_each(drawn: list[tuple[TenantFigures,
                                                                        list[Load]]],
                                                      sector_list: list[str]) -> None:
    everyone = {f"t{n}": attrs.evolve(tenant, tenant=f"t{n}")
                for n, (tenant, _) in enumerate(drawn)}
    sectors = {name: sector for name, sector in zip(everyone, sector_list, strict=False)}
    result = compare_all(everyone, sectors)
    assert result == {name: compare(name, everyone, sectors) for name in everyone}
