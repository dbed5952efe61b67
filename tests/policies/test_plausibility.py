"""Readings are checked before they are charged; time is the control clock's, labels the wall's.

Every test here feeds the pure policy (``policies.meter.step``) what a misbehaving field or a
stepping wall clock would deliver, and checks that money moves only for what the meter could
physically have delivered, protection still trips on a sustained overload, and the relay is
never moved by a bad value.
"""

from __future__ import annotations

from collections.abc import Iterable

from hypothesis import given
from hypothesis import strategies as st

from policies import plausibility
from policies.meter import step
from policies.meter_policy import MeterPolicy
from policies.money import charge
from policies.records import (
    AcknowledgeAlarm,
    AlarmCleared,
    AlarmRaised,
    Effect,
    MeterState,
    Reading,
    RelayCommand,
    ReplaceMeter,
)
from tests.policies.builders import FLAT, HOUR_MS, local_ms, policy, tou_tariff

T0 = local_ms(2026, 3, 2, 9)  # Monday 09:00 local
PRICE = 100_000  # flat 1.00 per kWh in charge units per Wh (builders.flat_tariff)


def meter_policy(**kwargs: object) -> MeterPolicy:
    kwargs.setdefault("max_power_w", 30_000.0)
    kwargs.setdefault("max_register_wh", 99_999_999_900)
    return policy(**kwargs)


def feed(state: MeterState, messages: Iterable[object],
         pol: MeterPolicy) -> tuple[MeterState, list[Effect]]:
    effects: list[Effect] = []
    for message in messages:
        state, fx = step(state, message, pol)
        effects.extend(fx)
    return state, effects


def tamper(effects: list[Effect]) -> list[str]:
    return [e.detail for e in effects if isinstance(e, AlarmRaised) and e.kind == "tamper"]


def relays(effects: list[Effect]) -> list[RelayCommand]:
    return [e for e in effects if isinstance(e, RelayCommand)]


def running(pol: MeterPolicy, balance: int = 100_000) -> MeterState:
    """A meter with a good baseline of 1,000,000 Wh at T0 (wall and control clock agree)."""
    state, _ = step(MeterState.opening(balance), Reading(T0, 1_000_000, 1000.0, mono_ms=T0), pol)
    return state


def test_a_garbled_register_is_not_charged_and_the_next_good_one_charges_from_the_last() -> None:
    pol = meter_policy()
    state = running(pol)
    garbled = round(3e38 * 1000)  # a finite float32 in kWh, as a bit error gives
    bad, fx = step(state, Reading(T0 + 1000, garbled, 1000.0, mono_ms=T0 + 1000), pol)
    assert bad.balance == state.balance and bad.register_wh == state.register_wh
    assert bad.reading_mono_ms == state.reading_mono_ms and bad.relay == state.relay
    assert tamper(fx) == ["register_out_of_range"] and not relays(fx)
    # Again while it lasts: no second alarm, still nothing charged.
    bad, fx = step(bad, Reading(T0 + 2000, garbled, 1000.0, mono_ms=T0 + 2000), pol)
    assert not tamper(list(fx)) and bad.balance == state.balance
    good, _ = step(bad, Reading(T0 + 3000, 1_000_003, 1000.0, mono_ms=T0 + 3000), pol)
    assert good.register_wh == 1_000_003
    assert good.balance == state.balance - charge(3, PRICE, state.residue)[0]


def test_a_swapped_meter_is_refused_until_an_operator_replaces_it() -> None:
    pol = meter_policy()
    state = running(pol)
    jump = 5_000_000  # the new meter's register is 5,000 kWh higher
    swapped, fx = feed(state, [Reading(T0 + 1000, 1_000_003 + jump, 900.0, mono_ms=T0 + 1000),
                               Reading(T0 + 2000, 1_000_006 + jump, 900.0, mono_ms=T0 + 2000)],
                       pol)
    assert tamper(fx) == ["implausible_register"]
    assert swapped.balance == state.balance and swapped.register_wh == 1_000_000
    # The operator reads both registers: the old meter's last and the new one's first.
    replaced, fx = step(swapped, ReplaceMeter(1, 1_000_006 + jump, 1_000_004, "swap",
                                              T0 + 2500, mono_ms=T0 + 2500), pol)
    assert replaced.register_wh == 1_000_006 + jump and replaced.journal_seq == 1
    assert replaced.balance == state.balance - charge(4, PRICE, state.residue)[0]
    assert any(isinstance(e, AlarmCleared) and e.kind == "tamper" for e in fx)
    assert not replaced.alarms.active
    after, fx = step(replaced, Reading(T0 + 3000, 1_000_009 + jump, 900.0, mono_ms=T0 + 3000),
                     pol)
    assert not tamper(list(fx))
    assert after.register_wh == 1_000_009 + jump
    # A replay of the same journal entry changes nothing.
    again, fx = step(after, ReplaceMeter(1, 7, 1, "swap", T0 + 2500), pol)
    assert again is after and fx == ()


