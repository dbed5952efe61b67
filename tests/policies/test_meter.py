"""The facade: validation, dispatch, and properties over random message sequences."""

from __future__ import annotations

import math
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies import credit
from policies.meter import (
    TRANSITIONS,
    on_reading,
    quiet_reading,
    settle,
    step,
    validate_reading,
)
from policies.meter_policy import FriendlyPeriod, MeterPolicy
from policies.records import (
    NO_EFFECTS,
    AcknowledgeAlarm,
    AdjustmentApplied,
    CommandRejected,
    CommFault,
    CommRestored,
    ConnectivityChanged,
    MeterState,
    QuotaSupply,
    Reading,
    RelayCommand,
    RelayFeedback,
    ReplaceMeter,
    ResetLockout,
    SetManualRelay,
    TopUpApplied,
)
from tests.policies.builders import flat_tariff, local_ms, policy, tou_tariff

T0 = local_ms(2026, 3, 2, 20)  # Monday 20:00 local: friendly night starts two hours later


@pytest.mark.parametrize(
    ("reading", "problem"),
    [
        (Reading(-1, 0, 0.0), "negative timestamp"),
        (Reading(0, -5, 0.0), "negative energy register"),
        (Reading(0, 0, math.nan), "power"),
        (Reading(0, 0, math.inf), "power"),
        (Reading(0, 0, 0.0, voltage_v=-math.inf), "voltage"),
        (Reading(0, 0, 0.0, current_a=math.nan), "current"),
    ],
)
def test_validate_reading_refuses_bad_numbers(reading: Reading, problem: str) -> None:
    error = validate_reading(reading)
    assert error is not None and problem in error
    state = MeterState.opening(100)
    assert step(state, reading, policy()) == (state, (CommandRejected("bad_reading", error),))


def test_validate_reading_accepts_a_normal_reading() -> None:
    assert validate_reading(Reading(T0, 123, 4.5, 230.0, 1.2)) is None


def test_step_rejects_unknown_messages_and_table_covers_all_inputs() -> None:
    state = MeterState.opening(100)
    new, fx = step(state, object(), policy())
    assert new is state and isinstance(fx[0], CommandRejected) and fx[0].code == "unsupported"
    assert set(TRANSITIONS) == {Reading, TopUpApplied, AdjustmentApplied, SetManualRelay,
                                ResetLockout, AcknowledgeAlarm, ConnectivityChanged,
                                RelayFeedback, ReplaceMeter, CommFault, CommRestored, QuotaSupply}


def test_common_reading_reuses_sub_records_and_no_effects() -> None:
    pol = policy(tou_tariff(), overload_w=30_000, alarm_levels=(5000, 2000))
    state, _ = on_reading(MeterState.opening(10**7), Reading(T0, 0, 100.0), pol)
    new, fx = on_reading(state, Reading(T0 + 1000, 5, 100.0), pol)
    assert fx is NO_EFFECTS
    assert new.relay is state.relay and new.protection is state.protection
    assert new.credit is state.credit and new.alarms is state.alarms


# --- random message sequences -------------------------------------------------------------

policies_ = st.builds(
    policy,
    st.sampled_from([flat_tariff("5.00"), tou_tariff()]),
    overload_w=st.sampled_from([0.0, 2000.0]),
    overload_delay_ms=st.sampled_from([0, 2000]),
    overload_reclose_ms=st.sampled_from([5000, 60_000]),
    lockout_trips=st.sampled_from([0, 2, 3]),
    alarm_levels=st.sampled_from([(), (2000, 500)]),
    emergency_credit=st.sampled_from([0, 500]),
    friendly=st.sampled_from([(), (FriendlyPeriod(22 * 60, 6 * 60),)]),
    debt_recovery_percent=st.sampled_from([0, 25]),
    max_switches=st.sampled_from([0, 2, 6]),
    switch_window_ms=st.just(60_000),
    offline_opens_relay=st.booleans(),
    interval_ms=st.sampled_from([60_000, 900_000]),
)


@st.composite
def message_sequences(draw: st.DrawFn) -> list[Any]:
    ts, register, seq = T0, 10_000, 0
    out: list[Any] = []
    for _ in range(draw(st.integers(1, 60))):
        ts += draw(st.sampled_from([0, 1, 500, 1000, 2000, 30_000, 600_000, 3_600_000]))
        kind = draw(st.sampled_from(["reading"] * 6 + ["topup", "adjust", "manual", "reset",
                                                       "online", "feedback", "ack", "replay",
                                                       "replace", "comm"]))
        if kind == "reading":
            register = max(0, register + draw(st.integers(-200, 2000)))
            out.append(Reading(ts, register, draw(st.sampled_from([0.0, 500.0, 2500.0])),
                               tamper=draw(st.booleans()) and draw(st.booleans())))
        elif kind == "topup":
            seq += 1
            out.append(TopUpApplied(seq, draw(st.integers(1, 5000)), f"r{seq}", ts))
        elif kind == "replay":
            out.append(TopUpApplied(draw(st.integers(0, seq)), 1000, "again", ts))
        elif kind == "adjust":
            seq += 1
            out.append(AdjustmentApplied(seq, draw(st.integers(-3000, 3000)),
                                         draw(st.sampled_from(["fix", "arrears"])), ts))
        elif kind == "manual":
            out.append(SetManualRelay(draw(st.sampled_from(["open", "auto", "auto", "bad"])),
                                      "test", ts))
        elif kind == "reset":
            out.append(ResetLockout(ts))
        elif kind == "replace":
            seq += 1
            register = draw(st.integers(0, 50_000))
            out.append(ReplaceMeter(seq, register, draw(st.sampled_from([-1, register, 0])),
                                    "swap", ts))
        elif kind == "comm":
            out.append(draw(st.sampled_from([CommFault("garbage: x", ts), CommRestored(ts)])))
        elif kind == "online":
            out.append(ConnectivityChanged(draw(st.booleans()), ts))
        elif kind == "feedback":
            out.append(RelayFeedback(draw(st.booleans()), ts))
        else:
            out.append(AcknowledgeAlarm(str(draw(st.integers(1, 8))), ts))
    return out


