"""``wattkeeper sim`` end to end, and the park the demo simulates from a config."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trio

from protocols.modbus.client import open_modbus_tcp
from server.cli import main
from server.config import ParkConfig
from server.simulate import open_simulated_park


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_sim_prints_where_it_listens(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["sim", "--meters", "5", "--gateways", "2", "--port", "0", "--seconds", "0.2",
                   "--fault", "gw1/2:overload:power=40kW,for=1s"])
    out = capsys.readouterr().out
    assert status == 0
    assert "2 gateways" in out and "5 meters (5 sdm630)" in out
    assert "gw1 " in out and "units 1-3" in out and "units 1-2" in out
    assert "fault gw1/2:overload:power=40000,for=1s" in out
    assert "stopped; 0 requests answered" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--meters", "4", "--fault", "gw1/3:overload"], "overload needs power"),
        (["--meters", "4", "--fault", "gw2/1:silent"], "no gateway 'gw2'"),
        (["--meters", "4", "--fault", "gw1/3:tamper"], "no tamper register"),
        (["--meters", "4", "--profile", "sdm999"], "unknown profile 'sdm999'"),
        (["--meters", "2", "--gateways", "3"], "at least one meter per gateway"),
        (["--meters", "600"], "more than 247 units"),
        ([], "nothing to simulate"),
        (["--meters", "2", "--scenario", "/nonexistent.toml"], "cannot read scenario"),
    ],
)
def test_sim_refuses_bad_input_in_words(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sim", "--port", "0", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("wattkeeper sim: ") and message in err


def test_sim_refuses_an_unknown_profile_in_a_config_in_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "park.toml"
    config.write_text(
        '[server]\ndata_dir = "var"\ncurrency = "CNY"\n\n[tariffs.flat]\nkind = "flat"\n'
        'price = "1.00"\n\n[[gateways]]\nid = "gw1"\nhost = "127.0.0.1"\nport = 5020\n\n'
        '[[meters]]\nid = "M-1"\ntenant = "t"\ngateway = "gw1"\nunit = 1\n'
        'profile = "sdm999"\ntariff = "flat"\nopening_balance = "1.00"\n'
    )
    assert main(["sim", "--config", str(config), "--seconds", "0.1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("wattkeeper sim: ")
    assert 'meters[0].profile: meter "M-1": unknown profile "sdm999"' in err


def test_sim_reports_a_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["sim", "--meters", "2", "--port", str(port), "--seconds", "1"]) == 1
    assert f"port {port} on 127.0.0.1 is already in use" in capsys.readouterr().err


def test_sim_runs_a_scenario_and_exits_by_its_outcome(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    passing = tmp_path / "quiet.toml"
    passing.write_text(
        '[park]\nmeters = 2\n\n[[faults]]\nspec = "gw1/1:silent:for=200ms"\n\n'
        '[[expect]]\ntarget = "gw1/2"\nexpect = "no_coil_write"\nwithin = "300ms"\n'
    )
    assert main(["sim", "--port", "0", "--scenario", str(passing)]) == 0
    out = capsys.readouterr().out
    assert "PASS  no coil write on gw1/2" in out and "-> PASS" in out

    failing = tmp_path / "trip.toml"
    failing.write_text(
        '[[faults]]\nspec = "gw1/1:overload:power=45kW"\n\n'
        '[[expect]]\ntarget = "gw1/1"\nexpect = "coil_open"\nwithin = "300ms"\n'
    )
    assert main(["sim", "--port", "0", "--meters", "1", "--scenario", str(failing)]) == 1
    assert "FAIL  coil opened (write 0) on gw1/1" in capsys.readouterr().out


CONFIG = """
[server]
data_dir = "{data}"
currency = "CNY"

[tariffs.flat]
kind = "flat"
price = "1.00"

[[gateways]]
id = "north"
host = "127.0.0.1"
port = {port}

[[meters]]
id = "W-1"
tenant = "a"
gateway = "north"
unit = 7
profile = "water"
relay_coil = 2
tariff = "flat"
opening_balance = "10.00"

[[meters]]
id = "E-1"
tenant = "b"
gateway = "north"
unit = 9
profile = "sdm120"
relay_coil = 0
tariff = "flat"
overload_w = 5000
opening_balance = "10.00"
"""


async def test_open_simulated_park_serves_exactly_the_configured_meters(tmp_path: Path) -> None:
    port = free_port()
    config = ParkConfig.from_toml_text(CONFIG.format(data=tmp_path, port=port), "park.toml")
    async with open_simulated_park(config) as park:
        assert park.ports == {"north": port}
        assert "2 meters (1 sdm120, 1 water)" in park.describe()
        assert park.meter_by_id("E-1").rated_w == 4000.0  # below overload_w
        async with open_modbus_tcp("127.0.0.1", port) as client:
            water = await client.read(7, 4, 0, 5)
            assert water.exception == 0 and len(water.payload) == 10
            assert (await client.read(9, 4, 0x48, 2)).exception == 0
            assert (await client.read(1, 4, 0, 2)).exception == 0x0B
            assert (await client.write_coil(7, 2, False)).exception == 0
            assert (await client.read(7, 1, 0, 4)).payload == b"\x00"
            assert (await client.read(9, 1, 0, 1)).payload == b"\x01"
        await trio.sleep(0)
    assert [w.meter_id for w in park.coil_log] == ["W-1"]


def test_sim_speaks_rtu_over_tcp_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["sim", "--meters", "4", "--gateways", "2", "--port", "0",
                   "--transport", "rtu-over-tcp", "--seconds", "0.1"])
    out = capsys.readouterr().out
    assert status == 0 and out.count("(RTU over TCP)") == 2

    config = tmp_path / "park.toml"
    text = CONFIG.format(data=tmp_path, port=free_port())
    config.write_text(text.replace("port = ", 'transport = "rtu-over-tcp"\nport = '))
    assert main(["sim", "--config", str(config), "--seconds", "0.1"]) == 0
    assert "north" in (out := capsys.readouterr().out) and "(RTU over TCP)" in out
    # The config says each gateway's transport; the option would contradict it.
    assert main(["sim", "--config", str(config), "--transport", "tcp", "--seconds", "0.1"]) == 1
    assert "--transport goes with --meters" in capsys.readouterr().err


async def test_open_simulated_park_takes_each_gateways_transport(tmp_path: Path) -> None:
    from protocols.modbus.rtu import crc16, encode_rtu_read

    port = free_port()
    text = CONFIG.format(data=tmp_path, port=port).replace(
        "port = ", 'transport = "rtu-over-tcp"\nport = '
    )
    config = ParkConfig.from_toml_text(text, "park.toml")
    async with open_simulated_park(config) as park:
        assert park.gateways["north"].transport == "rtu-over-tcp"
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(encode_rtu_read(9, 4, 0x48, 2))
            reply = b""
            with trio.fail_after(2):
                while len(reply) < 9:
                    reply += await stream.receive_some(64)
    assert reply[:3] == b"\x09\x04\x04" and crc16(reply[:7]) == int.from_bytes(reply[7:], "little")