def test_a_replacement_with_a_final_register_below_the_last_reading_is_refused() -> None:
    pol = meter_policy()
    state = running(pol)
    new, fx = step(state, ReplaceMeter(1, 0, 999_000, "swap", T0 + 10), pol)
    assert new is state and fx[0].code == "bad_request"  # type: ignore[attr-defined]


def test_the_step_bound_follows_the_time_since_the_last_good_reading() -> None:
    pol = meter_policy(max_power_w=10_000.0)
    state = running(pol)
    # 10 kW for (1 s + 1 s slack) x 1.25 = 6.9 Wh, + 1 Wh resolution at 1 MWh.
    limit = plausibility.step_allowance_wh(1000, 1_000_000, pol)
    assert 7.0 < limit < 8.5
    ok, fx = step(state, Reading(T0 + 1000, 1_000_007, 1000.0, mono_ms=T0 + 1000), pol)
    assert ok.register_wh == 1_000_007 and not tamper(fx)
    too_much, fx = step(state, Reading(T0 + 1000, 1_000_009, 1000.0, mono_ms=T0 + 1000), pol)
    assert too_much.register_wh == 1_000_000 and tamper(fx) == ["implausible_register"]
    # A day offline at ~4 kW: plausible once the elapsed time is known.
    day = 24 * HOUR_MS
    back, fx = step(too_much, Reading(T0 + day, 1_100_000, 1000.0, mono_ms=T0 + day), pol)
    assert back.register_wh == 1_100_000 and not tamper(fx)


def test_a_float32_register_near_its_top_moves_in_big_quanta_and_stays_plausible() -> None:
    pol = meter_policy(max_power_w=10_000.0)
    high = 9_999_000_000  # ~10^7 kWh: a float32 kWh register moves in ~1 kWh steps here
    state, _ = step(MeterState.opening(10**7), Reading(T0, high, 1000.0), pol)
    state, fx = step(state, Reading(T0 + 1000, high + 1000, 1000.0), pol)
    assert state.register_wh == high + 1000 and not tamper(fx)


def test_one_absurd_power_sample_is_not_an_overload_and_a_sustained_one_trips() -> None:
    pol = meter_policy(overload_w=5_000.0, overload_delay_ms=2_000)
    state = running(pol)
    r = 1_000_000

    def reading(seconds: int, power: float) -> Reading:
        return Reading(T0 + seconds * 1000, r + seconds, power, mono_ms=T0 + seconds * 1000)

    state, fx = feed(state, [reading(1, 1000.0), reading(2, 3e38), reading(3, 1000.0),
                             reading(4, 3e38), reading(5, 1000.0)], pol)
    assert tamper(fx) == ["implausible_power"] and not relays(fx)
    assert state.relay.closed and state.power_w == 1000.0
    # An absurd sample in the middle of a real overload neither trips nor resets it.
    state, fx = feed(state, [reading(6, 20_000.0), reading(7, 3e38), reading(8, 20_000.0)], pol)
    [cut] = relays(fx)
    assert not cut.closed and cut.reason == "overload"


