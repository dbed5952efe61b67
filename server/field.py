"""The field side of a park: one Modbus bus per gateway, wired to the meter actors.

Theory of operation
-------------------
``start_field`` builds a ``GatewayBus`` per configured gateway with a ``UnitBinding`` per
meter behind it (the meter's dense registry key, Modbus unit, profile and relay coil), and
connects both directions:

* bus -> actors: ``MeterBusListener`` turns what a bus learns into messages for meter actors
  (the readings of each burst of replies go into the run queue as one batch entry;
  connectivity changes and coil read-backs are policy inputs);
* actors -> bus: the router's relay sink finds the meter's bus by key and queues the coil
  write, which the bus sends ahead of any further poll.

Back-pressure: the buses can complete polls faster than the one dispatcher applies readings
(the trio scheduler gives the dispatcher one time slice per round, the buses one batch each),
and every request in flight or reading queued is work a trip or a relay command waits behind
(one trio scheduler round does all of it). :class:`RunQueueGate` is the listener's
``poll_allowance``: a park-wide budget of outstanding work (run-queue depth + requests in
flight, ``OUTSTANDING_BUDGET``) shared by the buses. A bus that finds it spent is held (it
still finishes what is in flight and sends relay commands and early polls) and queues up; a
small watcher task, running only while anyone is held, resumes the queued buses in order once
the work is down to ``RESUME_AT``, reserving each its window's worth of the budget, so a
resume wakes only buses that can use it and every gateway gets its turn. Polling then runs at
the rate readings are applied, in batches big enough to stay cheap, the work outstanding
stays bounded (~25 ms of it at the bench's rate), and no reading is dropped. Measured on
2 cores (``wattkeeper bench modbus``): without this the buses completed twice the polls the
actors applied, the run queue sat at its 200,000 limit dropping readings, and trips waited
seconds.

Overload timing: the policy trips at the first reading that comes ``overload_delay`` or more
after the first over-limit one, and in cycle order that reading can come almost a whole cycle
after the delay ran out. So when a reading shows a meter above its ``overload_w`` for the first
time, the listener asks the meter's bus for an early poll just after the delay (the bus's
"early polls"); the policy, unchanged, then sees its confirming reading on time. Meters with
no overload limit cost one comparison per reading.

Garbage and exception replies go to the meter as ``CommFault`` (once, until the next good
reading, which sends ``CommRestored``): its alarm policy raises one ``offline`` alarm with
detail ``comm_fault: ...`` (an id like every other alarm's, ``<meter id>/<number>``), so an
operator sees a misbehaving gateway or meter without the alarm stream being flooded once per
poll. Everything the listener tells a meter carries the control-clock time (``server.clock``).

After a restart the physical coils may not match what the meters' states command (someone
switched a relay by hand, a gateway power-cycled), so every meter's commanded position is
written once when the field starts; the coil read-back then confirms it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

import attrs
import trio

from actors.effects import EffectRouter
from actors.meter import MeterActor
from actors.registry import ParkRegistry
from actors.runtime import Dispatcher
from policies.records import (
    CommFault,
    CommRestored,
    ConnectivityChanged,
    Reading,
    RelayCommand,
    RelayFeedback,
)
from protocols.modbus.bus import BusGateway, GatewayBus, UnitBinding
from protocols.modbus.profiles import Profile
from server.clock import ParkClock
from server.config import GatewaySection, ParkConfig

log = logging.getLogger(__name__)

OVERLOAD_MARGIN_S: Final = 0.002
"""An early poll goes this long after the overload delay ends (timestamps are whole ms)."""
OUTSTANDING_BUDGET: Final = 1_000
"""Park-wide cap on requests in flight plus messages queued for the actors: at ~40k polls/s,
~25 ms of work, the most a reading waits behind others. Measured (bench/modbus.py, 2,000
meters behind 20 gateways with window 32): 400 cuts the queue wait to ~3 ms but costs ~13 %
more CPU per poll (smaller batches for the buses and the dispatcher); 2,000 saves ~9 % CPU but
triples the queue wait."""
IDLE_RECHECK_S: Final = 0.0005
"""While buses are held and the run queue is empty: how often the gate looks again."""
RESUME_AT: Final = 500
"""Outstanding work at which held buses resume: enough to keep the CPU busy meanwhile."""


class RunQueueGate:
    """The buses' park-wide back-pressure (module docstring): a budget of outstanding work.

    Outstanding = messages in the run queue + requests the buses have in flight (+ slots
    promised to resumed buses). A bus asking for request slots gets what is left of the budget
    (at most what it wants). A bus that gets none is *held* and joins a FIFO; while anyone
    waits there, no other bus may take slots first. A watcher task — once per scheduler round,
    only while anyone is held — re-reads the buses' in-flight counts and, once the work is down
    to ``resume_at``, resumes waiting buses in order, each with a *ticket* (slots reserved for
    it), until the free budget is handed out. Resuming only as many buses as there is work for
    keeps a resume from waking every bus for nothing; the FIFO keeps every gateway polled.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        budget: int = OUTSTANDING_BUDGET,
        resume_at: int = RESUME_AT,
    ) -> None:
        if not 0 <= resume_at < budget:
            raise ValueError(f"need 0 <= resume_at < budget, got {resume_at}, {budget}")
        self._dispatcher = dispatcher
        self.budget = budget
        self.resume_at = resume_at
        self._in_flight = 0  # == sum of _reported: requests in flight + unused tickets
        self._reported: dict[GatewayBus, int] = {}
        self._waiting: deque[GatewayBus] = deque()
        self._tickets: dict[GatewayBus, int] = {}
        self._wakeup = trio.Event()
        self.holds = 0

    @property
    def outstanding(self) -> int:
        return self._dispatcher.queue_depth + self._in_flight

    def poll_allowance(self, bus: GatewayBus, wanted: int) -> int:
        in_flight = bus.in_flight
        self._in_flight += in_flight - self._reported.get(bus, 0)  # also drops its ticket
        ticket = self._tickets.pop(bus, 0)
        if ticket:
            granted = min(wanted, ticket)
        else:
            free = self.budget - self._dispatcher.queue_depth - self._in_flight
            if free <= 0 or self._waiting:
                self._reported[bus] = in_flight
                self._waiting.append(bus)
                self.holds += 1
                self._wakeup.set()
                return 0
            granted = min(wanted, free)
        self._in_flight += granted  # counted now, so the next bus to ask sees them
        self._reported[bus] = in_flight + granted
        return granted

    async def run(
        self,
        buses: Sequence[GatewayBus],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Resume held buses as the work drains; sleeps while nobody is held."""
        task_status.started()
        dispatcher = self._dispatcher
        waiting = self._waiting
        tickets = self._tickets
        reported = self._reported
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            while waiting:
                total = 0
                for bus in buses:
                    if not bus.connected:
                        tickets.pop(bus, None)  # reconnecting can take seconds: free its slots
                    in_flight = bus.in_flight + tickets.get(bus, 0)
                    reported[bus] = in_flight
                    total += in_flight
                self._in_flight = total
                free = self.budget - dispatcher.queue_depth - total
                if free >= self.budget - self.resume_at:
                    while waiting and free > 0:
                        bus = waiting.popleft()
                        # Its slots stay reserved until it asks (at its next reply, or at
                        # once if it has nothing in flight).
                        slots = min(bus.room, free) - tickets.get(bus, 0)
                        if slots > 0 and bus.connected:
                            tickets[bus] = tickets.get(bus, 0) + slots
                            reported[bus] += slots
                            self._in_flight += slots
                            free -= slots
                        bus.resume_nowait()
                if dispatcher.queue_depth:
                    # Once per scheduler round while the dispatcher has work (it drains a
                    # slice per round, so checking more often finds nothing new).
                    await trio.lowlevel.checkpoint()
                else:
                    # Only replies can change anything now; spinning on checkpoints would keep
                    # trio from ever sleeping in epoll.
                    await trio.sleep(IDLE_RECHECK_S)


def _one_clock() -> int:
    return -1  # no control clock: messages carry the wall label only (tools, tests)


class MeterBusListener:
    """Routes bus observations into meter actors (see the module docstring)."""

    def __init__(
        self,
        registry: ParkRegistry,
        router: EffectRouter,
        gate: RunQueueGate | None = None,
        mono_ms: Callable[[], int] = _one_clock,
    ) -> None:
        self._registry = registry
        self._router = router
        self._mono_ms = mono_ms
        self.gate = gate if gate is not None else RunQueueGate(registry.dispatcher)
        self._comm_alarmed: set[int] = set()
        # Per registry key (filled by attach): overload limit (W; 0 = none), delay (s), bus.
        self._overload_w: list[float] = [0.0] * len(registry)
        self._overload_delay_s: list[float] = [0.0] * len(registry)
        self._bus_by_key: list[GatewayBus | None] = [None] * len(registry)
        self._over: set[int] = set()  # meters whose last reading was above their limit
        self.failures = {"timeout": 0, "exception": 0, "garbage": 0}

    def attach(self, bus_by_key: list[GatewayBus | None]) -> None:
        """Know each meter's bus, and its overload limit and delay (for early polls)."""
        self._bus_by_key = bus_by_key
        for actor in self._registry:
            self._overload_w[actor.key] = max(0.0, actor.policy.overload_w)
            self._overload_delay_s[actor.key] = actor.policy.overload_delay_ms / 1000

    def readings(self, meter_keys: list[int], readings: list[Reading]) -> None:
        self._registry.deliver_readings_nowait(meter_keys, readings)
        limits = self._overload_w
        over = self._over
        comm_alarmed = self._comm_alarmed
        for meter_key, reading in zip(meter_keys, readings, strict=True):
            if reading.power_w > limits[meter_key] > 0.0:
                if meter_key not in over:
                    over.add(meter_key)
                    self._confirm_overload(meter_key)
            elif over and meter_key in over:
                over.discard(meter_key)
            if comm_alarmed and meter_key in comm_alarmed:
                comm_alarmed.discard(meter_key)
                self._tell(meter_key, CommRestored(reading.ts_ms, reading.mono_ms))

    def poll_allowance(self, bus: GatewayBus, wanted: int) -> int:
        return self.gate.poll_allowance(bus, wanted)

    def connectivity(self, meter_key: int, online: bool, ts_ms: int, detail: str) -> None:
        self._tell(meter_key, ConnectivityChanged(online, ts_ms, detail, self._mono_ms()))

    def relay_feedback(self, meter_key: int, closed: bool, ts_ms: int) -> None:
        self._tell(meter_key, RelayFeedback(closed, ts_ms, self._mono_ms()))

    def poll_failed(self, meter_key: int, kind: str, detail: str, ts_ms: int) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1
        if kind == "timeout" or meter_key in self._comm_alarmed:
            return  # timeouts are the offline rule's business (bus offline_after)
        self._comm_alarmed.add(meter_key)
        self._tell(meter_key, CommFault(f"{kind}: {detail}", ts_ms, self._mono_ms()))

    def _tell(self, meter_key: int, message: object) -> None:
        self._registry.tell_nowait(self._registry.by_key(meter_key), message)

    def _confirm_overload(self, meter_key: int) -> None:
        bus = self._bus_by_key[meter_key]
        if bus is not None:
            # The reading's timestamp is in whole ms: one more makes the delay surely elapsed.
            at = trio.current_time() + self._overload_delay_s[meter_key] + OVERLOAD_MARGIN_S
            bus.poll_at_nowait(meter_key, at)


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
        command_slots=section.command_slots,
        transport=section.transport,
    )


