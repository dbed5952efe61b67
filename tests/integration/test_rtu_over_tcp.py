"""A gateway configured ``transport = "rtu-over-tcp"``, against the simulator speaking it.

What cheap serial-to-Ethernet converters and 4G DTUs speak: RTU frames with their CRC over a TCP
connection. The park config, the simulator and the server are all the real ones over loopback;
the test checks readings (to the last Wh, with simulated time standing still) and a relay that
is opened at zero balance and closed again by a top-up, both confirmed by the read-back.
"""

from __future__ import annotations

from pathlib import Path

import trio

from server.app import open_park
from server.config import load_config
from server.simulate import plan_from_config
from simulators.clock import SimClock
from simulators.park import SimPark, run_sim_park
from tests.integration.test_field_loop import SIM_START_S, eventually
from tests.simulators.test_simulate_command import free_port


def write_park(folder: Path, port: int) -> Path:
    path = folder / "park.toml"
    path.write_text(
        f"""\
[server]
data_dir = "data"
currency = "CNY"

[tariffs.flat]
kind = "flat"
price = "1.00"

[[gateways]]
id = "dtu1"
host = "127.0.0.1"
port = {port}
transport = "rtu-over-tcp"
poll_interval = "50ms"
timeout = "300ms"

[[meters]]
id = "R-1"
tenant = "t1"
gateway = "dtu1"
unit = 1
profile = "sdm630"
tariff = "flat"
opening_balance = "100.00"

[[meters]]
id = "R-2"
tenant = "t2"
gateway = "dtu1"
unit = 2
profile = "sdm120"
relay_coil = 3
tariff = "flat"
opening_balance = "0.00"
"""
    )
    return path


async def test_a_park_behind_an_rtu_over_tcp_gateway_reads_and_switches(tmp_path: Path) -> None:
    config = load_config(write_park(tmp_path, free_port()))
    assert config.gateways[0].transport == "rtu-over-tcp"
    clock = SimClock(start_s=SIM_START_S, source=lambda: 0.0)  # registers hold still
    sim = SimPark(plan_from_config(config), clock=clock)
    gateway = sim.gateways["dtu1"]
    assert gateway.transport == "rtu-over-tcp"

    async with run_sim_park(sim), open_park(config) as park:
        registry = park.registry
        await eventually(lambda: all(registry.get(m.id).state.register_wh > 0
                                     for m in config.meters))
        # No credit: the relay of R-2 is opened (coil 3, function 5 over RTU) and read back.
        await eventually(lambda: not sim.meter("dtu1", 2).relay_closed)
        await eventually(lambda: not registry.get("R-2").state.relay.closed)
        ack = await park.ledger.top_up("R-2", 5000, "pay-1", SIM_START_S * 1000)
        assert ack.balance == 5000
        await eventually(lambda: sim.meter("dtu1", 2).relay_closed)
        await eventually(lambda: registry.get("R-2").state.relay.closed)
        await trio.sleep(0.2)  # more polls over the same connection

        now = sim.clock.now()
        for unit, meter_id in ((1, "R-1"), (2, "R-2")):
            state = registry.get(meter_id).state
            assert state.register_wh == round(sim.meter("dtu1", unit).register_wh(now))
        # Every relay is written once at start-up; R-2 was then cut, and restored by the top-up.
        writes = [(w.address, w.on) for w in sim.coil_log.for_target("dtu1", 2)]
        assert writes[-2:] == [(3, False), (3, True)]
        assert all(w.on for w in sim.coil_log.for_target("dtu1", 1))
        statistics = gateway.statistics()
        assert statistics.requests > 10 and statistics.frame_errors == 0
        assert statistics.connections == 1  # no reconnect: every RTU reply was well framed
        assert sim.meter("dtu1", 1).relay_closed  # R-1 has credit: never cut
