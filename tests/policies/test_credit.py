"""Credit: top-ups, replays, adjustments, arrears and debt recovery, emergency credit, friendly."""

from __future__ import annotations

import datetime as dt

from policies import credit
from policies.meter import step
from policies.meter_policy import FriendlyPeriod
from policies.records import (
    AdjustmentApplied,
    CreditState,
    MeterState,
    Reading,
    RelayCommand,
    TopUpApplied,
)
from policies.tariff_records import Calendar, Tariff
from tests.policies.builders import TZ, local_ms, policy

T0 = local_ms(2026, 3, 2, 12)  # Monday noon


def test_top_up_applies_once_and_replay_changes_nothing() -> None:
    pol = policy()
    state = MeterState.opening(1000)
    new = credit.apply_top_up(state, TopUpApplied(5, 500, "ref", T0), pol)
    assert (new.balance, new.journal_seq) == (1500, 5)
    for seq in (5, 4, 0):
        assert credit.apply_top_up(new, TopUpApplied(seq, 500, "ref", T0), pol) is new
        assert credit.apply_adjustment(new, AdjustmentApplied(seq, -10, "fix", T0), pol) is new


def test_adjustment_changes_balance_and_arrears_only_debt() -> None:
    pol = policy()
    state = credit.apply_adjustment(MeterState.opening(1000), AdjustmentApplied(1, -300, "fix", T0),
                                    pol)
    assert state.balance == 700
    state = credit.apply_adjustment(state, AdjustmentApplied(2, 5000, "arrears", T0), pol)
    assert (state.balance, state.credit.debt, state.journal_seq) == (700, 5000, 2)
    state = credit.apply_adjustment(state, AdjustmentApplied(3, -9000, "arrears", T0), pol)
    assert (state.balance, state.credit.debt) == (700, 0)


def test_debt_recovery_share() -> None:
    pol = policy(debt_recovery_percent=30)
    state = credit.apply_adjustment(MeterState.opening(0), AdjustmentApplied(1, 1000, "arrears",
                                                                             T0), pol)
    state = credit.apply_top_up(state, TopUpApplied(2, 999, "a", T0), pol)
    assert (state.balance, state.credit.debt) == (999 - 299, 1000 - 299)  # floor(29.97%)
    state = credit.apply_top_up(state, TopUpApplied(3, 10_000, "b", T0), pol)
    assert state.credit.debt == 0  # at most the debt
    assert state.balance == 700 + 10_000 - 701
    state = credit.apply_top_up(state, TopUpApplied(4, 100, "c", T0), pol)
    assert state.balance == 700 + 10_000 - 701 + 100


def test_emergency_credit_once_then_cut_and_rearmed_by_top_up() -> None:
    pol = policy(emergency_credit=500)  # flat 1.00/kWh: 10 Wh = 1 minor
    state, _ = step(MeterState.opening(100), Reading(T0, 0, 0.0), pol)
    # Down to 0: emergency credit goes in use, supply continues.
    state, fx = step(state, Reading(T0 + 1000, 1000, 0.0), pol)
    assert state.balance == 0 and state.credit.emergency_in_use and state.relay.closed
    assert not any(isinstance(e, RelayCommand) for e in fx)
    state, fx = step(state, Reading(T0 + 2000, 5990, 0.0), pol)
    assert state.balance == -499 and state.relay.closed
    # At -emergency_credit: cut.
    state, fx = step(state, Reading(T0 + 3000, 6000, 0.0), pol)
    assert state.balance == -500 and not state.relay.closed
    assert RelayCommand(False, "zero_balance", T0 + 3000) in fx
    assert state.credit == CreditState(False, False, 0)
    # A partial top-up does not bring emergency credit back.
    state, fx = step(state, TopUpApplied(1, 300, "p", T0 + 4000), pol)
    assert state.balance == -200 and not state.relay.closed and fx == ()
    # A top-up to a positive balance re-arms it and closes the relay.
    state, fx = step(state, TopUpApplied(2, 1000, "q", T0 + 5000), pol)
    assert state.balance == 800 and state.relay.closed
    assert state.credit == CreditState(False, True, 0)
    assert fx[0] == RelayCommand(True, None, T0 + 5000)


def test_settle_emergency_returns_same_object_when_unchanged() -> None:
    pol = policy(emergency_credit=500)
    c = CreditState()
    assert credit.settle_emergency(c, 100, pol) is c
    assert credit.settle_emergency(c, 0, policy()) is c  # no emergency credit configured


def test_friendly_window_wrapping_midnight() -> None:
    pol = policy(friendly=(FriendlyPeriod(start_min=22 * 60, end_min=6 * 60),))
    assert credit.in_friendly_period(pol, local_ms(2026, 3, 2, 22, 0))
    assert credit.in_friendly_period(pol, local_ms(2026, 3, 2, 23, 59))
    assert credit.in_friendly_period(pol, local_ms(2026, 3, 3, 0, 0))
    assert credit.in_friendly_period(pol, local_ms(2026, 3, 3, 5, 59))
    assert not credit.in_friendly_period(pol, local_ms(2026, 3, 3, 6, 0))
    assert not credit.in_friendly_period(pol, local_ms(2026, 3, 2, 21, 59))
    assert not credit.in_friendly_period(policy(friendly=(FriendlyPeriod(),)), T0)


def test_friendly_holidays_and_weekends() -> None:
    holiday = dt.date(2026, 3, 4)
    tariff = Tariff.flat("f", 100_000, Calendar(timezone=TZ, holidays=frozenset({holiday})))
    pol = policy(tariff, friendly=(FriendlyPeriod(on_holidays=True),))
    assert credit.in_friendly_period(pol, local_ms(2026, 3, 4, 12))
    assert not credit.in_friendly_period(pol, local_ms(2026, 3, 7, 12))  # Saturday
    pol = policy(tariff, friendly=(FriendlyPeriod(on_weekends=True),))
    assert credit.in_friendly_period(pol, local_ms(2026, 3, 7, 12))
    assert not credit.in_friendly_period(pol, local_ms(2026, 3, 4, 12))


def test_zero_balance_in_friendly_night_keeps_supply_until_morning() -> None:
    pol = policy(friendly=(FriendlyPeriod(start_min=22 * 60, end_min=6 * 60),))
    night = local_ms(2026, 3, 2, 23)
    state, _ = step(MeterState.opening(10), Reading(night, 0, 0.0), pol)
    state, fx = step(state, Reading(night + 60_000, 500, 0.0), pol)
    assert state.balance == -40 and state.relay.closed
    assert [e.kind for e in fx if hasattr(e, "kind")] == ["zero_balance"]
    state, fx = step(state, Reading(local_ms(2026, 3, 3, 5, 59), 600, 0.0), pol)
    assert state.relay.closed
    state, fx = step(state, Reading(local_ms(2026, 3, 3, 6, 0), 600, 0.0), pol)
    assert not state.relay.closed and fx[0] == RelayCommand(
        False, "zero_balance", local_ms(2026, 3, 3, 6, 0))
