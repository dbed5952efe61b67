"""Alarms as OPC UA alarm conditions: raised, acknowledged through OPC UA's standard
Acknowledge or through the park's own command (the console's), cleared; one acknowledgement,
seen alike everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
from asyncua import ua

from server.auth import SYSTEM
from tests.opcua.opcua_parks import asyncio_thread, connect, opcua_park, open_opcua
from tests.ws.parks import feed, settle


class Events:
    def __init__(self) -> None:
        self.seen: list[Any] = []

    def event_notification(self, event: Any) -> None:
        self.seen.append(event)

    def of(self, source: str) -> list[Any]:
        return [e for e in self.seen if e.SourceName == source]

    async def wait_for(self, source: str, **fields: Any) -> Any:
        with trio.fail_after(15):
            while True:
                for event in self.of(source):
                    if all(getattr(event, name.replace("__", "/")) == value
                           for name, value in fields.items()):
                        return event
                await trio.sleep(0.02)


async def trip_overload(park: Any, meter_id: str) -> None:
    actor = park.registry.get(meter_id)
    register = 1_000
    with trio.fail_after(10):
        while not actor.state.relay.locked_out:
            register += 1
            feed(park, meter_id, register, 9_000.0)
            await trio.sleep(0.05)


async def test_an_overload_is_a_condition_acknowledged_through_opcua(tmp_path: Path) -> None:
    async with open_opcua(opcua_park(tmp_path / "park")) as (park, services):
        with asyncio_thread() as loop:
            events = Events()
            client = await loop.run(connect(services.opcua_url))

            async def subscribe() -> None:
                subscription = await client.create_subscription(50, events)
                await subscription.subscribe_events(ua.ObjectIds.Server,
                                                    ua.ObjectIds.AlarmConditionType)

            await loop.run(subscribe())
            await trip_overload(park, "M-5")
            raised = await events.wait_for("M-5", ConditionName="overload",
                                           ActiveState__Id=True, AckedState__Id=False)
            assert raised.Severity == 900 and raised.Retain is True
            assert raised.NodeId.Identifier.startswith("alarm:M-5")

            async def acknowledge(event_id: bytes) -> None:
                condition = client.get_node(raised.NodeId)
                await condition.call_method(
                    ua.NodeId(ua.ObjectIds.AcknowledgeableConditionType_Acknowledge),
                    ua.Variant(event_id, ua.VariantType.ByteString),
                    ua.LocalizedText("seen from the HMI"))

            await loop.run(acknowledge(raised.EventId))
            acked = await events.wait_for("M-5", ConditionName="overload",
                                          AckedState__Id=True)
            assert acked.ActiveState.Text == "Active"  # seen, still there
            # The park itself has it acknowledged, and audited as an OPC UA command.
            [alarm] = [a for a in park.registry.get("M-5").state.alarms.active
                       if a.kind == "overload"]
            assert alarm.acknowledged
            page = park.operations.audit_page(SYSTEM, limit=5)
            newest = page.entries[0]
            assert (newest.command, newest.channel, newest.result) == (
                "ack_alarm", "opcua", "accepted")
            # A stale EventId is refused: the client must acknowledge what it has seen.
            stale: str = await loop.run(_refusal(acknowledge(raised.EventId)))
            assert stale in ("BadConditionBranchAlreadyAcked", "BadEventIdUnknown")
            # Resetting the lockout clears it: the condition goes inactive and is not retained.
            feed(park, "M-5", 10_000, 100.0)
            await settle(park)
            await park.operations.reset_lockout(SYSTEM, "M-5", "reset-1")
            cleared = await events.wait_for("M-5", ConditionName="overload",
                                            ActiveState__Id=False)
            assert cleared.Retain is False
            await loop.run(client.disconnect())


async def _refusal(coroutine: Any) -> str:
    try:
        await coroutine
    except ua.UaStatusCodeError as error:
        return type(error).__name__
    return "accepted"


async def test_an_acknowledgement_in_the_console_shows_in_opcua(tmp_path: Path) -> None:
    async with open_opcua(opcua_park(tmp_path / "park")) as (park, services):
        with asyncio_thread() as loop:
            events = Events()
            client = await loop.run(connect(services.opcua_url))

            async def subscribe_on_the_meter() -> None:
                # Subscribed on the meter object itself, not the Server object.
                ns = await client.get_namespace_index("urn:wattkeeper")
                meter = await client.nodes.objects.get_child(
                    [f"{ns}:Park", f"{ns}:Meters", f"{ns}:M-0"])
                subscription = await client.create_subscription(50, events)
                await subscription.subscribe_events(meter, ua.ObjectIds.AlarmConditionType)

            await loop.run(subscribe_on_the_meter())
            feed(park, "M-0", 5_000, 100.0)
            await settle(park)
            await trio.sleep(0.05)
            feed(park, "M-0", 10, 100.0)  # the register went backwards: tamper
            raised = await events.wait_for("M-0", ConditionName="tamper", ActiveState__Id=True)
            assert raised.Severity == 700 and "register_rollback" in raised.Message.Text
            [alarm] = park.registry.get("M-0").state.alarms.active
            await park.operations.ack_alarm(SYSTEM, f"M-0/{alarm.alarm_id}", "console-ack")
            acked = await events.wait_for("M-0", ConditionName="tamper", AckedState__Id=True)
            assert acked.EventId != raised.EventId
            # Tamper is evidence: acknowledging it clears it.
            await events.wait_for("M-0", ConditionName="tamper", ActiveState__Id=False)
            await loop.run(client.disconnect())


async def test_a_client_that_connects_later_gets_the_active_conditions_by_refresh(
        tmp_path: Path) -> None:
    async with open_opcua(opcua_park(tmp_path / "park")) as (park, services):
        await trip_overload(park, "M-5")  # before any client is connected
        with asyncio_thread() as loop:
            events = Events()
            client = await loop.run(connect(services.opcua_url))

            async def subscribe_and_refresh() -> None:
                subscription = await client.create_subscription(50, events)
                await subscription.subscribe_events(ua.ObjectIds.Server,
                                                    ua.ObjectIds.AlarmConditionType)
                await client.get_node(ua.ObjectIds.ConditionType).call_method(
                    ua.NodeId(ua.ObjectIds.ConditionType_ConditionRefresh),
                    ua.Variant(subscription.subscription_id, ua.VariantType.UInt32))

            with trio.fail_after(10):
                while not any(a.kind == "overload"
                              for a in park.registry.get("M-5").state.alarms.active):
                    await trio.sleep(0.02)
            await trio.sleep(0.2)  # the stream's tick has reached the OPC UA process
            await loop.run(subscribe_and_refresh())
            refreshed = await events.wait_for("M-5", ConditionName="overload",
                                              ActiveState__Id=True)
            assert refreshed.Retain is True
            await loop.run(client.disconnect())
