"""A meter model added by an operator: a profile file named in the park config, no code.

The park config lists ``profiles/acme-pm100.toml`` in ``profile_files`` (the ACME PM100 of
docs/profiles.md: holding registers, 32-bit integers low word first, fixed-point scales, one
value on function 4, and a relay read back as a discrete input). The simulator and the server
are both started from that one loaded config, as ``wattkeeper demo`` does, and the server's
readings are checked against what the simulated meters show.
"""

from __future__ import annotations

from pathlib import Path

import trio

from actors.effects import AlarmEvent
from server.app import open_park
from server.config import ParkConfig, load_config
from server.simulate import plan_from_config
from simulators.clock import SimClock
from simulators.park import SimPark, run_sim_park
from tests.integration.test_field_loop import SIM_START_S, eventually
from tests.profile_texts import ACME_PM100
from tests.simulators.test_simulate_command import free_port


def write_park(folder: Path, port: int) -> Path:
    (folder / "profiles").mkdir()
    (folder / "profiles" / "acme-pm100.toml").write_text(ACME_PM100)
    meters = "\n".join(
        f"""
[[meters]]
id = "A-{unit}"
tenant = "t{unit}"
gateway = "gw1"
unit = {unit}
profile = "{profile}"
tariff = "flat"
opening_balance = "{opening}"
"""
        for unit, profile, opening in (
            (1, "acme-pm100", "100.00"),
            (2, "acme-pm100", "0.00"),  # no credit: its relay is opened at once
            (3, "sdm630", "100.00"),  # a shipped profile on the same gateway
        )
    )
    path = folder / "park.toml"
    path.write_text(
        f"""\
profile_files = ["profiles/acme-pm100.toml"]

[server]
data_dir = "data"
currency = "CNY"

[tariffs.flat]
kind = "flat"
price = "1.00"

[[gateways]]
id = "gw1"
host = "127.0.0.1"
port = {port}
poll_interval = "50ms"
timeout = "300ms"
{meters}"""
    )
    return path


def frozen_sim(config: ParkConfig) -> SimPark:
    """The config's park with simulated time standing still: every register holds its value,
    so the server's readings can be compared with the meters' to the last digit."""
    clock = SimClock(start_s=SIM_START_S, source=lambda: 0.0)
    return SimPark(plan_from_config(config, seed=7), clock=clock)


async def test_the_server_polls_a_meter_of_a_profile_from_the_config(tmp_path: Path) -> None:
    config = load_config(write_park(tmp_path, free_port()))
    acme = config.profile("acme-pm100")
    assert acme.relay.function_read == 2
    assert [m.kind for m in config.meters] == ["electricity"] * 3  # taken from the profiles

    sim = frozen_sim(config)
    alarms: list[AlarmEvent] = []
    async with run_sim_park(sim), open_park(config) as park:
        park.router.alarm_sinks.append(alarms.append)
        registry = park.registry
        await eventually(
            lambda: all(registry.get(m.id).state.register_wh >= 0 for m in config.meters)
        )
        # The unit with no credit is cut, and the read-back (function 2) confirmed it.
        await eventually(lambda: not sim.meter("gw1", 2).relay_closed)
        await trio.sleep(0.2)  # a few more polls and the read-back's feedback

    now = sim.clock.now()
    for unit in (1, 2, 3):
        meter = sim.meter("gw1", unit)
        state = registry.get(f"A-{unit}").state
        # register_wh is whole Wh; the ACME register counts 0.01 kWh = 10 Wh steps.
        step_wh = 10 if unit < 3 else 1
        assert abs(state.register_wh - meter.register_wh(now)) <= step_wh / 2 + 1e-6, unit
        assert abs(state.power_w - meter.power_w(now)) <= 0.05 + 1e-6, unit
    assert sim.meter("gw1", 1).profile is acme  # the simulator used the same file
    assert registry.get("A-1").state.power_w > 1000  # a working load, not a zero register
    assert registry.get("A-2").state.relay.reason == "zero_balance"
    assert registry.get("A-2").state.power_w == 0.0
    # No exception replies (a read-back with a function the meter lacks would be one) and
    # no relay mismatch (a wrong read-back would look like a relay that did not switch).
    assert not [a for a in alarms if a.kind in ("comm_fault", "tamper")]
