"""Small park configs for server-level tests."""

from __future__ import annotations

from pathlib import Path

from server.config import ParkConfig


def park_toml(
    data_dir: Path, meters: int = 3, *, gateway_port: int = 15999, extra_meter_keys: str = ""
) -> str:
    meter_tables = "\n".join(
        f"""
[[meters]]
id = "M-{n}"
tenant = "t{n}"
gateway = "gw1"
unit = {n + 1}
profile = "sdm630"
relay_coil = 0
tariff = "flat"
opening_balance = "100.00"
alarm_levels = ["50.00", "20.00"]
{extra_meter_keys}
"""
        for n in range(meters)
    )
    return f"""
[server]
data_dir = "{data_dir}"
currency = "CNY"

[hub]
listen = "127.0.0.1:18765"

[http]
listen = "127.0.0.1:18080"

[opcua]
endpoint = "opc.tcp://127.0.0.1:14840/wattkeeper/"
security = "none"

[tariffs.flat]
kind = "flat"
price = "1.00"

[[gateways]]
id = "gw1"
host = "127.0.0.1"
port = {gateway_port}
poll_interval = "1s"
{meter_tables}
"""


def small_park(data_dir: Path, meters: int = 3, **kwargs: object) -> ParkConfig:
    return ParkConfig.from_toml_text(park_toml(data_dir, meters, **kwargs), "test-park.toml")  # type: ignore[arg-type]
