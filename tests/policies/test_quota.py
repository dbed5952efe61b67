"""Quota rules (``policies.quota``) and the month totals they are fed from."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from policies import quota
from policies.meter import step
from policies.quota import QuotaAlarm, QuotaCut, QuotaPolicy, QuotaRequest, QuotaState
from policies.records import MeterState, QuotaSupply, Reading
from tests.policies.builders import HOUR_MS, local_ms, policy, tou_tariff

POLICY = QuotaPolicy("line-1", "kwh", 10_000, (80, 100))
MONTH = 2026 * 12 + 10  # November 2026


def request(request_id: str = "r1", amount: int = 5_000, month: int = MONTH) -> QuotaRequest:
    return QuotaRequest(request_id, amount, "rush order", "op", 0, month)


def test_levels_and_the_cut_follow_used_against_the_limit() -> None:
    state = QuotaState(month=MONTH)
    state, effects = quota.tally(state, MONTH, 7_999, POLICY, 1)
    assert effects == () and state.levels == 0
    state, effects = quota.tally(state, MONTH, 8_000, POLICY, 2)
    assert effects == (QuotaAlarm(80, True, 8_000, 10_000, 2),)
    state, effects = quota.tally(state, MONTH, 10_000, POLICY, 3)
    assert effects == (QuotaCut(True, 10_000, 10_000, 3), QuotaAlarm(100, True, 10_000, 10_000, 3))
    assert state.blocked
    state, effects = quota.tally(state, MONTH, 10_500, POLICY, 4)
    assert effects == ()  # already cut and alarmed: nothing new


def test_an_approved_extension_lifts_the_cut_and_a_rejection_does_not() -> None:
    state, _ = quota.tally(QuotaState(month=MONTH), MONTH, 10_000, POLICY, 1)
    state, effects = quota.request_extension(state, request("r1"), POLICY)
    state, effects = quota.request_extension(state, request("r2", 1_000), POLICY)
    assert effects == () and state.blocked and len(state.requests) == 2
    state, effects = quota.decide(state, "r2", False, "root", 5, POLICY)
    assert effects == () and state.blocked and state.request("r2").status == "rejected"
    state, effects = quota.decide(state, "r1", True, "root", 6, POLICY, "ok")
    assert state.limit(POLICY) == 15_000 and not state.blocked
    assert QuotaCut(False, 10_000, 15_000, 6) in effects
    assert {e.percent for e in effects if isinstance(e, QuotaAlarm) and not e.active} == {80, 100}
    _, refused = quota.decide(state, "r1", True, "root", 7, POLICY)
    assert refused[0].code == "conflict"  # approved already: not twice


def test_a_new_month_starts_again_and_expires_last_months_requests() -> None:
    state, _ = quota.tally(QuotaState(month=MONTH), MONTH, 12_000, POLICY, 1)
    state, _ = quota.request_extension(state, request("r1"), POLICY)
    state, _ = quota.decide(state, "r1", True, "root", 2, POLICY)
    state, _ = quota.request_extension(state, request("r2"), POLICY)
    state, _ = quota.tally(state, MONTH + 1, 100, POLICY, 3)
    assert (state.month, state.used, state.extension, state.blocked) == (MONTH + 1, 100, 0, False)
    assert [(r.request_id, r.status) for r in state.requests] == [("r2", "expired")]
    _, refused = quota.decide(state, "r2", True, "root", 4, POLICY)
    assert refused[0].code == "conflict"
    # A meter still reporting last month's totals does not move the group back.
    assert quota.tally(state, MONTH, 99_999, POLICY, 5) == (state, ())


@given(st.lists(st.tuples(st.integers(0, 30_000), st.integers(0, 6_000)), max_size=30))
def test_any_sequence_ends_where_the_final_figures_say(steps: list[tuple[int, int]]) -> None:
    """Whatever the order of tallies and approvals, levels and the cut depend on the final
    used and limit only, and every alarm's effects alternate active / cleared."""
    state = QuotaState(month=MONTH)
    seen: dict[int, bool] = {}
    blocked = False
    for number, (used, extra) in enumerate(steps):
        state, effects = quota.tally(state, MONTH, used, POLICY, number)
        if extra:
            state, more = quota.request_extension(state, request(f"r{number}", extra), POLICY)
            state, more = quota.decide(state, f"r{number}", True, "root", number, POLICY)
            effects = effects + more
        for effect in effects:
            if isinstance(effect, QuotaAlarm):
                assert seen.get(effect.percent, False) != effect.active
                seen[effect.percent] = effect.active
            elif isinstance(effect, QuotaCut):
                assert effect.blocked != blocked
                blocked = effect.blocked
    limit = state.limit(POLICY)
    assert state.blocked == blocked == (state.used >= limit)
    assert state.levels == quota.levels_reached(state.used, limit, POLICY.alarm_percents)
    assert {p for p, active in seen.items() if active} == set(
        POLICY.alarm_percents[:state.levels])


@given(st.lists(st.integers(0, 2_000), min_size=1, max_size=40))
def test_month_minor_is_what_the_month_was_charged(steps: list[int]) -> None:
    """``month_minor`` (what a money quota counts) is the money charged in the local month,
    across a month boundary too; ``month_wh`` the energy."""
    meter_policy = policy(tou_tariff())
    start = local_ms(2026, 11, 30, 20)  # the boundary comes 4 hours in
    state = MeterState.opening(10**9)
    state, _ = step(state, Reading(start, 0, 0.0), meter_policy)
    register, charged_after, energy_after = 0, 0, 0
    boundary = local_ms(2026, 12, 1)
    for number, wh in enumerate(steps, start=1):
        ts = start + number * HOUR_MS // 4
        before = state.balance
        register += wh
        state, _ = step(state, Reading(ts, register, wh * 4.0), meter_policy)
        if ts - HOUR_MS // 4 >= boundary:
            charged_after += before - state.balance
            energy_after += wh
    if start + len(steps) * HOUR_MS // 4 > boundary:
        assert (state.month_minor, state.month_wh) == (charged_after, energy_after)
    else:
        assert (state.month_minor, state.month_wh) == (10**9 - state.balance, register)


def test_a_quota_cut_ranks_below_manual_and_overload_and_above_the_balance() -> None:
    meter_policy = policy()
    state = MeterState.opening(0)  # zero balance would open it too
    state, _ = step(state, QuotaSupply(True, 1_000, 1_000, "group line-1"), meter_policy)
    assert (state.relay.closed, state.relay.reason) == (False, "quota")
    state, _ = step(state, QuotaSupply(False, 2_000, 2_000), meter_policy)
    assert state.relay.reason == "zero_balance"
    funded = MeterState.opening(10_000)
    funded, effects = step(funded, QuotaSupply(True, 1_000, 1_000), meter_policy)
    assert [type(e).__name__ for e in effects] == ["RelayCommand", "AlarmRaised"]
    funded, effects = step(funded, QuotaSupply(False, 2_000, 2_000), meter_policy)
    assert funded.relay.closed
    assert [type(e).__name__ for e in effects] == ["RelayCommand", "AlarmCleared"]
