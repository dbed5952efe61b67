"""A small park whose books the report tests compute by hand: two tenants, three meters on a
time-of-use tariff (valley 00-08 0.40, flat 08-18 0.80, peak 18-24 1.20 per kWh, UTC), 15-minute
history intervals."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import trio

from policies.records import Reading
from server.app import Park
from server.auth import Caller
from server.config import ParkConfig

DAY = dt.datetime(2026, 11, 10, tzinfo=dt.UTC)
MINUTE = 60_000
OPERATOR = Caller("op", "operator", "http", "10.0.0.7:5000")
PAYMENTS = Caller("payment:wechat", "operator", "payment", "10.0.0.9:443")


def at(hour: int, minute: int = 0, day: int = 0) -> int:
    return int((DAY + dt.timedelta(days=day, hours=hour, minutes=minute)).timestamp() * 1000)


def books_toml(data_dir: Path) -> str:
    meters = "".join(f"""
[[meters]]
id = "{meter}"
tenant = "{tenant}"
gateway = "gw1"
unit = {unit}
profile = "sdm630"
relay_coil = 0
tariff = "tou"
opening_balance = "{opening}"
""" for unit, (meter, tenant, opening) in enumerate(
        [("M-A1", "acme", "100.00"), ("M-A2", "acme", "20.00"), ("M-B1", "beta", "5.00")],
        start=1))
    return f"""
[server]
data_dir = "{data_dir}"
currency = "CNY"

[tariffs.flat]
kind = "flat"
price = "1.00"

[tariffs.tou]
kind = "tou"
bands = [
  {{ name = "valley", start = "00:00", end = "08:00", price = "0.40" }},
  {{ name = "flat",   start = "08:00", end = "18:00", price = "0.80" }},
  {{ name = "peak",   start = "18:00", end = "24:00", price = "1.20" }},
]

[[gateways]]
id = "gw1"
host = "127.0.0.1"
port = 1
{meters}
"""


def books_config(data_dir: Path) -> ParkConfig:
    return ParkConfig.from_toml_text(books_toml(data_dir), "books.toml")


async def read(park: Park, meter_id: str, ts_ms: int, register_wh: int,
               power_w: float = 1000.0) -> None:
    """A reading labelled ``ts_ms`` (its control time too: the tests' clock)."""
    actor = park.registry.get(meter_id)
    park.registry.deliver_reading_nowait(actor.key, Reading(ts_ms, register_wh, power_w,
                                                            mono_ms=ts_ms))
    while park.dispatcher.queue_depth:
        await trio.sleep(0.001)