def build_buses(
    config: ParkConfig,
    registry: ParkRegistry,
    listener: MeterBusListener,
    profiles: dict[str, Profile] | None = None,
    clock: ParkClock | None = None,
) -> tuple[list[GatewayBus], list[GatewayBus | None]]:
    """One bus per gateway, and for each registry key the bus its meter hangs on.

    Register maps come from ``config.profiles`` (shipped ones and the config's
    ``profile_files``) unless ``profiles`` replaces them."""
    known = profiles if profiles is not None else config.profiles
    bindings: dict[str, list[UnitBinding]] = {gateway.id: [] for gateway in config.gateways}
    for meter in config.meters:
        actor = registry.get(meter.id)
        bindings[meter.gateway].append(
            UnitBinding(actor.key, meter.unit, known[meter.profile], meter.relay_coil)
        )
    buses: list[GatewayBus] = []
    bus_by_key: list[GatewayBus | None] = [None] * len(registry)
    for gateway in config.gateways:
        if clock is None:
            bus = GatewayBus(bus_gateway(gateway), bindings[gateway.id], listener)
        else:
            bus = GatewayBus(bus_gateway(gateway), bindings[gateway.id], listener,
                             clock=clock.wall_ms, mono_clock=clock.mono_ms)
        buses.append(bus)
        for binding in bindings[gateway.id]:
            bus_by_key[binding.meter_key] = bus
    return buses, bus_by_key


@attrs.frozen
class Field:
    buses: tuple[GatewayBus, ...]
    listener: MeterBusListener


async def start_field(
    config: ParkConfig,
    registry: ParkRegistry,
    router: EffectRouter,
    nursery: trio.Nursery,
    clock: ParkClock,
) -> Field:
    """Start every gateway's bus and route relay commands to them."""
    listener = MeterBusListener(registry, router, mono_ms=clock.mono_ms)
    buses, bus_by_key = build_buses(config, registry, listener, clock=clock)
    listener.attach(bus_by_key)

    def command_relay(actor: MeterActor, command: RelayCommand) -> None:
        bus = bus_by_key[actor.key]
        if bus is not None:
            bus.command_relay_nowait(actor.key, command.closed)

    router.relay_sink = command_relay
    await nursery.start(listener.gate.run, buses)
    for bus in buses:
        await nursery.start(bus.run)
    for actor in registry:
        command_relay(actor, RelayCommand(actor.state.relay.closed, actor.state.relay.reason, 0))
    log.info("polling %d meters behind %d gateways", len(registry), len(buses))
    return Field(tuple(buses), listener)
