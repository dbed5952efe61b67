"""Relay decisions: overload trip/reclose/lockout/reset, manual, offline, anti-chatter."""

from __future__ import annotations

from policies.meter import step
from policies.meter_policy import MeterPolicy
from policies.records import (
    AlarmCleared,
    AlarmRaised,
    ConnectivityChanged,
    Effect,
    MeterState,
    Reading,
    RelayCommand,
    ResetLockout,
    SetManualRelay,
    TopUpApplied,
)
from tests.policies.builders import local_ms, policy

T0 = local_ms(2026, 3, 2, 12)


def relay_commands(fx: tuple[Effect, ...]) -> list[RelayCommand]:
    return [e for e in fx if isinstance(e, RelayCommand)]


def overload_policy(**kwargs: object) -> MeterPolicy:
    defaults: dict[str, object] = dict(overload_w=1000.0, overload_delay_ms=2000,
                                       overload_reclose_ms=60_000, lockout_trips=3,
                                       lockout_window_ms=3_600_000)
    defaults.update(kwargs)
    return policy(None, **defaults)


def start(pol: MeterPolicy) -> MeterState:
    state, _ = step(MeterState.opening(10**7), Reading(T0, 0, 0.0), pol)
    return state


def test_overload_trips_only_after_the_delay() -> None:
    pol = overload_policy()
    state = start(pol)
    state, fx = step(state, Reading(T0 + 1000, 1, 1500.0), pol)
    assert state.protection.over_since_ms == T0 + 1000 and fx == ()
    state, fx = step(state, Reading(T0 + 2999, 2, 1500.0), pol)
    assert state.relay.closed and fx == ()
    state, fx = step(state, Reading(T0 + 3000, 3, 1500.0), pol)
    assert relay_commands(fx) == [RelayCommand(False, "overload", T0 + 3000)]
    assert state.protection.trip_ms == (T0 + 3000,)
    assert any(isinstance(e, AlarmRaised) and e.kind == "overload" for e in fx)


def test_power_dip_restarts_the_delay() -> None:
    pol = overload_policy()
    state = start(pol)
    for i, power in enumerate([1500.0, 1500.0, 900.0, 1500.0, 1500.0]):
        state, _fx = step(state, Reading(T0 + 1000 * (i + 1), i + 1, power), pol)
        assert state.relay.closed
    assert state.protection.over_since_ms == T0 + 4000


def test_reclose_after_delay_then_lockout_after_n_trips_then_reset() -> None:
    pol = overload_policy(overload_delay_ms=0)
    state = start(pol)
    ts, reg = T0, 0
    for trip in range(3):
        ts += 1000
        reg += 1
        state, fx = step(state, Reading(ts, reg, 5000.0), pol)
        assert relay_commands(fx) == [RelayCommand(False, "overload", ts)]
        # Still within the reclose delay: stays open, high power not counted again.
        state, fx = step(state, Reading(ts + 59_999, reg, 5000.0), pol)
        assert not state.relay.closed and fx == ()
        ts += 60_000
        state, fx = step(state, Reading(ts, reg, 0.0), pol)
        if trip < 2:
            assert relay_commands(fx) == [RelayCommand(True, None, ts)]
            assert any(isinstance(e, AlarmCleared) and e.kind == "overload" for e in fx)
    assert state.relay.locked_out and not state.relay.closed
    state, fx = step(state, Reading(ts + 10 * 3_600_000, reg, 0.0), pol)
    assert not state.relay.closed and relay_commands(fx) == []  # a lockout never times out
    state, fx = step(state, ResetLockout(ts + 10 * 3_600_000 + 1), pol)
    assert state.relay.closed and not state.relay.locked_out
    assert relay_commands(fx) == [RelayCommand(True, None, ts + 10 * 3_600_000 + 1)]
    assert any(isinstance(e, AlarmCleared) and e.kind == "overload" for e in fx)


def test_trips_outside_the_lockout_window_do_not_lock_out() -> None:
    pol = overload_policy(overload_delay_ms=0, lockout_window_ms=100_000)
    state = start(pol)
    ts = T0
    for i in range(5):
        ts += 70_000
        state, _ = step(state, Reading(ts, i, 5000.0), pol)
        ts += 70_000
        state, _ = step(state, Reading(ts, i, 0.0), pol)
        assert state.relay.closed and not state.relay.locked_out


