"""End to end over loopback: the server polls the simulator and switches its relays.

Each test starts a small simulated park (one Modbus TCP gateway on an ephemeral port, four
SDM630 units), points a park config at it and runs the real server: ``GatewayBus`` -> meter
actors -> policies -> relay commands -> coil writes at the simulator. Nothing is mocked; the
only thing a test does besides waiting is what an operator or the field would do (inject a
fault at the simulator, top up through the ledger).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

from actors.effects import AlarmEvent
from policies.records import MeterState
from server.app import Park, open_park
from server.config import ParkConfig
from simulators.faults import parse_fault
from simulators.park import ParkPlan, SimPark, open_sim_park

METERS = 4
WAIT_S = 8.0
# Simulated time: a Wednesday 11:06 UTC, when seed 7 gives every unit 5-7 kW, running 60x so
# the registers move ~100 Wh a second and small balances run out within a second or two.
SIM_START_S = 1_795_000_000
SIM_SPEED = 60.0


def park_config(
    data_dir: Path, port: int, openings: dict[int, str], poll_interval: str = "50ms"
) -> ParkConfig:
    meters = "\n".join(
        f"""
[[meters]]
id = "M-{unit:04d}"
tenant = "t{unit}"
gateway = "gw1"
unit = {unit}
profile = "sdm630"
relay_coil = 0
tariff = "flat"
opening_balance = "{openings.get(unit, "100.00")}"
overload_w = 30000
overload_delay = "200ms"
"""
        for unit in range(1, METERS + 1)
    )
    text = f"""
[server]
data_dir = "{data_dir}"
currency = "CNY"

[tariffs.flat]
kind = "flat"
price = "1.00"

