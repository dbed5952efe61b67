"""What outlives a connection: a relay opened over OPC UA stays open across a server
restart, history is read from the park's own interval history, and a killed OPC UA process
comes back with the current state while the park goes on."""

from __future__ import annotations

import datetime as dt
import os
import signal
from pathlib import Path

import trio

from server.auth import SYSTEM
from tests.opcua.opcua_parks import asyncio_thread, connect, meter_node, opcua_park, open_opcua

MINUTE_MS = 60_000
T0 = 1_780_000_200_000 - 1_780_000_200_000 % (15 * MINUTE_MS)


async def read(url: str, meter_id: str, *names: str) -> list[object]:
    client = await connect(url)
    try:
        return [await (await meter_node(client, meter_id, name)).read_value() for name in names]
    finally:
        await client.disconnect()


async def call_method(url: str, meter_id: str, method: str, *args: object) -> object:
    client = await connect(url)
    try:
        meter = await meter_node(client, meter_id)
        ns = await client.get_namespace_index("urn:wattkeeper")
        return await meter.call_method(f"{ns}:{method}", *args)
    finally:
        await client.disconnect()


async def test_a_relay_opened_over_opcua_stays_open_across_a_restart(tmp_path: Path) -> None:
    config = opcua_park(tmp_path / "park")
    with asyncio_thread() as loop:
        async with open_opcua(config) as (park, services):
            await loop.run(call_method(services.opcua_url, "M-2", "OpenRelay", "cable work"))
            assert not park.registry.get("M-2").state.relay.closed
        async with open_opcua(config) as (park, services):
            url = services.opcua_url
            assert await loop.run(read(url, "M-2", "RelayClosed", "RelayReason")) == [
                False, "manual"]
            await loop.run(call_method(url, "M-2", "AutoRelay"))
            with trio.fail_after(10):
                while await loop.run(read(url, "M-2", "RelayClosed")) != [True]:
                    await trio.sleep(0.05)
            entries = park.operations.audit_page(SYSTEM, limit=5).entries
            assert [(e.command, e.channel, e.detail) for e in entries][:2] == [
                ("relay", "opcua", "auto"), ("relay", "opcua", "open: cable work")]


async def test_history_read_returns_the_interval_history(tmp_path: Path) -> None:
    async with open_opcua(opcua_park(tmp_path / "park")) as (park, services):
        # Three 15-minute intervals of M-1 through the journal's writer, as the meter actor's
        # closed intervals go: (meter, start, Wh, minor units, band, register, balance).
        quarter = 15 * MINUTE_MS
        park.journal.put_history_nowait([
            ("M-1", T0, 1_000, 100, "flat", 11_000, 99_00),
            ("M-1", T0 + quarter, 2_000, 200, "flat", 13_000, 97_00),
            ("M-1", T0 + 2 * quarter, 500, 50, "flat", 13_500, 96_50),
            ("M-2", T0, 9_999, 999, "flat", 9_999, 90_01),
        ])
        start = dt.datetime.fromtimestamp(T0 / 1000, dt.UTC)
        end = start + dt.timedelta(hours=1)

        async def history() -> dict[str, list[tuple[float, dt.datetime]]]:
            client = await connect(services.opcua_url)
            try:
                out = {}
                for name in ("EnergyKWh", "PowerW", "Balance"):
                    node = await meter_node(client, "M-1", name)
                    values = await node.read_raw_history(start, end)
                    out[name] = [(v.Value.Value, v.SourceTimestamp) for v in values]
                return out
            finally:
                await client.disconnect()

        with asyncio_thread() as loop, trio.fail_after(10):
            while True:  # the writer writes history in the background
                seen = await loop.run(history())
                if len(seen["EnergyKWh"]) == 3:
                    break
                await trio.sleep(0.05)
    stamps = [start + dt.timedelta(minutes=15 * n) for n in (1, 2, 3)]  # interval ends
    assert seen["EnergyKWh"] == list(zip([11.0, 13.0, 13.5], stamps, strict=True))
    assert seen["PowerW"] == list(zip([4000.0, 8000.0, 2000.0], stamps, strict=True))
    assert seen["Balance"] == list(zip([99.0, 97.0, 96.5], stamps, strict=True))


async def test_a_killed_opcua_process_comes_back_with_the_current_state(tmp_path: Path) -> None:
    async with open_opcua(opcua_park(tmp_path / "park")) as (park, services):
        opcua = services.opcua
        assert opcua is not None and opcua.pid is not None
        os.kill(opcua.pid, signal.SIGKILL)
        await park.operations.top_up(SYSTEM, "M-3", 7_00, "while-opcua-is-down")
        assert park.registry.get("M-3").state.balance == 107_00
        with trio.fail_after(15):
            while opcua.restarts == 0 or opcua.pid is None:
                await trio.sleep(0.05)
        with asyncio_thread() as loop:
            assert await loop.run(read(services.opcua_url, "M-3", "Balance")) == [107.0]
            assert await loop.run(call_method(services.opcua_url, "M-3", "TopUp", 1.0,
                                              "after-restart")) == 108.0
