"""Through the real park (LMDB, journal writer, actors, snapshotter): a bad value from the field
costs nothing, a wall-clock step stops nothing, a meter replacement is journaled.

Time here is trio's fake clock (``autojump_clock``): the control clock follows it, and the
wall clock is a function of it that the tests step both ways.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import trio

from actors.effects import AlarmEvent
from persistence.journal import StorageUnavailable
from policies.money import charge
from policies.records import Reading
from server.app import Park, open_park
from server.clock import ParkClock
from server.field import MeterBusListener
from tests.server.parks import small_park

T0 = 1_790_000_000_000
HOUR_MS = 3_600_000
PRICE = 100_000  # 1.00 per kWh in charge units per Wh


def fake_wall() -> int:
    """A wall clock that runs with trio's (fake) clock; ParkClock.step_wall steps it."""
    return T0 + int(trio.current_time() * 1000)


async def settle(park: Park) -> None:
    while park.dispatcher.queue_depth:
        await trio.sleep(0.001)


def read(park: Park, listener: MeterBusListener, meter: str, register_wh: int,
         power_w: float) -> None:
    """What a bus hands over after one poll: the reading stamped with both clocks."""
    clock = park.clock
    key = park.registry.get(meter).key
    listener.readings([key], [Reading(clock.wall_ms(), register_wh, power_w,
                                      mono_ms=clock.mono_ms())])


