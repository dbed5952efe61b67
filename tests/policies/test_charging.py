"""Charging readings: baseline, stale, rollback, exact money over splits, history buckets.

The plausibility checks have their own tests (test_plausibility.py)."""

from __future__ import annotations

import attrs
from hypothesis import given
from hypothesis import strategies as st

from policies import tariff as pricing
from policies.charging import charge_reading
from policies.meter_policy import MeterPolicy
from policies.money import CHARGE_UNITS_PER_MINOR
from policies.records import AlarmRaised, Effect, IntervalClosed, MeterState, Reading
from tests.policies.builders import FLAT, HOUR_MS, flat_tariff, local_ms, policy, tou_tariff

T0 = local_ms(2026, 3, 2, 9)  # Monday 09:00 local, inside the flat band


def feed(
    state: MeterState, readings: list[Reading], pol: MeterPolicy
) -> tuple[MeterState, list[Effect]]:
    effects: list[Effect] = []
    for r in readings:
        state, fx = charge_reading(state, r, pol)
        effects.extend(fx)
    return state, effects


def test_first_reading_is_a_baseline() -> None:
    pol = policy()
    state, fx = charge_reading(MeterState.opening(10_000), Reading(T0, 5_000_000, 10.0), pol)
    assert (state.balance, state.register_wh, state.reading_ms) == (10_000, 5_000_000, T0)
    assert state.bucket_start_ms == T0 - T0 % pol.interval_ms
    assert state.month == pricing.month_at(pol.tariff, T0)
    assert fx == ()


def test_charge_at_flat_price_with_residue_carry() -> None:
    pol = policy(flat_tariff("1.00"))  # 1.00 per kWh = 0.1 minor per Wh
    state, _ = charge_reading(MeterState.opening(10_000), Reading(T0, 1000, 0.0), pol)
    state, _ = charge_reading(state, Reading(T0 + 1000, 1015, 0.0), pol)
    assert (state.balance, state.residue) == (10_000 - 1, 500_000)
    state, _ = charge_reading(state, Reading(T0 + 2000, 1020, 0.0), pol)
    assert (state.balance, state.residue) == (10_000 - 2, 0)
    assert state.month_wh == 20 and state.bucket_wh == 20 and state.bucket_minor == 2


def test_stale_and_duplicate_readings_are_ignored() -> None:
    pol = policy()
    state, _ = feed(MeterState.opening(10_000), [Reading(T0, 1000, 0.0),
                                                  Reading(T0 + 5000, 2000, 0.0)], pol)
    for r in (Reading(T0 + 5000, 3000, 1.0), Reading(T0 + 1, 9000, 1.0)):
        new, fx = charge_reading(state, r, pol)
        assert new is state and fx == ()


def test_register_rollback_is_tamper_and_keeps_the_baseline() -> None:
    pol = policy()
    state, _ = feed(MeterState.opening(10_000), [Reading(T0, 5000, 0.0),
                                                  Reading(T0 + 1000, 6000, 0.0)], pol)
    balance = state.balance
    state, fx = charge_reading(state, Reading(T0 + 2000, 10, 0.0), pol)
    assert state.balance == balance and state.register_wh == 6000
    [raised] = fx
    assert isinstance(raised, AlarmRaised)
    assert (raised.kind, raised.detail) == ("tamper", "register_rollback")
    state, _ = charge_reading(state, Reading(T0 + 3000, 6100, 0.0), pol)
    assert state.balance == balance - 10  # charged from the last good register


def test_history_buckets_close_with_exact_energy_and_money() -> None:
    pol = policy(tou_tariff(), interval_ms=900_000)
    start = local_ms(2026, 3, 2, 7, 50)  # valley until 08:00, then flat
    state, _ = charge_reading(MeterState.opening(10**6), Reading(start, 0, 0.0), pol)
    # 30 minutes, 3000 Wh: 07:50-08:00 (valley), 08:00-08:15, 08:15-08:20 (flat)
    state, fx = charge_reading(state, Reading(start + 30 * 60_000, 3000, 0.0), pol)
    valley = 1000 * 40_000 // 1_000_000
    flat = 1500 * FLAT // 1_000_000
    # Each carries where the meter stood at its end: register and balance after its charge.
    assert fx == (
        IntervalClosed(local_ms(2026, 3, 2, 7, 45), 1000, valley, "valley", 1000,
                       10**6 - valley),
        IntervalClosed(local_ms(2026, 3, 2, 8, 0), 1500, flat, "flat", 2500,
                       10**6 - valley - flat),
    )
    assert state.bucket_start_ms == local_ms(2026, 3, 2, 8, 15) and state.bucket_wh == 500
    assert 10**6 - state.balance == sum(e.minor for e in fx) + state.bucket_minor


def test_reading_exactly_at_bucket_end_closes_the_bucket() -> None:
    pol = policy(interval_ms=900_000)
    b = T0 - T0 % 900_000
    state, _ = charge_reading(MeterState.opening(10**6), Reading(b + 1000, 0, 0.0), pol)
    state, fx = charge_reading(state, Reading(b + 900_000, 100, 0.0), pol)
    assert fx == (IntervalClosed(b, 100, 10, "flat", 100, 10**6 - 10),)
    assert (state.bucket_start_ms, state.bucket_wh) == (b + 900_000, 0)