def test_manual_open_is_sticky_and_auto_returns_control() -> None:
    pol = policy()
    state = start(pol)
    state, fx = step(state, SetManualRelay("open", "maintenance", T0 + 1), pol)
    assert fx == (RelayCommand(False, "manual", T0 + 1),)
    assert state.relay.manual_reason == "maintenance"
    state, fx = step(state, TopUpApplied(1, 100, "x", T0 + 2), pol)
    assert not state.relay.closed and relay_commands(fx) == []
    state, fx = step(state, SetManualRelay("open", "maintenance", T0 + 3), pol)
    assert fx == ()  # no change, no command
    state, fx = step(state, SetManualRelay("auto", "", T0 + 4), pol)
    assert fx == (RelayCommand(True, None, T0 + 4),)
    state, fx = step(state, SetManualRelay("close", "", T0 + 5), pol)
    assert fx[0].code == "bad_request"  # type: ignore[union-attr]


def test_manual_beats_overload_and_reason_changes_are_commanded() -> None:
    pol = overload_policy(overload_delay_ms=0)
    state = start(pol)
    state, _ = step(state, Reading(T0 + 1000, 1, 5000.0), pol)
    assert state.relay.reason == "overload"
    state, fx = step(state, SetManualRelay("open", "inspect", T0 + 2000), pol)
    assert fx == (RelayCommand(False, "manual", T0 + 2000),)
    state, fx = step(state, SetManualRelay("auto", "", T0 + 3000), pol)
    assert fx == (RelayCommand(False, "overload", T0 + 3000),)  # still within reclose delay


def test_offline_opens_only_when_configured() -> None:
    for opens in (False, True):
        pol = policy(offline_opens_relay=opens)
        state = start(pol)
        state, fx = step(state, ConnectivityChanged(False, T0 + 1, "timeout"), pol)
        assert state.relay.closed is not opens
        assert [e.kind for e in fx if isinstance(e, AlarmRaised)] == ["offline"]
        state, fx = step(state, ConnectivityChanged(True, T0 + 2), pol)
        assert state.relay.closed
        assert [e.kind for e in fx if isinstance(e, AlarmCleared)] == ["offline"]
        assert len(relay_commands(fx)) == int(opens)


def test_anti_chatter_delays_automatic_closing_but_never_opening() -> None:
    pol = policy(offline_opens_relay=True, max_switches=4, switch_window_ms=60_000)
    state = start(pol)
    ts = T0
    commands: list[RelayCommand] = []
    for _ in range(3):
        ts += 1000
        state, fx = step(state, ConnectivityChanged(False, ts), pol)
        commands += relay_commands(fx)
        ts += 1000
        state, fx = step(state, ConnectivityChanged(True, ts), pol)
        commands += relay_commands(fx)
    # open, close, open, close (4 switches), open (never delayed), close delayed.
    assert [c.closed for c in commands] == [False, True, False, True, False]
    assert not state.relay.closed and state.relay.reason == "offline"
    # A later message once the window allows it closes the relay.
    state, fx = step(state, Reading(T0 + 1000 + 59_999, 0, 0.0), pol)
    assert relay_commands(fx) == []
    state, fx = step(state, Reading(T0 + 1000 + 60_000 + 2000, 0, 0.0), pol)
    assert relay_commands(fx) == [RelayCommand(True, None, T0 + 63_000)]


def test_relay_feedback_mismatch_is_tamper() -> None:
    from policies.records import RelayFeedback

    pol = policy()
    state = start(pol)
    state, fx = step(state, RelayFeedback(False, T0 + 1), pol)
    [raised] = fx
    assert isinstance(raised, AlarmRaised)
    assert (raised.kind, raised.detail) == ("tamper", "relay_mismatch")
    state, fx = step(state, RelayFeedback(False, T0 + 2), pol)
    assert fx == ()  # not raised twice
    state, fx = step(state, RelayFeedback(True, T0 + 3), pol)
    assert fx == (AlarmCleared(raised.alarm_id, "tamper", T0 + 3),)