[[gateways]]
id = "gw1"
host = "127.0.0.1"
port = {port}
poll_interval = "{poll_interval}"
timeout = "150ms"
retries = 0
offline_after = 2
reconnect_min = "20ms"
reconnect_max = "200ms"
{meters}
"""
    return ParkConfig.from_toml_text(text, "integration-park.toml")


@attrs.define
class Loop:
    sim: SimPark
    park: Park
    alarms: list[AlarmEvent]

    def actor_state(self, unit: int) -> MeterState:
        return self.park.registry.get(f"M-{unit:04d}").state

    def coil_closed(self, unit: int) -> bool:
        return self.sim.meter("gw1", unit).relay_closed

    def alarm_kinds(self, unit: int, state: str = "active") -> list[str]:
        meter = f"M-{unit:04d}"
        return [a.kind for a in self.alarms if a.meter_id == meter and a.state == state]


@asynccontextmanager
async def running_loop(
    tmp_path: Path, openings: dict[int, str] | None = None, poll_interval: str = "50ms"
) -> AsyncIterator[Loop]:
    plan = ParkPlan.uniform(meters=METERS, gateways=1, port=0, seed=7)
    async with open_sim_park(plan, speed=SIM_SPEED, start_s=SIM_START_S) as sim:
        config = park_config(tmp_path / "data", sim.ports["gw1"], openings or {}, poll_interval)
        alarms: list[AlarmEvent] = []
        async with open_park(config) as park:
            park.router.alarm_sinks.append(alarms.append)
            loop = Loop(sim, park, alarms)
            await eventually(lambda: all(loop.actor_state(u).register_wh >= 0
                                         for u in range(1, METERS + 1)))
            yield loop


async def eventually(condition: Callable[[], bool], within_s: float = WAIT_S) -> None:
    with trio.fail_after(within_s):
        while not condition():
            await trio.sleep(0.01)


async def test_a_simulated_overload_opens_the_coil(tmp_path: Path) -> None:
    async with running_loop(tmp_path) as loop:
        assert loop.coil_closed(2)
        loop.sim.inject(parse_fault("gw1/2:overload:power=45000"))
        await eventually(lambda: not loop.coil_closed(2))
        assert loop.actor_state(2).relay.reason == "overload"
        assert "overload" in loop.alarm_kinds(2)
        # Nobody else was touched.
        assert all(loop.coil_closed(unit) for unit in (1, 3, 4))


async def test_an_overload_trips_when_its_delay_ends_not_a_cycle_later(tmp_path: Path) -> None:
    # Cycles 1 s apart, overload_delay 200 ms: the confirming reading is an early poll.
    async with running_loop(tmp_path, poll_interval="1s") as loop:
        loop.sim.inject(parse_fault("gw1/2:overload:power=45000"))
        await eventually(lambda: loop.actor_state(2).protection.over_since_ms >= 0)
        seen_at = trio.current_time()
        await eventually(lambda: not loop.coil_closed(2))
        assert trio.current_time() - seen_at < 0.6  # the next cycle would be ~1 s away
        assert loop.actor_state(2).relay.reason == "overload"


async def test_zero_balance_opens_the_coil_and_a_top_up_closes_it(tmp_path: Path) -> None:
    # One minor unit of credit: the first charged reading exhausts it.
    async with running_loop(tmp_path, openings={3: "0.01"}) as loop:
        await eventually(lambda: not loop.coil_closed(3))
        state = loop.actor_state(3)
        assert state.balance <= 0
        assert state.relay.reason == "zero_balance"
        assert "zero_balance" in loop.alarm_kinds(3)

        ack = await loop.park.ledger.top_up("M-0003", 50_00, "it-topup-1", loop.park.clock_ms())
        assert ack.balance > 0
        await eventually(lambda: loop.coil_closed(3))
        assert loop.actor_state(3).relay.closed


async def test_a_silent_unit_goes_offline_and_comes_back(tmp_path: Path) -> None:
    async with running_loop(tmp_path) as loop:
        active = loop.sim.inject(parse_fault("gw1/4:silent"))
        await eventually(lambda: not loop.actor_state(4).online)
        assert "offline" in loop.alarm_kinds(4)
        # The coil is not opened for being offline unless configured (offline_opens_relay).
        assert loop.coil_closed(4)
        # The other units on the same gateway kept being polled.
        before = loop.actor_state(1).reading_ms
        await eventually(lambda: loop.actor_state(1).reading_ms > before)

        loop.sim.end_fault(active)
        await eventually(lambda: loop.actor_state(4).online)
        assert "offline" in loop.alarm_kinds(4, "cleared")


async def test_a_garbage_reply_is_alarmed_and_the_actor_survives(tmp_path: Path) -> None:
    async with running_loop(tmp_path) as loop:
        active = loop.sim.inject(parse_fault("gw1/1:garbage"))
        await eventually(lambda: "offline" in loop.alarm_kinds(1))
        [raised] = [a for a in loop.alarms if a.meter_id == "M-0001" and a.kind == "offline"]
        # The contract's word and id shape: one alarm, raised by the meter's alarm policy.
        assert raised.detail.startswith("comm_fault: garbage")
        assert raised.alarm_id.startswith("M-0001/") and raised.alarm_id[7:].isdigit()
        loop.sim.end_fault(active)
        actor = loop.park.registry.get("M-0001")
        before = actor.state.reading_ms
        await eventually(lambda: actor.state.reading_ms > before)
        await eventually(lambda: "offline" in loop.alarm_kinds(1, "cleared"))
        assert not actor.faulted
        assert len([a for a in loop.alarms if a.meter_id == "M-0001" and a.kind == "offline"
                    and a.state == "active"]) == 1
        assert loop.park.supervisor.statistics().restarts == 0


async def test_a_register_rollback_is_alarmed_and_keeps_the_baseline(
    tmp_path: Path,
) -> None:
    async with running_loop(tmp_path) as loop:
        balance_before = loop.actor_state(2).balance
        loop.sim.inject(parse_fault("gw1/2:rollback:to=0"))
        await eventually(lambda: "tamper" in loop.alarm_kinds(2))
        rollback = [a for a in loop.alarms if a.meter_id == "M-0002" and a.kind == "tamper"]
        assert "rollback" in rollback[0].detail
        # A backwards register is refused (an operator's replace_meter sets a new baseline):
        # the baseline stays the last good register and nothing is charged for the jump.
        state = loop.actor_state(2)
        assert state.balance <= balance_before
        assert state.register_wh > 1_000_000


async def test_after_a_restart_the_coils_are_brought_back_to_what_the_meters_command(
    tmp_path: Path,
) -> None:
    # First life: a meter runs out of credit and its relay is opened.
    async with running_loop(tmp_path, openings={1: "0.01"}) as loop:
        await eventually(lambda: not loop.coil_closed(1))
    # Second life on the same data directory, against a fresh simulator whose coils are all
    # closed (a gateway power-cycled, or someone switched the relay by hand).
    async with running_loop(tmp_path, openings={1: "0.01"}) as loop:
        assert loop.actor_state(1).relay.reason == "zero_balance"
        await eventually(lambda: not loop.coil_closed(1))
        assert all(loop.coil_closed(unit) for unit in (2, 3, 4))
