"""The OPC UA server against asyncua clients over loopback (security none: see
test_opcua_security.py for sign-encrypt): the contract's browse path and variables,
data-change subscriptions, the prepaid methods through the journal and the audit log."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest
import trio
from asyncua import ua

from server.auth import SYSTEM
from server.errors import UserError, fatal_reason, leaves
from tests.opcua.opcua_parks import (
    asyncio_thread,
    call,
    connect,
    meter_node,
    opcua_park,
    open_opcua,
)
from tests.ws.parks import feed, settle


async def test_browse_read_and_units(tmp_path: Path) -> None:
    async with open_opcua(opcua_park(tmp_path / "park")) as (_park, services):
        with asyncio_thread() as loop:
            async def scenario() -> dict[str, object]:
                client = await connect(services.opcua_url)
                try:
                    meter = await meter_node(client, "M-1")
                    names = sorted([(await n.read_browse_name()).Name
                                    for n in await meter.get_children()])
                    values = {name: await (await meter_node(client, "M-1", name)).read_value()
                              for name in ("Balance", "PowerW", "EnergyKWh", "RelayClosed",
                                           "Alarm", "Online")}
                    balance = await meter_node(client, "M-1", "Balance")
                    unit = await (await balance.get_child("0:EngineeringUnits")).read_value()
                    ns = await client.get_namespace_index("urn:wattkeeper")
                    park = await client.nodes.objects.get_child(f"{ns}:Park")
                    total = await (await park.get_child(f"{ns}:BalanceSum")).read_value()
                    gateways = await (await park.get_child(f"{ns}:Gateways")).get_children()
                    return {"names": names, "values": values, "unit": unit.DisplayName.Text,
                            "total": total,
                            "gateways": sorted([(await g.read_browse_name()).Name
                                                for g in gateways])}
                finally:
                    await client.disconnect()

            seen = await loop.run(scenario())
    assert seen["names"] == sorted(["AckAlarm", "Alarm", "AutoRelay", "Balance", "EnergyKWh",
                                    "OpenRelay", "Online", "PowerW", "RelayClosed",
                                    "RelayReason", "ResetLockout", "TopUp"])
    assert seen["values"] == {"Balance": 100.0, "PowerW": 0.0, "EnergyKWh": 0.0,
                              "RelayClosed": True, "Alarm": "none", "Online": True}
    assert seen["unit"] == "CNY"
    assert seen["total"] == 600.0  # six meters of 100.00
    assert seen["gateways"] == ["gw1", "gw2"]


async def test_a_subscribed_client_sees_a_reading_change(tmp_path: Path) -> None:
    async with open_opcua(opcua_park(tmp_path / "park")) as (park, services):
        with asyncio_thread() as loop:
            changes: list[object] = []

            class Handler:
                def datachange_notification(self, node: object, value: object,
                                            data: object) -> None:
                    changes.append(value)

            client = await loop.run(connect(services.opcua_url))

            async def subscribe() -> None:
                power = await meter_node(client, "M-2", "PowerW")
                subscription = await client.create_subscription(100, Handler())
                await subscription.subscribe_data_change(power)

            await loop.run(subscribe())
            with trio.fail_after(10):
                while not changes:  # the initial value
                    await trio.sleep(0.02)
            feed(park, "M-2", 1_000, 1234.5)
            await settle(park)
            with trio.fail_after(10):
                while 1234.5 not in changes:
                    await trio.sleep(0.02)
            await loop.run(client.disconnect())
    assert changes[0] == 0.0


async def test_top_up_is_idempotent_on_its_reference_and_audited(tmp_path: Path) -> None:
    async with open_opcua(opcua_park(tmp_path / "park")) as (park, services):
        with asyncio_thread() as loop:
            async def scenario() -> list[object]:
                client = await connect(services.opcua_url)
                try:
                    meter = await meter_node(client, "M-0")
                    ns = await client.get_namespace_index("urn:wattkeeper")
                    first = await meter.call_method(f"{ns}:TopUp", 25.5, "pay-1")
                    again = await meter.call_method(f"{ns}:TopUp", 25.5, "pay-1")
                    other = await meter.call_method(f"{ns}:TopUp", 1.0, "pay-2")
                    # The same reference for another meter is another payment: refused.
                    reused = await call(client, "M-1", "TopUp", 25.5, "pay-1")
                    return [first, again, other, reused.StatusCode.name]
                finally:
                    await client.disconnect()

            answers = await loop.run(scenario())
        assert answers == [125.5, 125.5, 126.5, "BadInvalidState"]
        assert park.registry.get("M-0").state.balance == 126_50
        assert park.registry.get("M-1").state.balance == 100_00
        page = park.operations.audit_page(SYSTEM, limit=10)
        topups = [e for e in page.entries if e.command == "topup"]
        assert {(e.channel, e.user, e.reference) for e in topups} == {
            ("opcua", "op", "pay-1"), ("opcua", "op", "pay-2")}


async def test_wrong_arguments_get_a_bad_status_not_a_crash(tmp_path: Path) -> None:
    async with open_opcua(opcua_park(tmp_path / "park")) as (park, services):
        with asyncio_thread() as loop:
            async def scenario() -> list[object]:
                client = await connect(services.opcua_url)
                try:
                    results = [
                        await call(client, "M-0", "TopUp", ua.Variant("10.00"), "r1"),
                        await call(client, "M-0", "TopUp", 10.0),
                        await call(client, "M-0", "TopUp", 0.001, "r2"),
                        await call(client, "M-0", "TopUp", -5.0, "r3"),
                        await call(client, "M-0", "TopUp", float("nan"), "r4"),
                        await call(client, "M-0", "TopUp", 1.0,
                                   ua.Variant(7, ua.VariantType.Int32)),
                        await call(client, "M-0", "OpenRelay", ua.Variant(3.0)),
                        await call(client, "M-0", "AckAlarm", "M-0/999"),
                    ]
                    return [(r.StatusCode.name, [s.name for s in r.InputArgumentResults],
                             [d.AdditionalInfo for d in r.InputArgumentDiagnosticInfos])
                            for r in results]
                finally:
                    await client.disconnect()

            results = await loop.run(scenario())
        assert [status for status, _, _ in results] == [
            "BadInvalidArgument", "BadArgumentsMissing", "BadInvalidArgument",
            "BadInvalidArgument", "BadInvalidArgument", "BadInvalidArgument",
            "BadInvalidArgument", "BadInvalidArgument"]
        assert results[0][1] == ["BadTypeMismatch", "Good"]
        assert "Double" in (results[0][2][0] or "")
        assert "decimal places" in (results[2][2][0] or "")
        assert park.registry.get("M-0").state.balance == 100_00  # no money moved


async def test_a_viewer_may_read_but_not_top_up(tmp_path: Path) -> None:
    async with open_opcua(opcua_park(tmp_path / "park")) as (park, services):
        with asyncio_thread() as loop:
            async def scenario() -> object:
                client = await connect(services.opcua_url, "eve", "eve-secret")
                try:
                    await (await meter_node(client, "M-0", "Balance")).read_value()
                    return (await call(client, "M-0", "TopUp", 5.0, "v1")).StatusCode.name
                finally:
                    await client.disconnect()

            assert await loop.run(scenario()) == "BadUserAccessDenied"
        assert park.registry.get("M-0").state.balance == 100_00


async def test_clients_cannot_write_and_metrics_count_sessions(tmp_path: Path) -> None:
    async with open_opcua(opcua_park(tmp_path / "park")) as (park, services):
        with asyncio_thread() as loop:
            client = await loop.run(connect(services.opcua_url))

            async def write() -> str:
                balance = await meter_node(client, "M-0", "Balance")
                try:
                    await balance.write_value(ua.Variant(1e9, ua.VariantType.Double))
                except ua.UaStatusCodeError as error:
                    return type(error).__name__
                return "written"

            refused = await loop.run(write())
            assert refused in ("BadNotWritable", "BadUserAccessDenied")
            assert park.registry.get("M-0").state.balance == 100_00
            with trio.fail_after(10):
                while True:  # the OPC UA process reports its figures once a second
                    async with httpx.AsyncClient(base_url=services.http_url) as http:
                        metrics = (await http.get("/metrics")).text.splitlines()
                    if "wattkeeper_opcua_sessions 1.0" in metrics:
                        break
                    await trio.sleep(0.2)
            assert "wattkeeper_opcua_restarts_total 0.0" in metrics
            await loop.run(client.disconnect())


async def test_a_taken_port_stops_the_server_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        keys = f'endpoint = "opc.tcp://127.0.0.1:{port}/wattkeeper/"\nsecurity = "none"'
        with pytest.raises(BaseException) as stopped:
            async with open_opcua(opcua_park(tmp_path / "park", keys)):
                raise AssertionError("the services started without their OPC UA server")
    assert [type(leaf) for leaf in leaves(stopped.value)] == [UserError]
    reason = fatal_reason(stopped.value)
    assert f"cannot listen on opc.tcp://127.0.0.1:{port}/wattkeeper/" in reason
    assert "[opcua] endpoint" in reason
