"""A crashing meter actor is restarted from snapshot + journal; no other meter notices."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

import actors.meter
from actors.effects import AlarmEvent
from actors.supervisor import RestartIntensity
from policies.meter import StepResult
from policies.meter_policy import MeterPolicy
from policies.records import MeterState, Reading, TopUpApplied
from server.app import Park, open_park
from tests.server.parks import small_park

T0 = 1_790_000_000_000


class Poison:
    """A message that makes the policy raise: stands in for a bug in policy code."""


@pytest.fixture(autouse=True)
def poisonable_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    real_step = actors.meter.step

    def step(state: MeterState, message: object, policy: MeterPolicy) -> StepResult:
        if isinstance(message, Poison):
            raise RuntimeError("policy bug")
        return real_step(state, message, policy)

    monkeypatch.setattr(actors.meter, "step", step)


async def _settle(park: Park) -> None:
    while park.dispatcher.queue_depth:
        await trio.sleep(0.001)


async def test_crashed_actor_restarts_from_snapshot_and_journal(tmp_path: Path) -> None:
    async with open_park(small_park(tmp_path / "park"), with_field=False) as park:
        victim = park.registry.get("M-0")
        others = [park.registry.get("M-1"), park.registry.get("M-2")]
        for key, actor in enumerate(park.registry):
            park.registry.deliver_reading_nowait(actor.key, Reading(T0, 5_000 + key, 100.0))
        await park.ledger.top_up("M-0", 10_00, "before-snapshot", T0)
        await park.snapshot_now()
        await park.ledger.top_up("M-0", 5_00, "after-snapshot", T0)
        # Consumption after the snapshot: 2 kWh at 1.00 is charged now, lost with the crash,
        # and charged again (once) by the next reading from the snapshot's baseline.
        park.registry.deliver_reading_nowait(victim.key, Reading(T0 + 3_600_000, 7_000, 100.0))
        await _settle(park)
        assert victim.state.balance == 100_00 + 10_00 + 5_00 - 2_00
        before = [actor.state for actor in others]

        park.registry.tell_nowait(victim, Poison())
        await _settle(park)

        assert park.supervisor.statistics().restarts == 1
        assert not victim.faulted
        # Snapshot (with the first top-up) + the journaled second top-up; consumption since the
        # snapshot is not in the balance until the next reading.
        assert victim.state.balance == 100_00 + 10_00 + 5_00
        park.registry.deliver_reading_nowait(victim.key, Reading(T0 + 3_601_000, 7_000, 100.0))
        await _settle(park)
        assert victim.state.balance == 100_00 + 10_00 + 5_00 - 2_00
        assert [actor.state for actor in others] == before
        assert all(a.state is b for a, b in zip(others, before, strict=True))


async def test_a_topup_that_crashes_its_actor_is_durable_and_applied_by_the_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Committed top-ups are applied on the journal's callback (Dispatcher.deliver_now), not
    # through the mailbox: a crash there must reach the supervisor just the same.
    real_step = actors.meter.step
    crashes = []

    def step(state: MeterState, message: object, policy: MeterPolicy) -> StepResult:
        if isinstance(message, TopUpApplied) and message.reference == "crashes" and not crashes:
            crashes.append(message)
            raise RuntimeError("policy bug")
        return real_step(state, message, policy)

    monkeypatch.setattr(actors.meter, "step", step)
    async with open_park(small_park(tmp_path / "park"), with_field=False) as park:
        victim, other = park.registry.get("M-0"), park.registry.get("M-1")
        before = other.state
        ack = await park.ledger.top_up("M-0", 7_00, "crashes", T0)
        assert park.supervisor.statistics().restarts == 1 and not victim.faulted
        # The entry was committed before it was applied: the restart replays it, once, and
        # the answer says so (never "no money was moved").
        assert (ack.status, ack.balance) == ("applied", 100_00 + 7_00)
        assert victim.state.balance == 100_00 + 7_00
        again = await park.ledger.top_up("M-0", 7_00, "crashes", T0)
        assert again.duplicate and again.status == "duplicate"
        assert victim.state.balance == 100_00 + 7_00
        assert other.state is before


async def test_past_restart_intensity_the_meter_is_faulted_and_alarmed(tmp_path: Path) -> None:
    alarms: list[AlarmEvent] = []
    async with open_park(
        small_park(tmp_path / "park"),
        with_field=False,
        restart_intensity=RestartIntensity(max_restarts=2, period_ms=60_000),
    ) as park:
        park.router.alarm_sinks.append(alarms.append)
        victim = park.registry.get("M-1")
        for _ in range(3):
            park.registry.tell_nowait(victim, Poison())
        await _settle(park)
        assert victim.faulted
        assert [a.kind for a in alarms if a.meter_id == "M-1"] == ["offline"]
        assert alarms[-1].detail.startswith("faulted:")

        # A payment to a faulted meter is journaled and pending: applied when it restarts.
        pending = await park.ledger.top_up("M-1", 1_00, "to-a-faulted-meter", T0)
        assert (pending.status, pending.balance) == ("pending", 100_00)
        repeat = await park.ledger.top_up("M-1", 1_00, "to-a-faulted-meter", T0)
        assert (repeat.status, repeat.duplicate) == ("pending", True)
        # Everyone else carries on.
        ack = await park.ledger.top_up("M-2", 1_00, "to-a-healthy-meter", T0)
        assert ack.balance == 100_00 + 1_00

        park.supervisor.reset(victim)
        assert not victim.faulted
        # The restart from snapshot + journal applied the pending top-up, once.
        assert victim.state.balance == 100_00 + 1_00
        repeat = await park.ledger.top_up("M-1", 1_00, "to-a-faulted-meter", T0)
        assert (repeat.status, repeat.balance) == ("duplicate", 100_00 + 1_00)
        ack = await park.ledger.top_up("M-1", 1_00, "after-reset", T0)
        assert ack.balance == 100_00 + 2_00
