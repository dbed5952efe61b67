"""The relay read-back honours the profile's ``[relay] function_read`` (1 coils, 2 discrete inputs).

Against ``FakeGateway`` (independent of our codec, and it keeps coils and discrete inputs
apart, so the test can tell which one was read) and against the simulator, which answers
function 2 with the relay's state like a meter that reports its contact there.
"""

from __future__ import annotations

import tomllib

import attrs
import trio

from protocols.modbus.bus import UnitBinding
from protocols.modbus.client import open_modbus_tcp
from protocols.modbus.profiles import Profile, load_profile, parse_profile
from simulators.park import GatewayPlan, MeterPlan, ParkPlan, open_sim_park
from tests.modbus.test_bus import RecordingListener, bus_gateway, fill_unit, running, until
from tests.modbus.test_client import FakeGateway

CONTACT_PROFILE = """
name = "sdm120-contact"
kind = "electricity"
description = "an SDM120-like meter that reports its relay contact as discrete input"

[read_plan]
max_gap = 64
max_registers = 80

[relay]
function_read = 2

[values.voltage]
address = 0x0000
unit = "V"

[values.power]
address = 0x000C
unit = "W"

[values.import_energy]
address = 0x0048
unit = "kWh"
"""


def contact_profile() -> Profile:
    return parse_profile(tomllib.loads(CONTACT_PROFILE), source="sdm120-contact.toml")


def test_the_profile_says_how_the_relay_is_read() -> None:
    assert contact_profile().relay.function_read == 2
    assert load_profile("sdm120").relay.function_read == 1


async def test_read_back_uses_function_2_when_the_profile_says_so() -> None:
    fake = FakeGateway()
    for unit in (1, 2):
        fill_unit(fake, unit)
    # Unit 1's contact input says "closed" whatever its coil does: the read-back must report
    # the input, which proves function 2 (not the coil) was read.
    fake.unit(1).inputs[0] = True
    listener = RecordingListener()
    units = [
        UnitBinding(1001, 1, contact_profile(), relay_coil=0),
        UnitBinding(1002, 2, load_profile("sdm120"), relay_coil=0),
    ]
    async with trio.open_nursery() as nursery:
        port = await fake.start(nursery)
        gateway = attrs.evolve(bus_gateway(port), window=1, timeout_ms=500)
        async with running(gateway, units, listener) as bus:
            await until(lambda: listener.count(1001) >= 1 and listener.count(1002) >= 1)
            bus.command_relay_nowait(1001, closed=False)
            bus.command_relay_nowait(1002, closed=False)
            await until(lambda: len(listener.feedback) == 2)
        nursery.cancel_scope.cancel()
    write_1 = fake.requests.index((1, 5, 0))
    write_2 = fake.requests.index((2, 5, 0))
    assert (1, 2, 0) in fake.requests[write_1 + 1 :]
    assert (2, 1, 0) in fake.requests[write_2 + 1 :]
    assert (1, 1, 0) not in fake.requests and (2, 2, 0) not in fake.requests
    assert fake.unit(1).coils[0] is False and fake.unit(2).coils[0] is False
    assert sorted(listener.feedback) == [(1001, True), (1002, False)]
    assert listener.failures == []


async def test_the_simulator_answers_a_function_2_read_back() -> None:
    profile = contact_profile()
    plan = ParkPlan(
        (GatewayPlan("gw1", "127.0.0.1", 0, (MeterPlan(1, profile.name, relay_coil=3),)),),
        profiles={profile.name: profile},
    )
    listener = RecordingListener()
    async with open_sim_park(plan) as sim:
        meter = sim.meter("gw1", 1)
        assert meter.profile is profile  # the plan's own profile, not a shipped one
        async with open_modbus_tcp("127.0.0.1", sim.ports["gw1"]) as client:
            contact = await client.read(1, 2, 3, 1)
            assert contact.exception == 0 and contact.payload == b"\x01"
        gateway = attrs.evolve(bus_gateway(sim.ports["gw1"]), timeout_ms=500)
        units = [UnitBinding(1001, 1, profile, relay_coil=3)]
        async with running(gateway, units, listener) as bus:
            await until(lambda: listener.count(1001) >= 1)
            bus.command_relay_nowait(1001, closed=False)
            await until(lambda: listener.feedback != [])
    assert listener.feedback == [(1001, False)]
    assert not meter.relay_closed
    assert listener.failures == []
    (reading,) = listener.by_meter[1001][:1]
    assert reading.voltage_v > 200  # decoded with the custom profile's map