async def test_a_garbled_register_costs_nothing_and_the_park_keeps_running(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    alarms: list[AlarmEvent] = []
    async with open_park(small_park(tmp_path / "park"), with_field=False,
                         clock=ParkClock(fake_wall)) as park:
        park.router.alarm_sinks.append(alarms.append)
        listener = MeterBusListener(park.registry, park.router, mono_ms=park.clock.mono_ms)
        for meter in ("M-0", "M-1", "M-2"):
            read(park, listener, meter, 1_000_000, 1000.0)
        await trio.sleep(1)
        # 3e38 kWh, as a misaligned read gives: 3e41 Wh, far beyond msgpack's integers.
        read(park, listener, "M-0", round(3e38 * 1000), 1000.0)
        read(park, listener, "M-1", 1_000_002, 1000.0)
        await settle(park)
        await park.snapshot_now()  # the state must still encode: nothing of it was taken
        victim = park.registry.get("M-0")
        assert victim.state.balance == 100_00 and victim.state.register_wh == 1_000_000
        assert not victim.faulted and victim.state.relay.closed
        [tamper] = [a for a in alarms if a.kind == "tamper"]
        assert tamper.meter_id == "M-0" and tamper.detail == "register_out_of_range"
        await trio.sleep(1)
        read(park, listener, "M-0", 1_000_003, 1000.0)  # charged from the last good register
        await settle(park)
        assert victim.state.balance == 100_00 - charge(3, PRICE, 0)[0]
        assert park.registry.get("M-1").state.register_wh == 1_000_002
        assert park.supervisor.statistics().restarts == 0


async def test_wall_clock_steps_both_ways_stop_neither_charging_nor_protection(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    config = small_park(tmp_path / "park", extra_meter_keys='overload_w = 5000\n'
                                                          'overload_delay = "2s"')
    clock = ParkClock(fake_wall)
    register = 1_000_000
    async with open_park(config, with_field=False, clock=clock) as park:
        listener = MeterBusListener(park.registry, park.router, mono_ms=clock.mono_ms)
        actor = park.registry.get("M-0")
        read(park, listener, "M-0", register, 1000.0)
        for second in range(1, 41):
            await trio.sleep(1)
            if second == 10:
                clock.step_wall(+HOUR_MS)  # NTP jumps forward...
            if second == 20:
                clock.step_wall(-2 * HOUR_MS)  # ...then back, past where it was
            register += 2
            power = 20_000.0 if second >= 30 else 1000.0  # 4x the limit from 30 s on
            read(park, listener, "M-0", register, power)
            await settle(park)
            assert actor.state.register_wh == register, second  # never stale
            if second == 31:
                assert actor.state.relay.closed  # 1 s over: not yet
            if second == 32:
                assert not actor.state.relay.closed  # 2 s over the limit: tripped
                assert actor.state.relay.reason == "overload"
        assert actor.state.balance == 100_00 - charge(80, PRICE, 0)[0]
        labels_after = actor.state.reading_ms
    # Restarted after the backward step: the control clock continues past the snapshot, so the
    # next reading is not stale and is charged once.
    async with open_park(config, with_field=False, clock=ParkClock(fake_wall)) as park:
        clock = park.clock
        listener = MeterBusListener(park.registry, park.router, mono_ms=clock.mono_ms)
        actor = park.registry.get("M-0")
        await trio.sleep(1)
        read(park, listener, "M-0", register + 2, 1000.0)
        await settle(park)
        assert actor.state.register_wh == register + 2
        assert actor.state.balance == 100_00 - charge(82, PRICE, 0)[0]
        assert actor.state.reading_ms > labels_after


async def test_a_reading_stamped_in_the_future_does_not_make_later_ones_stale(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    clock = ParkClock(fake_wall)
    async with open_park(small_park(tmp_path / "park"), with_field=False, clock=clock) as park:
        listener = MeterBusListener(park.registry, park.router, mono_ms=clock.mono_ms)
        actor = park.registry.get("M-0")
        read(park, listener, "M-0", 1_000_000, 1000.0)
        await trio.sleep(1)
        key = actor.key
        listener.readings([key], [Reading(clock.wall_ms() + 24 * HOUR_MS, 1_000_001, 1000.0,
                                          mono_ms=clock.mono_ms())])
        await settle(park)
        assert actor.state.reading_ms < clock.wall_ms() + 2_000  # its label was refused
        for step in range(2, 6):
            await trio.sleep(1)
            read(park, listener, "M-0", 1_000_000 + step, 1000.0)
            await settle(park)
            assert actor.state.register_wh == 1_000_000 + step
        assert actor.state.balance == 100_00 - charge(5, PRICE, 0)[0]


async def test_a_replaced_meter_is_journaled_and_survives_a_restart(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    config = small_park(tmp_path / "park")
    async with open_park(config, with_field=False, clock=ParkClock(fake_wall)) as park:
        listener = MeterBusListener(park.registry, park.router, mono_ms=park.clock.mono_ms)
        read(park, listener, "M-0", 1_000_000, 1000.0)
        await trio.sleep(1)
        read(park, listener, "M-0", 6_000_000, 1000.0)  # a new meter, 5,000 kWh ahead
        await settle(park)
        actor = park.registry.get("M-0")
        assert actor.state.register_wh == 1_000_000 and actor.state.balance == 100_00
        ack = await park.ledger.replace_meter("M-0", "swap-1", park.clock.wall_ms(),
                                              start_wh=6_000_000, final_wh=1_000_010,
                                              reason="meter swapped")
        assert ack.status == "applied" and ack.balance == 100_00 - charge(10, PRICE, 0)[0]
        again = await park.ledger.replace_meter("M-0", "swap-1", park.clock.wall_ms(),
                                                start_wh=6_000_000, final_wh=1_000_010)
        assert again.duplicate and again.balance == ack.balance
        assert not [a for a in actor.state.alarms.active if a.kind == "tamper"]
    # Recovery replays the journaled replacement (whatever the snapshot had).
    async with open_park(config, with_field=False, clock=ParkClock(fake_wall)) as park:
        listener = MeterBusListener(park.registry, park.router, mono_ms=park.clock.mono_ms)
        actor = park.registry.get("M-0")
        assert actor.state.register_wh == 6_000_000
        await trio.sleep(1)
        read(park, listener, "M-0", 6_000_004, 1000.0)
        await settle(park)
        assert actor.state.balance == 100_00 - charge(14, PRICE, 0)[0]


async def test_a_dead_journal_writer_refuses_money_but_never_stops_control(
    tmp_path: Path,
) -> None:
    config = small_park(tmp_path / "park", extra_meter_keys='overload_w = 5000\n'
                                                          'overload_delay = "0s"')
    alarms: list[AlarmEvent] = []
    commands: list[tuple[str, bool]] = []
    async with open_park(config, with_field=False) as park:
        park.router.alarm_sinks.append(alarms.append)
        park.router.relay_sink = lambda actor, command: commands.append(
            (actor.meter_id, command.closed))
        listener = MeterBusListener(park.registry, park.router, mono_ms=park.clock.mono_ms)
        read(park, listener, "M-0", 1_000_000, 1000.0)
        read(park, listener, "M-1", 1_000_000, 1000.0)
        await settle(park)
        os.kill(park.journal.writer_pid, signal.SIGKILL)
        with trio.fail_after(10):
            while not any(a.kind == "storage" and a.state == "active" for a in alarms):
                await trio.sleep(0.001)
        storage = next(a for a in alarms if a.kind == "storage")
        assert storage.alarm_id == "park/storage" and storage.meter_id == ""
        # Money is refused with the contract's code while the writer is down (its restart
        # waits 0.1 s of backoff and takes ~0.3 s)...
        assert not park.journal.available
        with pytest.raises(StorageUnavailable) as refused:
            await park.ledger.top_up("M-1", 10_00, "while-down", park.clock.wall_ms())
        assert refused.value.code == "unavailable"
        # ...while readings are charged and an overload trips, as ever.
        await trio.sleep(0.01)
        read(park, listener, "M-0", 1_000_001, 20_000.0)
        await settle(park)
        assert ("M-0", False) in commands
        with trio.fail_after(10):
            while not any(a.kind == "storage" and a.state == "cleared" for a in alarms):
                await trio.sleep(0.01)
        ack = await park.ledger.top_up("M-1", 10_00, "after", park.clock.wall_ms())
        assert ack.status == "applied" and ack.balance == 110_00
        assert await park.snapshot_now() >= 1  # snapshots resume (every meter relisted)
    assert park.supervisor.statistics().restarts == 0
