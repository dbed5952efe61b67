"""A small park for the hub tests, and a hub on a free port over it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from policies.records import Reading
from server.app import Park, open_park
from server.config import ListenAddress, ParkConfig
from server.services import Services, open_services

# (meter id, tenant, gateway): M-5 trips on overload and locks out at the first trip.
METERS = [("M-0", "acme", "gw1"), ("M-1", "acme", "gw1"), ("M-2", "beta", "gw1"),
          ("M-3", "beta", "gw2"), ("M-4", "gamma", "gw2"), ("M-5", "gamma", "gw2")]
USERS = {"op": ("op-secret", "operator"), "eve": ("eve-secret", "viewer"),
         "root": ("root-secret", "admin")}


def hub_park_toml(data_dir: Path, *, hub_keys: str = "", extra_meters: int = 0,
                  opcua: str | None = None) -> str:
    """``opcua``: the keys of an ``[opcua]`` table (none: no OPC UA server)."""
    users = "".join(f"""
[[users]]
name = "{name}"
password = "{password}"
role = "{role}"
""" for name, (password, role) in USERS.items())
    meters = [*METERS, *((f"X-{n}", "bulk", f"bulk{n // 200}") for n in range(extra_meters))]
    bulk = "".join(f"""
[[gateways]]
id = "bulk{n}"
host = "127.0.0.1"
port = {10 + n}
""" for n in range(-(-extra_meters // 200)))
    tables = "".join(f"""
[[meters]]
id = "{meter}"
tenant = "{tenant}"
gateway = "{gateway}"
unit = {unit % 200 + 1}
profile = "sdm630"
relay_coil = 0
tariff = "flat"
opening_balance = "100.00"
alarm_levels = ["50.00", "20.00"]
{'overload_w = 5000' if meter == 'M-5' else ''}
{'overload_delay = "1s"' if meter == 'M-5' else ''}
{'lockout_trips = 1' if meter == 'M-5' else ''}
""" for unit, (meter, tenant, gateway) in enumerate(meters))
    return f"""
[server]
data_dir = "{data_dir}"
currency = "CNY"

[hub]
listen = "127.0.0.1:18765"  # tests override the port with 0 (a free one)
{hub_keys}

{"" if opcua is None else "[opcua]" + chr(10) + opcua}

[tariffs.flat]
kind = "flat"
price = "1.00"

[[gateways]]
id = "gw1"
host = "127.0.0.1"
port = 1
poll_interval = "1s"

[[gateways]]
id = "gw2"
host = "127.0.0.1"
port = 2
poll_interval = "1s"
{bulk}
{users}
{tables}
"""


def hub_park(data_dir: Path, **kwargs: Any) -> ParkConfig:
    return ParkConfig.from_toml_text(hub_park_toml(data_dir, **kwargs), "hub-park.toml")


@asynccontextmanager
async def open_hub(config: ParkConfig, **overrides: Any) -> AsyncIterator[tuple[Park, Services]]:
    """The park (no field: tests feed readings) with its stream and hub on a free port."""
    async with open_park(config, with_field=False) as park, open_services(
            park, hub_overrides={"port": 0, **overrides},
            http_listen=ListenAddress("127.0.0.1", 0)) as services:
        yield park, services


def feed(park: Park, meter_id: str, register_wh: int, power_w: float) -> None:
    """A reading for ``meter_id`` now, through the registry as the field would deliver it."""
    actor = park.registry.get(meter_id)
    park.registry.deliver_reading_nowait(
        actor.key, Reading(park.clock.wall_ms(), register_wh, power_w,
                           mono_ms=park.clock.mono_ms()))


async def settle(park: Park) -> None:
    while park.dispatcher.queue_depth:
        await trio.sleep(0.001)


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``check()`` holds: the hub's statistics come from its own process, a tenth
    of a second late."""
    with trio.fail_after(timeout):
        while not check():
            await trio.sleep(0.02)
