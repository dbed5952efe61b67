"""The quota group actor: members speak up only at their allowance, yet the group trips at
exactly the reading that spends its budget, whoever consumes it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.effects import AlarmEvent, EffectRouter
from actors.meter import NO_QUOTA, MeterActor, receive_readings
from actors.quota import QuotaGroup
from actors.runtime import Dispatcher
from policies.meter_policy import MeterPolicy
from policies.quota import QuotaPolicy, QuotaState
from policies.records import MeterState, Reading
from policies.tariff import month_at
from policies.tariff_records import Tariff

T0 = 1_795_000_000_000
MINUTE = 60_000
POLICY = MeterPolicy(tariff=Tariff.flat("flat", 100_000))  # 1 kWh = 1.00


def group_of(meters: int, budget_wh: int, unit: str = "kwh"
             ) -> tuple[QuotaGroup, list[MeterActor], Dispatcher, list[AlarmEvent]]:
    router = EffectRouter()
    alarms: list[AlarmEvent] = []
    router.alarm_sinks.append(alarms.append)
    dispatcher = Dispatcher(lambda actor, message, error: (_ for _ in ()).throw(error))
    members = [MeterActor(f"M-{n}", n, POLICY, MeterState.opening(10**9), router)
               for n in range(meters)]
    group = QuotaGroup(QuotaPolicy("line", unit, budget_wh), members, dispatcher,  # type: ignore[arg-type]
                       router, lambda: T0, lambda: T0)
    group.start(QuotaState(), month_at(POLICY.tariff, T0))
    return group, members, dispatcher, alarms


def read(members: list[MeterActor], dispatcher: Dispatcher, registers: list[int],
         minute: int) -> None:
    receive_readings(members, [Reading(T0 + minute * MINUTE, wh, 1_000.0) for wh in registers],
                     lambda actor, message, error: (_ for _ in ()).throw(error))
    while dispatcher.queue_depth:
        dispatcher.drain_slice()


def test_meters_outside_a_group_never_speak_up() -> None:
    meter = MeterActor("M", 0, POLICY, MeterState.opening(1), EffectRouter())
    assert meter.quota is None and meter.quota_wh_until == meter.quota_minor_until == NO_QUOTA


def test_one_meter_spending_the_whole_budget_trips_at_the_exact_reading() -> None:
    group, members, dispatcher, alarms = group_of(4, 1_000)
    read(members, dispatcher, [0, 0, 0, 0], 0)
    for minute in range(1, 120):
        read(members[:1], dispatcher, [minute * 10], minute)  # 10 Wh a minute, one meter
        used = minute * 10
        assert group.state.blocked == (used >= 1_000), minute
        assert group.state.levels == (used >= 800) + (used >= 1_000)
    assert [(a.level, a.state) for a in alarms if not a.meter_id] == [(80, "active"),
                                                                      (100, "active")]
    # The cut reaches every member, also those that consumed nothing.
    assert all(m.state.relay.reason == "quota" for m in members)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(0, 60), min_size=3, max_size=3), min_size=1,
                max_size=40))
def test_the_group_knows_after_every_round_whether_the_budget_is_spent(
        rounds: list[list[int]]) -> None:
    group, members, dispatcher, _ = group_of(3, 500)
    registers = [0, 0, 0]
    read(members, dispatcher, registers, 0)
    for minute, deltas in enumerate(rounds, start=1):
        registers = [r + d for r, d in zip(registers, deltas, strict=True)]
        read(members, dispatcher, registers, minute)
        # Consumption counts while the relays are closed; after the cut the meters'
        # registers still move in this test, but the group is already blocked.
        total = sum(m.state.month_wh for m in members)
        if total >= 500:
            assert group.state.blocked
        else:
            assert not group.state.blocked and group.state.levels == (total >= 400)


def test_a_money_budget_counts_money() -> None:
    group, members, dispatcher, _ = group_of(2, 150, unit="money")  # 1.50
    read(members, dispatcher, [0, 0], 0)
    read(members, dispatcher, [1_000, 0], 1)  # 1.00
    assert not group.state.blocked
    assert members[0].quota_minor_until != NO_QUOTA and members[0].quota_wh_until == NO_QUOTA
    read(members, dispatcher, [1_000, 500], 2)  # 1.50
    assert group.state.blocked


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.integers(0, 40), min_size=20, max_size=20), min_size=1,
                max_size=30), st.integers(0, 19))
def test_uneven_members_never_pass_a_threshold_unseen(rounds: list[list[int]],
                                                      heavy: int) -> None:
    """Twenty members, one of them drawing 30 times the others: after every round the group
    knows exactly whether 100 % (and 80 %) of its budget is used."""
    group, members, dispatcher, _ = group_of(20, 4_000)
    registers = [0] * 20
    read(members, dispatcher, registers, 0)
    for minute, deltas in enumerate(rounds, start=1):
        registers = [r + d * (30 if n == heavy else 1)
                     for n, (r, d) in enumerate(zip(registers, deltas, strict=True))]
        read(members, dispatcher, registers, minute)
        total = sum(m.state.month_wh for m in members)
        assert group.state.blocked == (total >= 4_000), (minute, total)
        if not group.state.blocked:
            assert group.state.levels == (total >= 3_200)


def test_a_big_group_recounts_rarely(monkeypatch: pytest.MonkeyPatch) -> None:
    """2,000 members, a seventh of them drawing six times the rest: hundreds of them report
    as they use up their allowances, yet the group recounts (O(members)) only at the start."""
    group, members, dispatcher, _ = group_of(2_000, 40_000_000)
    calls = {"recount": 0, "report": 0}
    recount, report = QuotaGroup.recount, QuotaGroup.member_charged

    def counting_recount(self: QuotaGroup) -> None:
        calls["recount"] += 1
        recount(self)

    def counting_report(self: QuotaGroup, member: MeterActor) -> None:
        calls["report"] += 1
        report(self, member)

    monkeypatch.setattr(QuotaGroup, "recount", counting_recount)
    monkeypatch.setattr(QuotaGroup, "member_charged", counting_report)
    registers = [0] * 2_000
    read(members, dispatcher, registers, 0)
    for minute in range(1, 40):
        registers = [r + (290 if n % 7 == 6 else 50) for n, r in enumerate(registers)]
        read(members, dispatcher, registers, minute)
    assert calls["report"] >= 280 and calls["recount"] == 0
    # The books are a lower bound of what was used; an exact count agrees with the meters.
    assert group.state.used <= sum(m.state.month_wh for m in members)
    group.tally_now()
    assert group.state.used == sum(m.state.month_wh for m in members)
