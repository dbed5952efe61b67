"""The gateway bus actor against fake gateways over loopback TCP (ephemeral ports).

Timeouts are tens of milliseconds so the failure paths run in well under a second each; waits
are "until the listener saw X" with a generous overall limit, never fixed sleeps.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import attrs
import pytest
import trio

from policies.records import Reading
from protocols.modbus.bus import BusGateway, GatewayBus, UnitBinding
from protocols.modbus.profiles import load_profile, parse_profile
from tests.modbus.test_client import FakeGateway

NOW_MS = 1_795_000_000_000
PROFILE = load_profile("sdm120")


class RecordingListener:
    """A BusListener that remembers everything, in order."""

    def __init__(self) -> None:
        self.by_meter: dict[int, list[Reading]] = {}
        self.online: list[tuple[int, bool, str]] = []
        self.feedback: list[tuple[int, bool]] = []
        self.failures: list[tuple[int, str, str]] = []
        self.backlog = False
        self.asked_backlog = 0

    def poll_allowance(self, bus: GatewayBus, wanted: int) -> int:
        self.asked_backlog += 1
        return 0 if self.backlog else wanted

    def readings(self, meter_keys: list[int], readings: list[Reading]) -> None:
        for meter_key, reading in zip(meter_keys, readings, strict=True):
            self.by_meter.setdefault(meter_key, []).append(reading)

    def connectivity(self, meter_key: int, online: bool, ts_ms: int, detail: str) -> None:
        self.online.append((meter_key, online, detail))

    def relay_feedback(self, meter_key: int, closed: bool, ts_ms: int) -> None:
        self.feedback.append((meter_key, closed))

    def poll_failed(self, meter_key: int, kind: str, detail: str, ts_ms: int) -> None:
        self.failures.append((meter_key, kind, detail))

    def count(self, meter_key: int) -> int:
        return len(self.by_meter.get(meter_key, ()))

    def kinds(self, meter_key: int) -> list[str]:
        return [kind for key, kind, _ in self.failures if key == meter_key]


async def until(condition: Callable[[], bool], limit_s: float = 5.0) -> None:
    with trio.fail_after(limit_s):
        while not condition():
            await trio.sleep(0.002)


def fill_unit(gateway: FakeGateway, unit: int, *, volts: float = 230.5) -> None:
    registers = gateway.unit(unit)
    registers.set_float(0x0000, volts)
    registers.set_float(0x0006, 4.25)
    registers.set_float(0x000C, 980.0)
    registers.set_float(0x0046, 50.0)
    registers.set_float(0x0048, 12.5)  # kWh, exact in float32
    registers.coils[0] = True


def bus_gateway(port: int, **changes: object) -> BusGateway:
    gateway = BusGateway(
        gateway_id="gw",
        host="127.0.0.1",
        port=port,
        poll_interval_ms=20,
        timeout_ms=60,
        window=4,
        retries=1,
        offline_after=2,
        retry_backoff_ms=5,
        reconnect_min_ms=10,
        reconnect_max_ms=50,
    )
    return attrs.evolve(gateway, **changes)  # type: ignore[arg-type]  # test-only overrides


def bindings(units: range, key_base: int = 1000) -> list[UnitBinding]:
    return [UnitBinding(key_base + unit, unit, PROFILE, relay_coil=0) for unit in units]


@asynccontextmanager
async def running(
    gateway: BusGateway, units: list[UnitBinding], listener: RecordingListener
) -> AsyncIterator[GatewayBus]:
    bus = GatewayBus(gateway, units, listener, clock=lambda: NOW_MS, random=lambda: 0.5)
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.run)
        yield bus
        nursery.cancel_scope.cancel()


async def test_readings_carry_the_decoded_values() -> None:
    fake = FakeGateway()
    for unit in (1, 2):
        fill_unit(fake, unit, volts=230.0 + unit)
    listener = RecordingListener()
    async with trio.open_nursery() as nursery:
        port = await fake.start(nursery)
        async with running(bus_gateway(port), bindings(range(1, 3)), listener) as bus:
            await until(lambda: listener.count(1001) >= 3 and listener.count(1002) >= 3)
            statistics = bus.statistics()
        nursery.cancel_scope.cancel()
    reading = listener.by_meter[1002][-1]
    assert reading.ts_ms == NOW_MS
    assert reading.voltage_v == pytest.approx(232.0)
    assert reading.current_a == pytest.approx(4.25)
    assert reading.power_w == pytest.approx(980.0)
    assert reading.register_wh == 12_500
    assert listener.failures == [] and listener.online == []
    assert statistics.polls >= 6 and statistics.cycles >= 3
    assert statistics.connected


# The Eastron profiles read in one block; this one needs two (gap > max_gap), to exercise
# a read plan that does not fit the window.
TWO_BLOCKS = parse_profile(
    {
        "name": "two-blocks",
        "kind": "electricity",
        "read_plan": {"max_gap": 4},
        "values": {
            "voltage": {"function": 4, "address": 0x0000, "unit": "V"},
            "power": {"function": 4, "address": 0x000C, "unit": "W"},
            "import_energy": {"function": 4, "address": 0x0048, "unit": "kWh"},
        },
    }
)


async def test_window_of_one_sends_a_multi_block_plan_one_request_at_a_time() -> None:
    assert len(TWO_BLOCKS.read_plan) == 3
    fake = FakeGateway()
    for unit in (1, 2, 3):
        fill_unit(fake, unit)
    listener = RecordingListener()
    async with trio.open_nursery() as nursery:
        port = await fake.start(nursery)
        gateway = bus_gateway(port, window=1, poll_interval_ms=0)
        units = [UnitBinding(1000 + unit, unit, TWO_BLOCKS, relay_coil=0) for unit in (1, 2, 3)]
        async with running(gateway, units, listener):
            await until(lambda: all(listener.count(key) >= 5 for key in (1001, 1002, 1003)))
        nursery.cancel_scope.cancel()
    assert fake.most_frames_at_once == 1
    assert listener.by_meter[1003][-1].register_wh == 12_500
    assert listener.by_meter[1003][-1].power_w == pytest.approx(980.0)
    assert listener.by_meter[1003][-1].voltage_v == pytest.approx(230.5)


async def test_timeouts_are_retried_then_offline_then_online_again() -> None:
    fake = FakeGateway()
    for unit in (1, 2):
        fill_unit(fake, unit)
    fake.unit(1).silent = True
    listener = RecordingListener()
    async with trio.open_nursery() as nursery:
        port = await fake.start(nursery)
        async with running(bus_gateway(port), bindings(range(1, 3)), listener) as bus:
            await until(lambda: (1001, False) in [(k, on) for k, on, _ in listener.online])
            # Two failed polls, each first tried and then retried once, before going offline.
            first_block_requests = [r for r in fake.requests if r[0] == 1 and r[2] == 0]
            assert len(first_block_requests) >= 4
            assert listener.kinds(1001)[:2] == ["timeout", "timeout"]
            assert listener.count(1002) > 0  # the healthy unit kept answering meanwhile
            assert bus.statistics().units_offline == 1
            fake.unit(1).silent = False
            await until(lambda: (1001, True, "") in listener.online)
            readings_before = listener.count(1001)
            await until(lambda: listener.count(1001) > readings_before)
            assert bus.statistics().units_offline == 0
            assert bus.statistics().failed_timeout >= 2
        nursery.cancel_scope.cancel()
    assert [key for key, _, _ in listener.online] == [1001, 1001]


async def test_garbage_is_reported_and_the_bus_reconnects_and_survives() -> None:
    fake = FakeGateway()
    fill_unit(fake, 1)
    listener = RecordingListener()
    async with trio.open_nursery() as nursery:
        port = await fake.start(nursery)
        async with running(bus_gateway(port), bindings(range(1, 2)), listener) as bus:
            await until(lambda: listener.count(1001) >= 1)
            fake.garbage_once = True
            await until(lambda: "garbage" in listener.kinds(1001))
            after_garbage = listener.count(1001)
            await until(lambda: listener.count(1001) >= after_garbage + 3)
            statistics = bus.statistics()
        nursery.cancel_scope.cancel()
    assert statistics.failed_garbage == 1
    assert statistics.reconnects == 1
    assert fake.connections == 2


async def test_exception_reply_for_an_unknown_unit_is_reported() -> None:
    fake = FakeGateway()
    fill_unit(fake, 1)  # unit 7 is not behind this gateway: it answers exception 0x0B
    listener = RecordingListener()
    units = [*bindings(range(1, 2)), UnitBinding(1007, 7, PROFILE, relay_coil=0)]
    async with trio.open_nursery() as nursery:
        port = await fake.start(nursery)
        async with running(bus_gateway(port), units, listener) as bus:
            await until(lambda: (1007, False) in [(k, on) for k, on, _ in listener.online])
            statistics = bus.statistics()
        nursery.cancel_scope.cancel()
    assert set(listener.kinds(1007)) == {"exception"}
    assert "exception code 11" in listener.failures[0][2]
    assert listener.count(1001) > 0 and listener.kinds(1001) == []
    assert statistics.failed_exception >= 2 and statistics.reconnects == 0


async def test_relay_command_jumps_ahead_of_polls_and_is_read_back() -> None:
    fake = FakeGateway()
    for unit in range(1, 41):
        fill_unit(fake, unit)
    listener = RecordingListener()
    gateway = bus_gateway(0, window=1, poll_interval_ms=0, timeout_ms=500)
    async with trio.open_nursery() as nursery:
        port = await fake.start(nursery)
        gateway = attrs.evolve(gateway, port=port)
        async with running(gateway, bindings(range(1, 41)), listener) as bus:
            await until(lambda: listener.count(1001) >= 1)
            await until(lambda: any(r[0] == 5 for r in fake.requests[-1:]))  # mid-cycle
            received_before = len(fake.requests)
            bus.command_relay_nowait(1030, closed=False)
            await until(lambda: listener.feedback != [])
            statistics = bus.statistics()
        nursery.cancel_scope.cancel()
    write_index = fake.requests.index((30, 5, 0))
    # With one request in flight, at most that one (not yet read by the gateway) goes first.
    assert write_index <= received_before + 1
    assert fake.requests[write_index + 1] == (30, 1, 0)  # read-back right after the write
    assert listener.feedback == [(1030, False)]
    assert fake.unit(30).coils[0] is False
    assert statistics.commands == 1 and statistics.p99_command_ms > 0


async def test_a_backlogged_listener_holds_new_polls_but_not_relay_commands() -> None:
    fake = FakeGateway()
    for unit in (1, 2, 3):
        fill_unit(fake, unit)
    listener = RecordingListener()
    listener.backlog = True
    async with trio.open_nursery() as nursery:
        port = await fake.start(nursery)
        async with running(bus_gateway(port, poll_interval_ms=10), bindings(range(1, 4)),
                           listener) as bus:
            await until(lambda: bus.statistics().held)
            await trio.sleep(0.1)  # ten poll intervals: nothing new may go out meanwhile
            assert [r for r in fake.requests if r[1] == 4] == []
            assert listener.asked_backlog == 1  # held: not asked again until resumed
            bus.command_relay_nowait(1002, closed=False)  # control never waits for the backlog
            await until(lambda: listener.feedback == [(1002, False)])
            assert [r for r in fake.requests if r[1] == 4] == []
            listener.backlog = False
            bus.resume_nowait()
            await until(lambda: all(listener.count(key) >= 2 for key in (1001, 1002, 1003)))
            statistics = bus.statistics()
        nursery.cancel_scope.cancel()
    assert not statistics.held and statistics.holds == 1
    assert listener.failures == []


async def test_an_early_poll_reads_a_unit_between_cycles() -> None:
    fake = FakeGateway()
    for unit in (1, 2, 3):
        fill_unit(fake, unit)
    listener = RecordingListener()
    async with trio.open_nursery() as nursery:
        port = await fake.start(nursery)
        # Cycles a second apart: without the early poll unit 2 would be read once here.
        gateway = bus_gateway(port, poll_interval_ms=1_000, timeout_ms=500)
        async with running(gateway, bindings(range(1, 4)), listener) as bus:
            await until(lambda: all(listener.count(key) == 1 for key in (1001, 1002, 1003)))
            asked_at = trio.current_time()
            bus.poll_at_nowait(1002, asked_at + 0.05)
            await until(lambda: listener.count(1002) == 2, limit_s=0.5)
            answered_at = trio.current_time()
            statistics = bus.statistics()
        nursery.cancel_scope.cancel()
    assert 0.05 <= answered_at - asked_at < 0.4
    assert listener.count(1001) == listener.count(1003) == 1  # the others wait for the cycle
    assert statistics.cycles == 1  # the early poll was not counted as (or ending) a cycle
    with pytest.raises(KeyError):
        bus.poll_at_nowait(4242, 0.0)


async def test_a_silent_gateway_does_not_delay_another() -> None:
    dead, alive = FakeGateway(), FakeGateway()
    dead.silent = True  # accepts connections, never answers
    for unit in (1, 2, 3):
        fill_unit(dead, unit)
        fill_unit(alive, unit)
    dead_listener, alive_listener = RecordingListener(), RecordingListener()
    async with trio.open_nursery() as nursery:
        dead_port = await dead.start(nursery)
        alive_port = await alive.start(nursery)
        slow = bus_gateway(dead_port, timeout_ms=300, poll_interval_ms=20)
        fast = bus_gateway(alive_port, timeout_ms=300, poll_interval_ms=20)
        async with (
            running(slow, bindings(range(1, 4)), dead_listener),
            running(fast, bindings(range(1, 4)), alive_listener) as alive_bus,
        ):
            await until(lambda: alive_listener.count(1003) >= 1)
            start = trio.current_time()
            # A whole 300 ms timeout of the dead gateway: the live one keeps its 20 ms cycle.
            await until(lambda: len(dead_listener.failures) >= 3)
            elapsed = trio.current_time() - start
            cycles = alive_listener.count(1003)
            assert alive_bus.statistics().last_cycle_ms < 100
        nursery.cancel_scope.cancel()
    assert elapsed >= 0.25
    assert cycles >= elapsed / 0.020 / 3  # generous: a loaded CI box still clears this
    assert alive_listener.failures == []


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_unreachable_gateway_goes_offline_then_comes_back() -> None:
    port = free_port()  # nothing listens here yet: connections are refused
    listener = RecordingListener()
    units = bindings(range(1, 4))
    async with running(bus_gateway(port), units, listener) as bus:
        await until(lambda: sum(1 for _, on, _ in listener.online if not on) == 3)
        assert all("unreachable" in detail for _, _, detail in listener.online)
        assert bus.statistics().units_offline == 3
        fake = FakeGateway()
        for unit in (1, 2, 3):
            fill_unit(fake, unit)
        async with trio.open_nursery() as nursery:
            await fake.start(nursery, port=port)
            await until(lambda: sum(1 for _, on, _ in listener.online if on) == 3)
            await until(lambda: all(listener.count(unit.meter_key) >= 2 for unit in units))
            assert bus.statistics().units_offline == 0
            assert bus.statistics().connected
            nursery.cancel_scope.cancel()


async def test_rtu_over_tcp_polls_and_switches_the_relay() -> None:
    fake = FakeGateway()
    fake.rtu = True
    for unit in (1, 2):
        fill_unit(fake, unit, volts=230.0 + unit)
    listener = RecordingListener()
    async with trio.open_nursery() as nursery:
        port = await fake.start(nursery)
        gateway = bus_gateway(port, transport="rtu-over-tcp", window=8, command_slots=2)
        async with running(gateway, bindings(range(1, 3)), listener) as bus:
            assert bus.gateway.window == 1 and bus.gateway.command_slots == 0
            await until(lambda: listener.count(1002) >= 2)
            bus.command_relay_nowait(1001, closed=False)
            await until(lambda: listener.feedback == [(1001, False)])
        nursery.cancel_scope.cancel()
    assert listener.by_meter[1002][-1].voltage_v == pytest.approx(232.0)
    assert listener.by_meter[1002][-1].register_wh == 12_500
    assert fake.most_frames_at_once == 1
    assert listener.failures == []
