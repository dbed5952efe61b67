"""A plain pymodbus client (not our code) reads the documented registers from the simulator."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient

from simulators.park import ParkPlan

from .sim_thread import SimParkThread


async def _talk(port: int) -> dict[str, Any]:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
    try:
        assert await client.connect()
        f32 = client.DATATYPE.FLOAT32
        block = await client.read_input_registers(0x0000, count=74, device_id=2)
        assert not block.isError()
        voltage = await client.read_input_registers(0x0000, count=2, device_id=2)
        current = await client.read_input_registers(0x0006, count=2, device_id=2)
        power = await client.read_input_registers(0x000C, count=2, device_id=2)
        total = await client.read_input_registers(0x0034, count=2, device_id=2)
        frequency = await client.read_input_registers(0x0046, count=2, device_id=2)
        energy = await client.read_input_registers(0x0048, count=2, device_id=2)
        coil_before = await client.read_coils(0, count=1, device_id=2)
        written = await client.write_coil(0, False, device_id=2)
        coil_after = await client.read_coils(0, count=1, device_id=2)
        power_after = await client.read_input_registers(0x0034, count=2, device_id=2)
        unknown = await client.read_input_registers(0, count=2, device_id=77)

        def value(reply: Any) -> float:
            result = client.convert_from_registers(reply.registers, f32)
            assert isinstance(result, float)
            return result

        return {
            "block_energy": client.convert_from_registers(block.registers[0x48:0x4A], f32),
            "voltage": value(voltage),
            "current": value(current),
            "power": value(power),
            "total": value(total),
            "frequency": value(frequency),
            "energy": value(energy),
            "coil_before": coil_before.bits[0],
            "write_ok": not written.isError(),
            "coil_after": coil_after.bits[0],
            "power_after": value(power_after),
            "unknown_error": unknown.isError(),
        }
    finally:
        client.close()


def test_pymodbus_reads_the_documented_sdm630_map() -> None:
    with SimParkThread(ParkPlan.uniform(meters=3, gateways=1, port=0)) as park:
        meter = park.meter("gw1", 2)
        got = asyncio.run(_talk(park.ports["gw1"]))
        expected_register_kwh = meter.register_wh(park.clock.now()) / 1000
        log = list(park.coil_log)
    assert 225.0 < got["voltage"] < 235.0
    assert 49.9 < got["frequency"] < 50.1
    assert got["total"] == pytest.approx(3 * got["power"], rel=1e-5)
    assert got["current"] == pytest.approx(got["power"] / got["voltage"], rel=0.02)
    assert got["energy"] == pytest.approx(expected_register_kwh, rel=1e-5)
    # The same value read as part of the 74-register poll (a quantum may pass in between).
    assert got["block_energy"] == pytest.approx(got["energy"], abs=0.1)
    assert got["coil_before"] is True
    assert got["write_ok"] and got["coil_after"] is False
    assert got["power_after"] == 0.0
    assert got["unknown_error"]
    assert [(w.unit, w.address, w.on) for w in log] == [(2, 0, False)]
