"""``wattkeeper sim --config`` simulates meters of a profile from the config's ``profile_files``."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from protocols.modbus.client import open_modbus_tcp
from server.cli import main
from server.config import load_config
from server.simulate import open_simulated_park
from tests.profile_texts import ACME_PM100
from tests.simulators.test_simulate_command import free_port


def write_park(folder: Path, port: int) -> Path:
    (folder / "meters").mkdir()
    (folder / "meters" / "acme.toml").write_text(ACME_PM100)
    path = folder / "park.toml"
    path.write_text(
        f"""\
profile_files = ["meters/acme.toml"]

[server]
data_dir = "var"
currency = "CNY"

[tariffs.flat]
kind = "flat"
price = "1.00"

[[gateways]]
id = "gw1"
host = "127.0.0.1"
port = {port}

[[meters]]
id = "A-1"
tenant = "t"
gateway = "gw1"
unit = 4
profile = "acme-pm100"
relay_coil = 6
tariff = "flat"
"""
    )
    return path


def test_sim_lists_the_custom_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_park(tmp_path, free_port())
    assert main(["sim", "--config", str(path), "--seconds", "0.1"]) == 0
    assert "1 meters (1 acme-pm100)" in capsys.readouterr().out


async def test_the_simulated_meter_speaks_the_files_register_map(tmp_path: Path) -> None:
    port = free_port()
    config = load_config(write_park(tmp_path, port))
    async with open_simulated_park(config) as park:
        meter = park.meter("gw1", 4)
        assert meter.profile is config.profile("acme-pm100")
        async with open_modbus_tcp("127.0.0.1", port) as client:
            energy = await client.read(4, 3, 0x0100, 2)  # holding registers, low word first
            contact = await client.read(4, 2, 6, 1)  # the relay read back as a discrete input
            voltage = await client.read(4, 3, 0x0000, 1)
        low, high = struct.unpack(">HH", energy.payload)
        kwh = ((high << 16) | low) * 0.01
        assert abs(kwh * 1000 - meter.register_wh(park.clock.now())) < 20  # 10 Wh steps
        assert contact.exception == 0 and contact.payload == b"\x01"
        (decivolts,) = struct.unpack(">H", voltage.payload)
        assert 200 < decivolts / 10 < 260
