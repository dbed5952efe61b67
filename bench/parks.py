"""The park config the field benchmarks run: every simulated gateway and unit, one flat tariff.

``bench modbus`` and ``bench chaos`` both poll a simulator's gateways through a real park;
this writes that park's TOML, so both measure the same configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

HOST: Final = "127.0.0.1"
PRICE: Final = "1.00"
"""Per kWh, flat: the expected charge of any consumption is exact."""
OVERLOAD_W: Final = 30_000


def park_toml(
    data_dir: Path,
    ports: dict[str, int],
    per_gateway: int,
    *,
    profile: str,
    window: int,
    poll_interval: str,
    overload_delay_ms: int,
    opening_balance: str,
) -> str:
    """Gateways ``ports`` (id -> port on ``HOST``), ``per_gateway`` units each, meters
    ``M-0001``... in gateway order."""
    parts = [f"""
[server]
data_dir = "{data_dir}"
currency = "CNY"

[tariffs.flat]
kind = "flat"
price = "{PRICE}"

[meter_defaults]
profile = "{profile}"
relay_coil = 0
tariff = "flat"
opening_balance = "{opening_balance}"
overload_w = {OVERLOAD_W}
overload_delay = "{overload_delay_ms}ms"
"""]
    for gateway, port in ports.items():
        parts.append(f"""
[[gateways]]
id = "{gateway}"
host = "{HOST}"
port = {port}
poll_interval = "{poll_interval}"
timeout = "1s"
window = {window}
""")
    number = 0
    for gateway in ports:
        for unit in range(1, per_gateway + 1):
            number += 1
            parts.append(f"""
[[meters]]
id = "M-{number:04d}"
tenant = "t{number}"
gateway = "{gateway}"
unit = {unit}
""")
    return "".join(parts)