def test_charging_and_protection_go_on_through_wall_clock_steps_both_ways() -> None:
    pol = meter_policy(overload_w=5_000.0, overload_delay_ms=2_000)
    state = running(pol)
    register = 1_000_000
    charged = 0
    for second in range(1, 41):
        # Wall clock: +1 h from second 10, back to -1 h from second 20, a single future
        # stamp at second 30; the control clock just runs.
        offset = HOUR_MS if 10 <= second < 20 else -HOUR_MS if 20 <= second < 30 else 0
        if second == 30:
            offset = 24 * HOUR_MS
        register += 2
        before = state
        power = 20_000.0 if second >= 36 else 1000.0
        state, _ = step(state, Reading(T0 + second * 1000 + offset, register, power,
                                        mono_ms=T0 + second * 1000), pol)
        assert state.register_wh == register, second  # never stale, never refused
        assert state.reading_ms > before.reading_ms  # labels only move forward...
        assert state.reading_ms - before.reading_ms <= 1000 + 100 + 2  # ...and never jump
        charged += before.balance - state.balance
    assert charged == charge(80, PRICE, 0)[0]
    assert not state.relay.closed and state.relay.reason == "overload"  # 36..38 s: tripped


def test_labels_catch_up_with_the_wall_clock_after_a_step() -> None:
    last = T0
    wall = T0 + HOUR_MS
    for _ in range(620):  # 10 h 20 min of 1-minute intervals
        last = plausibility.slewed_label(last, wall, 60_000)
        wall += 60_000
    assert last == wall - 60_000  # a 1 h step absorbed at 1/10 of the elapsed time


def test_a_meter_cut_by_a_bad_value_is_impossible_the_relay_stays() -> None:
    pol = meter_policy(alarm_levels=(5000,))
    state = running(pol, balance=1_000)  # 10.00 left
    state, fx = step(state, Reading(T0 + 1000, 1_000_000 + 5_000_000_000, 100.0,
                                    mono_ms=T0 + 1000), pol)
    assert state.balance == 1_000 and state.relay.closed and not relays(fx)


def test_acknowledging_the_tamper_alarm_clears_it_and_a_new_bad_value_raises_it_again() -> None:
    pol = meter_policy()
    state = running(pol)
    state, fx = step(state, Reading(T0 + 1000, 10**16, 100.0, mono_ms=T0 + 1000), pol)
    [raised] = [e for e in fx if isinstance(e, AlarmRaised)]
    state, _ = step(state, AcknowledgeAlarm(raised.alarm_id, T0 + 1500), pol)
    assert not state.alarms.active
    state, fx = step(state, Reading(T0 + 2000, 10**16, 100.0, mono_ms=T0 + 2000), pol)
    assert tamper(fx) == ["register_out_of_range"]


@given(st.lists(st.tuples(st.integers(1, 5_000), st.integers(0, 40),
                          st.sampled_from([0, 0, 0, HOUR_MS, -HOUR_MS, 7 * 24 * HOUR_MS]),
                          st.booleans()),
                min_size=1, max_size=60))
def test_money_moves_exactly_for_the_plausible_deltas_whatever_the_clocks_do(
    steps: list[tuple[int, int, int, bool]],
) -> None:
    """Whatever the wall clock does and whatever garbage appears, the charge is the flat price
    of exactly the register advance the policy accepted, and that advance is the true one."""
    pol = meter_policy(tariff=None, max_power_w=30_000.0)
    state = running(pol, balance=10**9)
    mono = T0
    true_register = 1_000_000
    for elapsed, wh, offset, garbled in steps:
        mono += elapsed
        true_register += wh
        shown = true_register * 10**9 if garbled else true_register
        state, _ = step(state, Reading(mono + offset, shown, 500.0, mono_ms=mono), pol)
        assert state.register_wh <= true_register
    state, _ = step(state, Reading(mono + 10**7, true_register, 500.0, mono_ms=mono + 10**7),
                    pol)
    assert state.register_wh == true_register
    assert state.balance == 10**9 - charge(true_register - 1_000_000, PRICE, 0)[0]


def test_time_of_use_charges_follow_the_slewed_label_not_the_stepped_wall_clock() -> None:
    pol = meter_policy(tariff=tou_tariff())
    state = running(pol, balance=10**7)  # 09:00: the flat band
    # The wall clock jumps to 19:00 (peak) for one reading; the label stays near 09:00.
    state, _ = step(state, Reading(T0 + 10 * HOUR_MS, 1_000_010, 100.0, mono_ms=T0 + 1000),
                    pol)
    assert state.balance == 10**7 - charge(10, FLAT, 0)[0]
    assert state.reading_ms - T0 <= 1102
