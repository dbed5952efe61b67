"""The field side of a park: one Modbus bus per gateway, wired to the meter actors.

Theory of operation
-------------------
``start_field`` builds a ``GatewayBus`` per configured gateway with a ``UnitBinding`` per
meter behind it (the meter's dense registry key, Modbus unit, profile and relay coil), and
connects both directions:

* bus -> actors: ``MeterBusListener`` turns what a bus learns into messages for meter actors
  (readings on the hot path go straight into the run queue; connectivity changes and coil
  read-backs are policy inputs);
* actors -> bus: the router's relay sink finds the meter's bus by key and queues the coil
  write, which the bus sends ahead of any further poll.

Garbage and exception replies are not meter-policy matters: the listener raises one
``comm_fault`` alarm per meter (cleared by the next good reading) so an operator sees a
misbehaving gateway or meter without the alarm stream being flooded once per poll.

After a restart the physical coils may not match what the meters' states command (someone
switched a relay by hand, a gateway power-cycled), so every meter's commanded position is
written once when the field starts; the coil read-back then confirms it.
"""

from __future__ import annotations

import logging

import attrs
import trio

from actors.effects import AlarmEvent, EffectRouter
from actors.meter import MeterActor
from actors.registry import ParkRegistry
from policies.records import ConnectivityChanged, Reading, RelayCommand, RelayFeedback
from protocols.modbus.bus import BusGateway, GatewayBus, UnitBinding
from protocols.modbus.profiles import Profile, builtin_profiles
from server.config import GatewaySection, ParkConfig

log = logging.getLogger(__name__)

COMM_FAULT = "comm_fault"


class MeterBusListener:
    """Routes bus observations into meter actors (see the module docstring)."""

    def __init__(self, registry: ParkRegistry, router: EffectRouter) -> None:
        self._registry = registry
        self._router = router
        self._comm_alarmed: set[int] = set()
        self.failures = {"timeout": 0, "exception": 0, "garbage": 0}

    def reading(self, meter_key: int, reading: Reading) -> None:
        self._registry.deliver_reading_nowait(meter_key, reading)
        if self._comm_alarmed and meter_key in self._comm_alarmed:
            self._comm_alarmed.discard(meter_key)
            self._publish_comm(meter_key, "cleared", reading.ts_ms, "")

    def connectivity(self, meter_key: int, online: bool, ts_ms: int, detail: str) -> None:
        actor = self._registry.by_key(meter_key)
        self._registry.tell_nowait(actor, ConnectivityChanged(online, ts_ms, detail))

    def relay_feedback(self, meter_key: int, closed: bool, ts_ms: int) -> None:
        actor = self._registry.by_key(meter_key)
        self._registry.tell_nowait(actor, RelayFeedback(closed, ts_ms))

    def poll_failed(self, meter_key: int, kind: str, detail: str, ts_ms: int) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1
        if kind == "timeout" or meter_key in self._comm_alarmed:
            return  # timeouts are the offline rule's business (bus offline_after)
        self._comm_alarmed.add(meter_key)
        self._publish_comm(meter_key, "active", ts_ms, f"{kind}: {detail}")

    def _publish_comm(self, meter_key: int, state: str, ts_ms: int, detail: str) -> None:
        meter_id = self._registry.by_key(meter_key).meter_id
        self._router.publish_alarm(
            AlarmEvent(f"{meter_id}/{COMM_FAULT}", meter_id, COMM_FAULT, 0, state, ts_ms, detail)
        )


def bus_gateway(section: GatewaySection) -> BusGateway:
    return BusGateway(
        gateway_id=section.id,
        host=section.host,
        port=section.port,
        poll_interval_ms=section.poll_interval_ms,
        timeout_ms=section.timeout_ms,
        window=section.window,
        retries=section.retries,
        offline_after=section.offline_after,
        retry_backoff_ms=section.retry_backoff_ms,
        reconnect_min_ms=section.reconnect_min_ms,
        reconnect_max_ms=section.reconnect_max_ms,
        spread=section.spread,
    )


def build_buses(
    config: ParkConfig,
    registry: ParkRegistry,
    listener: MeterBusListener,
    profiles: dict[str, Profile] | None = None,
) -> tuple[list[GatewayBus], list[GatewayBus | None]]:
    """One bus per gateway, and for each registry key the bus its meter hangs on."""
    known = profiles if profiles is not None else builtin_profiles()
    bindings: dict[str, list[UnitBinding]] = {gateway.id: [] for gateway in config.gateways}
    for meter in config.meters:
        actor = registry.get(meter.id)
        bindings[meter.gateway].append(
            UnitBinding(actor.key, meter.unit, known[meter.profile], meter.relay_coil)
        )
    buses: list[GatewayBus] = []
    bus_by_key: list[GatewayBus | None] = [None] * len(registry)
    for gateway in config.gateways:
        bus = GatewayBus(bus_gateway(gateway), bindings[gateway.id], listener)
        buses.append(bus)
        for binding in bindings[gateway.id]:
            bus_by_key[binding.meter_key] = bus
    return buses, bus_by_key


@attrs.frozen
class Field:
    buses: tuple[GatewayBus, ...]
    listener: MeterBusListener


async def start_field(
    config: ParkConfig, registry: ParkRegistry, router: EffectRouter, nursery: trio.Nursery
) -> Field:
    """Start every gateway's bus and route relay commands to them."""
    listener = MeterBusListener(registry, router)
    buses, bus_by_key = build_buses(config, registry, listener)

    def command_relay(actor: MeterActor, command: RelayCommand) -> None:
        bus = bus_by_key[actor.key]
        if bus is not None:
            bus.command_relay_nowait(actor.key, command.closed)

    router.relay_sink = command_relay
    for bus in buses:
        await nursery.start(bus.run)
    for actor in registry:
        command_relay(actor, RelayCommand(actor.state.relay.closed, actor.state.relay.reason, 0))
    log.info("polling %d meters behind %d gateways", len(registry), len(buses))
    return Field(tuple(buses), listener)