# --- properties ---------------------------------------------------------------------------

readings_gaps = st.lists(
    st.tuples(st.integers(1, 6 * HOUR_MS), st.integers(0, 5000), st.booleans()),
    min_size=1, max_size=30,
)


def _stream(gaps: list[tuple[int, int, bool]], start: int) -> list[Reading]:
    ts, reg = start, 1_000_000
    out = [Reading(ts, reg, 0.0)]
    for dt_ms, dwh, _ in gaps:
        ts += dt_ms
        reg += dwh
        out.append(Reading(ts, reg, 0.0))
    return out


@given(readings_gaps, st.integers(local_ms(2026, 1, 1), local_ms(2026, 12, 1)),
       st.sampled_from(["0.56831", "1.00", "0.01", "3.33333"]))
def test_flat_any_split_charges_exactly_the_whole(
    gaps: list[tuple[int, int, bool]], start: int, price: str
) -> None:
    """Any intermediate register values and timestamps: same money as one big reading."""
    pol = policy(flat_tariff(price))
    stream = _stream(gaps, start)
    split, effects = feed(MeterState.opening(10**9), stream, pol)
    whole, _ = feed(MeterState.opening(10**9), [stream[0], stream[-1]], pol)
    assert (split.balance, split.residue) == (whole.balance, whole.residue)
    wh = stream[-1].register_wh - stream[0].register_wh
    exact = wh * pricing.segment_at(pol.tariff, start)[2]
    assert 10**9 - split.balance == exact // CHARGE_UNITS_PER_MINOR
    # History: closed buckets plus the open one account for all energy and money.
    closed = [e for e in effects if isinstance(e, IntervalClosed)]
    assert sum(e.wh for e in closed) + split.bucket_wh == wh
    assert sum(e.minor for e in closed) + split.bucket_minor == 10**9 - split.balance
    assert all(e.wh > 0 and e.minor >= 0 for e in closed)


@given(readings_gaps, st.integers(local_ms(2026, 1, 1), local_ms(2026, 12, 1)),
       st.sampled_from([900_000, 3_600_000]))
def test_tou_split_at_interpolated_register_charges_exactly_the_whole(
    gaps: list[tuple[int, int, bool]], start: int, interval: int
) -> None:
    """Readings at split points carrying the (exactly) interpolated register: same money."""
    pol = policy(tou_tariff(), interval_ms=interval)
    minute = 60_000
    start -= start % minute
    n = sum(max(g[0] // minute, 1) for g in gaps)
    per_minute = gaps[0][1] % 20
    first = Reading(start, 1000, 0.0)
    last = Reading(start + n * minute, 1000 + n * per_minute, 0.0)
    # Split points: the cumulative minute marks chosen by the gaps that are flagged.
    marks, k = [], 0
    for g in gaps:
        k += max(g[0] // minute, 1)
        if g[2] and k < n:
            marks.append(k)
    middle = [Reading(start + k * minute, 1000 + k * per_minute, 0.0) for k in marks]
    whole, whole_fx = feed(MeterState.opening(10**9), [first, last], pol)
    split, split_fx = feed(MeterState.opening(10**9), [first, *middle, last], pol)
    assert (split.balance, split.residue, split.month_wh) == (
        whole.balance, whole.residue, whole.month_wh)
    # Buckets see the same energy whichever way the stream was cut.
    assert [e.wh for e in split_fx if isinstance(e, IntervalClosed)] == [
        e.wh for e in whole_fx if isinstance(e, IntervalClosed)]
    assert split.bucket_wh == whole.bucket_wh
    # Each bucket lies in one band (the interval fits the tariff), and carries that band.
    assert pricing.interval_misalignment(pol.tariff, interval) is None
    for e in split_fx:
        if isinstance(e, IntervalClosed):
            assert e.band == pricing.band_name_at(pol.tariff, e.start_ms) == (
                pricing.band_name_at(pol.tariff, e.start_ms + interval - 1))


@given(st.lists(st.tuples(st.integers(-5 * HOUR_MS, 5 * HOUR_MS),
                          st.integers(-10_000, 10_000)), max_size=40))
def test_charges_are_never_negative_and_inputs_never_mutated(
    steps: list[tuple[int, int]]
) -> None:
    pol = policy(tou_tariff(), interval_ms=900_000)
    state = MeterState.opening(10**6)
    ts, reg = T0, 50_000
    for dt_ms, dwh in steps:
        ts, reg = max(ts + dt_ms, 0), max(reg + dwh, 0)
        before = attrs.asdict(state, recurse=True)
        new, _ = charge_reading(state, Reading(ts, reg, 0.0), pol)
        assert attrs.asdict(state, recurse=True) == before
        assert new.balance <= state.balance
        assert 0 <= new.residue < CHARGE_UNITS_PER_MINOR
        state = new
