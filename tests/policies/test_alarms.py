"""Alarm bookkeeping: low-balance levels with hysteresis, zero balance, tamper, ack, summary."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from policies import alarms
from policies.meter import step
from policies.records import (
    AcknowledgeAlarm,
    AlarmAcknowledged,
    AlarmCleared,
    AlarmRaised,
    AlarmState,
    CommandRejected,
    MeterState,
    Reading,
)
from tests.policies.builders import local_ms, policy

T0 = local_ms(2026, 3, 2, 12)
LEVELS = (5000, 2000)


def test_low_balance_levels_and_level_change_raises_a_new_alarm() -> None:
    pol = policy(alarm_levels=LEVELS, alarm_hysteresis=100)
    state = AlarmState()
    state, fx = alarms.update_balance_alarms(state, 6000, pol, T0)
    assert fx == () and state.low_level == 0
    state, fx = alarms.update_balance_alarms(state, 5000, pol, T0 + 1)
    assert fx == (AlarmRaised("1", "low_balance", 1, T0 + 1),)
    state, fx = alarms.update_balance_alarms(state, 1999, pol, T0 + 2)
    assert fx == (AlarmCleared("1", "low_balance", T0 + 2), AlarmRaised("2", "low_balance", 2,
                                                                            T0 + 2))
    state, fx = alarms.update_balance_alarms(state, 2100, pol, T0 + 3)
    assert fx == () and state.low_level == 2  # inside the hysteresis
    state, fx = alarms.update_balance_alarms(state, 2101, pol, T0 + 4)
    assert fx == (AlarmCleared("2", "low_balance", T0 + 4), AlarmRaised("3", "low_balance", 1,
                                                                            T0 + 4))
    state, fx = alarms.update_balance_alarms(state, 0, pol, T0 + 5)
    assert [e.kind for e in fx if isinstance(e, AlarmRaised)] == ["low_balance", "zero_balance"]
    assert alarms.summary_alarm(state) == "zero_balance"
    state, fx = alarms.update_balance_alarms(state, 100_000, pol, T0 + 6)
    assert {e.kind for e in fx if isinstance(e, AlarmCleared)} == {"low_balance", "zero_balance"}
    assert state.active == () and alarms.summary_alarm(state) == "none"


@given(st.lists(st.integers(-200, 200), min_size=1, max_size=60),
       st.sampled_from([5000, 2000]), st.integers(1, 300))
def test_levels_do_not_flap_within_the_hysteresis(
    wobble: list[int], threshold: int, hysteresis: int
) -> None:
    """Once a level is reached, wobbling within the hysteresis never changes it."""
    pol = policy(alarm_levels=LEVELS, alarm_hysteresis=hysteresis)
    state, _ = alarms.update_balance_alarms(AlarmState(), threshold, pol, T0)
    level = state.low_level
    for i, w in enumerate(wobble):
        balance = threshold + min(abs(w), hysteresis)
        state, fx = alarms.update_balance_alarms(state, balance, pol, T0 + i + 1)
        assert state.low_level == level and fx == ()


def test_acknowledge_and_unknown_alarm() -> None:
    pol = policy(alarm_levels=LEVELS)
    state = MeterState.opening(6000)
    state, fx = step(state, Reading(T0, 0, 0.0), pol)
    assert fx == ()
    state, fx = step(state, Reading(T0 + 1000, 40_000, 0.0), pol)  # 0.1 minor per Wh
    [raised] = [e for e in fx if isinstance(e, AlarmRaised)]
    assert (raised.kind, raised.level) == ("low_balance", 2)
    state, fx = step(state, AcknowledgeAlarm(raised.alarm_id, T0 + 2000), pol)
    assert fx == (AlarmAcknowledged(raised.alarm_id, "low_balance", T0 + 2000),)
    assert state.alarms.active[0].acknowledged
    same, fx = step(state, AcknowledgeAlarm(raised.alarm_id, T0 + 3000), pol)
    assert same is state and fx == ()
    same, fx = step(state, AcknowledgeAlarm("999", T0 + 3000), pol)
    assert same is state and fx == (CommandRejected("unknown_alarm", "no active alarm '999'"),)


def test_tamper_flag_is_latched_until_acknowledged() -> None:
    pol = policy()
    state, _ = step(MeterState.opening(10**6), Reading(T0, 0, 0.0), pol)
    state, fx = step(state, Reading(T0 + 1000, 1, 0.0, tamper=True), pol)
    [raised] = fx
    assert isinstance(raised, AlarmRaised) and raised.detail == "reading_flag"
    state, fx = step(state, Reading(T0 + 2000, 2, 0.0, tamper=True), pol)
    assert fx == ()
    state, fx = step(state, Reading(T0 + 3000, 3, 0.0), pol)
    assert alarms.summary_alarm(state) == "tamper"
    state, fx = step(state, AcknowledgeAlarm(raised.alarm_id, T0 + 4000), pol)
    assert fx == (AlarmAcknowledged(raised.alarm_id, "tamper", T0 + 4000),
                  AlarmCleared(raised.alarm_id, "tamper", T0 + 4000))
    assert alarms.summary_alarm(state) == "none"


def test_summary_picks_the_most_severe() -> None:
    state = AlarmState()
    for kind in ("low_balance", "offline", "zero_balance"):
        state, _ = alarms.raise_alarm(state, kind, T0)
    assert alarms.summary_alarm(state) == "offline"
    state, _ = alarms.raise_alarm(state, "tamper", T0)
    assert alarms.summary_alarm(state) == "tamper"
    assert [a.alarm_id for a in state.active] == ["1", "2", "3", "4"]