MONEY_MESSAGES = (Reading, TopUpApplied, AdjustmentApplied, ReplaceMeter)


def relay_allowed(state: MeterState, pol: MeterPolicy, ts: int) -> bool:
    relay = state.relay
    if not relay.closed:
        return True
    if relay.manual_open or relay.locked_out:
        return False
    return state.balance > 0 or credit.supply_allowed_by_credit(state, pol, ts)


@given(policies_, st.integers(0, 3000), message_sequences())
def test_random_sequences_keep_every_invariant(
    pol: MeterPolicy, opening: int, messages: list[Any]
) -> None:
    state = MeterState.opening(opening)
    for message in messages:
        before = attrs.asdict(state, recurse=True)
        new, effects = step(state, message, pol)
        # Policies never mutate their input.
        assert attrs.asdict(state, recurse=True) == before
        # The balance changes only through readings, top-ups and adjustments; readings only
        # ever lower it (charges are never negative).
        if not isinstance(message, MONEY_MESSAGES):
            assert new.balance == state.balance
        if isinstance(message, Reading | ReplaceMeter):
            assert new.balance <= state.balance
        # A replayed journal event changes nothing at all.
        if isinstance(message, TopUpApplied | AdjustmentApplied | ReplaceMeter) and (
            message.seq <= state.journal_seq
        ):
            assert new is state and effects == ()
        # The relay invariant, at the time of every message that changed anything.
        if new is not state:
            assert relay_allowed(new, pol, message.ts_ms), (message, new.relay, new.balance)
        for effect in effects:
            if isinstance(effect, RelayCommand):
                assert effect.closed == new.relay.closed and effect.reason == new.relay.reason
        # Commands only on change.
        commands = [e for e in effects if isinstance(e, RelayCommand)]
        assert len(commands) <= 1
        if not commands:
            assert (new.relay.closed, new.relay.reason) == (state.relay.closed,
                                                             state.relay.reason)
        else:
            assert (new.relay.closed, new.relay.reason) != (state.relay.closed,
                                                             state.relay.reason)
        state = new


@given(policies_, st.integers(0, 3000), message_sequences())
def test_the_quiet_top_up_shortcut_matches_the_full_path(
    pol: MeterPolicy, opening: int, messages: list[Any]
) -> None:
    state = MeterState.opening(opening)
    for message in messages:
        if isinstance(message, TopUpApplied) and message.seq > state.journal_seq:
            full = credit.apply_top_up(state, message, pol)
            assert step(state, message, pol) == settle(full, pol, message.ts_ms)
        state, _ = step(state, message, pol)


@given(policies_, st.integers(0, 3000), message_sequences())
def test_the_quiet_reading_shortcut_matches_the_full_path(
    pol: MeterPolicy, opening: int, messages: list[Any]
) -> None:
    state = MeterState.opening(opening)
    for message in messages:
        if isinstance(message, Reading):
            quiet = quiet_reading(state, message, pol)
            if quiet is not None:
                assert step(state, message, pol) == (quiet, NO_EFFECTS)
        state, _ = step(state, message, pol)


def test_the_quiet_reading_shortcut_takes_the_common_reading_and_refuses_the_rest() -> None:
    pol = policy(tou_tariff(), overload_w=30_000, alarm_levels=(5000, 2000))
    state, _ = on_reading(MeterState.opening(10**7), Reading(T0, 0, 100.0), pol)
    quiet = quiet_reading(state, Reading(T0 + 1000, 5, 100.0), pol)
    assert quiet is not None and (quiet, NO_EFFECTS) == on_reading(
        state, Reading(T0 + 1000, 5, 100.0), pol)
    refused = [
        Reading(T0, 5, 100.0),  # stale
        Reading(T0 + 1000, -1, 100.0),  # register backwards
        Reading(T0 + 1000, 5, 40_000.0),  # over the limit
        Reading(T0 + 1000, 5, math.nan),
        Reading(T0 + 1000, 5, 100.0, voltage_v=math.inf),
        Reading(T0 + 1000, 5, 100.0, tamper=True),
        Reading(T0 + 1000, 10**9, 100.0),  # the charge ends below the alarm levels
        Reading(T0 + 3 * 3_600_000, 5, 100.0),  # crosses a band and a history bucket
    ]
    for reading in refused:
        assert quiet_reading(state, reading, pol) is None, reading
    assert quiet_reading(MeterState.opening(10**7), Reading(T0, 0, 100.0), pol) is None
