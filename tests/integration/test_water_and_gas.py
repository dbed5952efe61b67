"""Water and gas meters through the same config, profiles, policies, actors and bus.

A water meter's m3 register becomes litres at the edge (``protocols.modbus.profiles``), and a
tariff capped in m3 becomes tiers in litres (``server.config.reader``), so the meter policy
charges it exactly as it charges Wh: first checked here with numbers worked out by hand, then
end to end over Modbus TCP loopback, where the credit running out closes the valve (coil 0)
and a top-up opens it again.
"""

from __future__ import annotations

import datetime as dt
import struct
from pathlib import Path

import trio

from actors.effects import AlarmEvent
from policies.meter import step
from policies.records import MeterState, Reading, RelayCommand
from protocols.modbus.profiles import load_profile
from server.app import open_park
from server.config import ParkConfig
from server.simulate import plan_from_config
from simulators.faults import parse_fault
from simulators.park import open_sim_park
from tests.integration.test_field_loop import SIM_SPEED, SIM_START_S, eventually
from tests.simulators.test_simulate_command import free_port

WATER = load_profile("water")


def park_text(data_dir: Path, port: int, water_opening: str = "500.00") -> str:
    return f"""
[server]
data_dir = "{data_dir}"
currency = "CNY"

[tariffs.water]
kind = "tiered"
tiers = [
  {{ up_to_m3 = "10", price = "3.00" }},
  {{ up_to_m3 = "20.5", price = "4.50" }},
  {{ price = "6.00" }},
]

[tariffs.gas]
kind = "flat"
unit = "m3"
price = "3.20"

[tariffs.power]
kind = "flat"
price = "1.00"

[[gateways]]
id = "gw1"
host = "127.0.0.1"
port = {port}
poll_interval = "50ms"
timeout = "300ms"
retries = 0

[[meters]]
id = "W-1"
tenant = "dorm"
gateway = "gw1"
unit = 1
profile = "water"
relay_coil = 0
tariff = "water"
opening_balance = "{water_opening}"

[[meters]]
id = "G-1"
tenant = "canteen"
gateway = "gw1"
unit = 2
profile = "gas"
relay_coil = 0
tariff = "gas"
opening_balance = "100.00"

[[meters]]
id = "E-1"
tenant = "canteen"
gateway = "gw1"
unit = 3
profile = "sdm120"
relay_coil = 0
tariff = "power"
overload_w = 10000
opening_balance = "100.00"
"""


def water_reading(ts_ms: int, volume_m3: float, flow_m3h: float = 0.0) -> Reading:
    """What the bus makes of a water meter showing ``volume_m3`` (float32 on the wire)."""
    return WATER.decode([struct.pack(">ffH", flow_m3h, volume_m3, 0)], ts_ms)


def test_a_water_meter_is_charged_its_tiers_from_m3_deltas(tmp_path: Path) -> None:
    config = ParkConfig.from_toml_text(park_text(tmp_path / "data", 5020), "park.toml")
    policy = config.policies["W-1"]
    t0 = int(dt.datetime(2026, 3, 10, 8, tzinfo=dt.UTC).timestamp() * 1000)
    state = MeterState.opening(500_00)
    # 1234.000 m3: the baseline. The volumes are float32-exact (quarters of a m3).
    state, _ = step(state, water_reading(t0, 1234.0), policy)
    assert (state.register_wh, state.balance) == (1_234_000, 500_00)
    # +8.250 m3 in an hour, all in the first tier: 8.25 x 3.00 = 24.75.
    state, _ = step(state, water_reading(t0 + 3_600_000, 1242.25), policy)
    assert (state.balance, state.month_wh) == (500_00 - 24_75, 8_250)
    # +12.750 m3 in one reading, over both caps: 1.75 m3 x 3.00 (to 10 m3) = 5.25,
    # 10.5 m3 x 4.50 (to 20.5 m3) = 47.25, 0.5 m3 x 6.00 = 3.00; 55.50 in all.
    state, _ = step(state, water_reading(t0 + 3 * 3_600_000, 1255.0), policy)
    assert (state.balance, state.month_wh, state.residue) == (500_00 - 24_75 - 55_50, 21_000, 0)
    assert state.register_wh == 1_255_000


def test_a_water_meter_at_zero_closes_its_valve(tmp_path: Path) -> None:
    config = ParkConfig.from_toml_text(park_text(tmp_path / "data", 5020, "0.50"), "park.toml")
    policy = config.policies["W-1"]
    t0 = int(dt.datetime(2026, 3, 10, 8, tzinfo=dt.UTC).timestamp() * 1000)
    state, _ = step(MeterState.opening(50), water_reading(t0, 100.0), policy)
    # 0.25 m3 in two minutes (7.5 m3/h) at 3.00 = 0.75: the credit is gone, and the valve
    # (the relay coil) is closed.
    state, effects = step(state, water_reading(t0 + 120_000, 100.25, 7.5), policy)
    assert state.balance == 50 - 75
    assert not state.relay.closed and state.relay.reason == "zero_balance"
    assert [e.closed for e in effects if isinstance(e, RelayCommand)] == [False]


async def test_the_valve_closes_at_zero_credit_and_opens_after_a_top_up(
    tmp_path: Path,
) -> None:
    config = ParkConfig.from_toml_text(
        park_text(tmp_path / "data", free_port(), water_opening="0.01"), "park.toml")
    assert [m.kind for m in config.meters] == ["water", "gas", "electricity"]
    plan = plan_from_config(config, seed=7)
    async with open_sim_park(plan, speed=SIM_SPEED, start_s=SIM_START_S) as sim:
        valve = sim.meter("gw1", 1)
        # A tap left running at 3 m3/h (water draws in bursts; this one does not stop).
        sim.inject(parse_fault("gw1/1:overload:power=3000"))
        alarms: list[AlarmEvent] = []
        async with open_park(config) as park:
            park.router.alarm_sinks.append(alarms.append)
            registry = park.registry
            # One minor unit of credit: the first charged reading closes the valve (coil 0).
            await eventually(lambda: not valve.relay_closed)
            state = registry.get("W-1").state
            assert state.balance <= 0 and state.relay.reason == "zero_balance"
            assert any(a.meter_id == "W-1" and a.kind == "zero_balance" for a in alarms)
            stopped = valve.register_wh(sim.clock.now())
            await trio.sleep(0.3)
            assert valve.register_wh(sim.clock.now()) == stopped  # no water past the valve

            ack = await park.ledger.top_up("W-1", 20_00, "it-water-1", park.clock_ms())
            assert ack.balance > 0
            await eventually(lambda: valve.relay_closed)  # coil 1: the valve is open again
            assert registry.get("W-1").state.relay.closed
            # The gas and electricity meters on the same bus were polled and kept their supply.
            for meter_id, unit in (("G-1", 2), ("E-1", 3)):
                assert registry.get(meter_id).state.register_wh > 0
                assert sim.meter("gw1", unit).relay_closed
            gas = registry.get("G-1").state
            assert abs(gas.register_wh - sim.meter("gw1", 2).register_wh(sim.clock.now())) \
                < 100  # litres: the index read as an integer, a few polls behind at 60x
