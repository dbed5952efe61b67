"""A simulated park: gateways with meters behind them, one clock, one coil log, fault injection.

Theory of operation
-------------------
What to simulate is a plan (:class:`ParkPlan`, plain records): gateways with an id, a host and
a port, each with meters (unit id, profile, relay coil, rating). Two named constructors build
one: :meth:`ParkPlan.uniform` (``wattkeeper sim --meters N --gateways G --port P``: gateways
``gw1``..``gwG`` on ports P, P+1, ..., units 1..N/G each, meter ids ``M-0001``...) and
``server.simulate.plan_from_config`` (exactly the gateways and meters of a park config; it
lives next to the command because this package must not import ``server``). A meter names its
profile; the plan's ``profiles`` (from a config: the shipped profiles plus its
``profile_files``) are looked up first, then the shipped ones, so a custom profile is simulated
from the very file the server polls with.

:func:`open_sim_park` builds a :class:`SimPark` from a plan and runs it in a nursery: every
gateway is listening when the block is entered (``ports`` holds the ports actually bound, so
port 0 gives ephemeral ports for tests). Meter ``index`` (the seed of its load curve) is its
position in the plan, so the same plan and seed give the same park in any process; it also
sets the meter's refresh phase (``meter_model.stagger_phase_s``), so the meters' once-a-second
refreshes are spread over the second instead of landing on the simulator in one burst.

Faults (``simulators.faults``) are injected with :meth:`SimPark.inject`: each one is a small
task in the park's nursery that sleeps ``at_s``, applies the fault, sleeps ``for_s`` (or
forever) and reverts it. Faults live in *slots*: the load of a meter (overload), its replies
(silent, slow, garbage), its tamper flag, and a gateway's port (down). A new fault in a busy
slot supersedes the old one (which is cancelled); reverting a fault that was superseded does
nothing, so overlapping faults never leave a meter stuck. ``rollback`` and ``swap`` are
instant and have no slot; ``garble`` has a slot of its own (the energy register's display).
:meth:`SimPark.clear` reverts matching faults at once (synchronously, so a test can look at
the meter right after).

Tamper on a profile without a ``tamper`` register (the Eastron maps have none: a real SDM630
has no tamper output on Modbus) is refused at injection with a message saying so; the water
profile maps it (status word, 1 = tampered).
"""

from __future__ import annotations

import datetime
import math
import zoneinfo
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Final

import attrs
import trio

from protocols.modbus.profiles import Profile, load_profile
from simulators.clock import SimClock
from simulators.faults import REPLY_FAULTS, Fault, FaultSpecError
from simulators.gateway import CoilLog, GatewayStatistics, ReplyFault, SimGateway
from simulators.meter_model import SimMeter, default_rated_w, stagger_phase_s

__all__ = [
    "ActiveFault",
    "FaultTargetError",
    "GatewayPlan",
    "MeterPlan",
    "ParkPlan",
    "SimPark",
    "open_sim_park",
    "run_sim_park",
]

OVERLOAD_HEADROOM: Final = 1.25
"""A config meter is rated at overload_w / this: the load curve (at most 1.2 x rated) never
trips a sensibly set overload limit by itself; only injected overloads do."""


class FaultTargetError(FaultSpecError):
    """A fault aimed at a gateway or unit the park does not have, or it cannot apply there."""


# --- the plan ---------------------------------------------------------------------------------


@attrs.frozen
class MeterPlan:
    unit: int
    profile: str = "sdm630"
    relay_coil: int = 0
    meter_id: str = ""
    rated_w: float | None = None
    """None: the profile kind's default (10 kW electricity, 1.5 m3/h water and gas)."""
    feeds: tuple[str, ...] = ()
    """A feeder's main meter: the ids of the meters under it (``SimMeter.feeds``)."""
    loss_percent: float = 0.0
    """What such a main meter shows beyond the meters under it, in percent of their load."""


@attrs.frozen
class GatewayPlan:
    id: str
    host: str
    port: int
    meters: tuple[MeterPlan, ...]
    transport: str = "tcp"
    """"tcp" (Modbus TCP) or "rtu-over-tcp" (RTU frames with CRC: a serial converter)."""


@attrs.frozen
class ParkPlan:
    gateways: tuple[GatewayPlan, ...]
    seed: int = 1
    utc_offset_s: int = 0
    """Local time = UTC + this, for the time of day of the load curves."""
    profiles: Mapping[str, Profile] = attrs.field(factory=dict, eq=False, repr=False)
    """Profile name -> register map, looked up before the shipped profiles."""

    @property
    def meter_count(self) -> int:
        return sum(len(gateway.meters) for gateway in self.gateways)

    def profile(self, name: str) -> Profile:
        """The plan's own profile of that name, else the shipped one (ProfileError if none)."""
        found = self.profiles.get(name)
        return found if found is not None else load_profile(name)

    @classmethod
    def uniform(
        cls,
        *,
        meters: int,
        gateways: int = 1,
        port: int = 5020,
        host: str = "127.0.0.1",
        seed: int = 1,
        profile: str = "sdm630",
        relay_coil: int = 0,
        utc_offset_s: int = 0,
        transport: str = "tcp",
    ) -> ParkPlan:
        """``gateways`` gateways ``gw1``.. on ``port``, ``port + 1``, ... (0: ephemeral each),
        ``meters`` spread evenly as units 1, 2, ... (the first gateways get one more if it does
        not divide)."""
        if gateways < 1:
            raise ValueError(f"need at least one gateway, got {gateways}")
        if meters < gateways:
            raise ValueError(
                f"need at least one meter per gateway ({meters} meters, {gateways} gateways)"
            )
        per_gateway, extra = divmod(meters, gateways)
        if per_gateway + (1 if extra else 0) > 247:
            raise ValueError(
                f"{meters} meters behind {gateways} gateways is more than 247 units a gateway "
                "(Modbus unit ids 1..247); add gateways"
            )
        if port and port + gateways - 1 > 65_535:
            raise ValueError(f"ports {port}..{port + gateways - 1} go past 65535")
        load_profile(profile)  # fail here, with the profile's own message, not in a task
        plans: list[GatewayPlan] = []
        number = 0
        for g in range(gateways):
            units = per_gateway + (1 if g < extra else 0)
            meter_plans = []
            for unit in range(1, units + 1):
                number += 1
                meter_plans.append(MeterPlan(unit, profile, relay_coil, f"M-{number:04d}"))
            plans.append(GatewayPlan(f"gw{g + 1}", host, port + g if port else 0,
                                     tuple(meter_plans), transport))
        return cls(tuple(plans), seed=seed, utc_offset_s=utc_offset_s)


def utc_offset_of(timezone: str) -> int:
    """The current UTC offset of an IANA time zone, in seconds (0 for UTC or an unknown one)."""
    try:
        zone = zoneinfo.ZoneInfo(timezone or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return 0
    offset = datetime.datetime.now(zone).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


# --- the running park -------------------------------------------------------------------------


@attrs.define(eq=False)
class ActiveFault:
    """An injected fault: scheduled, applied, or (after ``for_s``/clear) finished."""

    fault: Fault
    scope: trio.CancelScope
    applied: bool = False
    finished: bool = False


def _slot(fault: Fault) -> tuple[str, int | None, str] | None:
    if fault.kind in ("rollback", "swap"):
        return None
    if fault.kind in REPLY_FAULTS:
        return (fault.gateway, fault.unit, "reply")
    if fault.kind == "overload":
        return (fault.gateway, fault.unit, "load")
    return (fault.gateway, fault.unit, fault.kind)  # tamper, down


class SimPark:
    """Gateways and meters of a plan, sharing one clock and coil log (module docstring)."""

    def __init__(self, plan: ParkPlan, *, clock: SimClock | None = None) -> None:
        self.plan = plan
        self.clock = clock if clock is not None else SimClock()
        self.coil_log = CoilLog()
        self.gateways: dict[str, SimGateway] = {}
        self._by_id: dict[str, SimMeter] = {}
        self._faults: list[ActiveFault] = []
        self._slots: dict[tuple[str, int | None, str], ActiveFault] = {}
        self._nursery: trio.Nursery | None = None
        start_s = self.clock.now()
        index = 0
        feeders: list[tuple[SimMeter, MeterPlan]] = []
        for gateway in plan.gateways:
            if gateway.id in self.gateways:
                raise ValueError(f"gateway {gateway.id!r} appears twice in the plan")
            meters: dict[int, SimMeter] = {}
            for meter_plan in gateway.meters:
                if meter_plan.unit in meters:
                    raise ValueError(f"gateway {gateway.id}: unit {meter_plan.unit} appears twice")
                profile = plan.profile(meter_plan.profile)
                meter = SimMeter(
                    profile,
                    unit=meter_plan.unit,
                    relay_coil=meter_plan.relay_coil,
                    rated_w=meter_plan.rated_w or default_rated_w(profile),
                    seed=plan.seed,
                    index=index,
                    meter_id=meter_plan.meter_id,
                    utc_offset_s=plan.utc_offset_s,
                    start_s=start_s,
                    phase_s=stagger_phase_s(index),
                )
                meters[meter_plan.unit] = meter
                if meter_plan.meter_id:
                    self._by_id[meter_plan.meter_id] = meter
                index += 1
                if meter_plan.feeds:
                    feeders.append((meter, meter_plan))
            self.gateways[gateway.id] = SimGateway(
                gateway.id,
                meters,
                clock=self.clock,
                coil_log=self.coil_log,
                host=gateway.host,
                port=gateway.port,
                transport=gateway.transport,
            )

        for meter, meter_plan in feeders:  # once every meter exists
            unknown = [m for m in meter_plan.feeds if m not in self._by_id]
            if unknown:
                raise ValueError(f"feeder meter {meter_plan.meter_id}: no meter {unknown[0]!r}")
            meter.feeds = tuple(self._by_id[m] for m in meter_plan.feeds)
            meter.loss_ratio = meter_plan.loss_percent / 100.0

    # --- lookup -------------------------------------------------------------------------------

    @property
    def ports(self) -> dict[str, int]:
        """Gateway id -> the port it listens on (the bound one once the park runs)."""
        return {gateway_id: gateway.port for gateway_id, gateway in self.gateways.items()}

    @property
    def meter_count(self) -> int:
        return sum(len(gateway.meters) for gateway in self.gateways.values())

    def meters(self) -> Iterable[tuple[str, SimMeter]]:
        """Every (gateway id, meter), in plan order."""
        for gateway_id, gateway in self.gateways.items():
            for meter in gateway.meters.values():
                yield gateway_id, meter

    def meter(self, gateway: str, unit: int) -> SimMeter:
        try:
            return self.gateways[gateway].meters[unit]
        except KeyError:
            raise KeyError(f"no simulated meter at {gateway}/{unit}") from None

    def meter_by_id(self, meter_id: str) -> SimMeter:
        try:
            return self._by_id[meter_id]
        except KeyError:
            raise KeyError(f"no simulated meter with id {meter_id!r}") from None

    def describe(self) -> str:
        """One line: gateways, addresses, meters, profiles, seed, speed, active faults."""
        gateways = list(self.gateways.values())
        ports = [gateway.port for gateway in gateways]
        hosts = sorted({gateway.host for gateway in gateways})
        if len(ports) > 1 and ports == list(range(ports[0], ports[0] + len(ports))):
            where = f"{'/'.join(hosts)}:{ports[0]}-{ports[-1]}"
        else:
            where = ", ".join(f"{gateway.host}:{gateway.port}" for gateway in gateways)
        profiles: dict[str, int] = {}
        for _, meter in self.meters():
            profiles[meter.profile.name] = profiles.get(meter.profile.name, 0) + 1
        profile_text = ", ".join(f"{count} {name}" for name, count in sorted(profiles.items()))
        active = sum(1 for active in self._faults if not active.finished)
        speed = f", speed {self.clock.speed:g}x" if self.clock.speed != 1.0 else ""
        return (
            f"{len(gateways)} gateway{'s' if len(gateways) != 1 else ''} on {where}, "
            f"{self.meter_count} meters ({profile_text}), seed {self.plan.seed}{speed}, "
            f"{active} active fault{'s' if active != 1 else ''}"
        )

    def statistics(self) -> dict[str, GatewayStatistics]:
        return {gateway_id: gateway.statistics() for gateway_id, gateway in self.gateways.items()}

    # --- faults -------------------------------------------------------------------------------

    def active_faults(self) -> list[ActiveFault]:
        """Faults injected and not finished (scheduled or applied)."""
        return [active for active in self._faults if not active.finished]

    def check_target(self, fault: Fault) -> None:
        """Raise :class:`FaultTargetError` if ``fault`` cannot apply to this park."""
        gateway = self.gateways.get(fault.gateway)
        if gateway is None:
            known = ", ".join(self.gateways)
            raise FaultTargetError(
                f"fault {fault.spec()!r}: no gateway {fault.gateway!r} (gateways: {known})"
            )
        if fault.unit is None:
            return
        meter = gateway.meters.get(fault.unit)
        if meter is None:
            units = sorted(gateway.meters)
            span = f"{units[0]}..{units[-1]}" if units else "none"
            raise FaultTargetError(
                f"fault {fault.spec()!r}: gateway {fault.gateway} has no unit {fault.unit} "
                f"(units {span})"
            )
        if fault.kind == "tamper" and not meter.has_tamper_register:
            raise FaultTargetError(
                f"fault {fault.spec()!r}: profile {meter.profile.name} has no tamper register "
                "(only profiles that map a `tamper` value, e.g. water, can show tampering)"
            )

    def inject(self, fault: Fault) -> ActiveFault:
        """Schedule ``fault`` (``at_s`` from now); raises :class:`FaultTargetError` at once."""
        self.check_target(fault)
        if self._nursery is None:
            raise RuntimeError("the park is not running (use open_sim_park)")
        active = ActiveFault(fault, trio.CancelScope())
        self._faults.append(active)
        self._nursery.start_soon(self._run_fault, active, name=f"fault {fault.spec()}")
        return active

    def clear(self, gateway: str | None = None, unit: int | None = None) -> int:
        """End every fault (scheduled or applied) on the target, or all; returns how many."""
        cleared = 0
        for active in self._faults:
            fault = active.fault
            if active.finished or (gateway is not None and fault.gateway != gateway):
                continue
            if unit is not None and fault.unit != unit:
                continue
            self._finish(active)
            cleared += 1
        self._faults = [active for active in self._faults if not active.finished]
        return cleared

    def end_fault(self, active: ActiveFault) -> None:
        """End one injected fault now (reverting it if it is applied); no-op if finished."""
        self._finish(active)
        self._faults = [other for other in self._faults if not other.finished]

    async def _run_fault(self, active: ActiveFault) -> None:
        fault = active.fault
        with active.scope:
            try:
                await trio.sleep(fault.at_s)
                self._apply(active)
                if fault.kind in ("rollback", "swap"):
                    return
                await trio.sleep(math.inf if fault.for_s is None else fault.for_s)
            finally:
                self._finish(active)

    def _apply(self, active: ActiveFault) -> None:
        fault = active.fault
        now = self.clock.now()
        slot = _slot(fault)
        if slot is not None:
            previous = self._slots.get(slot)
            if previous is not None and previous is not active:
                previous.scope.cancel()
                previous.finished = True  # superseded: its revert must not undo this fault
            self._slots[slot] = active
        active.applied = True
        gateway = self.gateways[fault.gateway]
        if fault.kind == "down":
            gateway.set_down()
            return
        assert fault.unit is not None  # meter faults have a unit (faults.py)
        meter = gateway.meters[fault.unit]
        if fault.kind == "overload":
            meter.set_overload(fault.power_w, now)
        elif fault.kind == "tamper":
            meter.set_tamper(True, now)
        elif fault.kind == "rollback":
            meter.roll_back((fault.to_kwh or 0.0) * meter.profile.energy_factor, now)
        elif fault.kind == "garble":
            meter.set_garbled(fault.value_kwh, now)
        elif fault.kind == "swap":
            meter.swap((fault.add_kwh or 0.0) * meter.profile.energy_factor, now)
        else:
            gateway.reply_faults[fault.unit] = ReplyFault(fault.kind, fault.delay_s or 0.0)

    def _finish(self, active: ActiveFault) -> None:
        if active.finished:
            return
        active.finished = True
        active.scope.cancel()
        slot = _slot(active.fault)
        if slot is None or self._slots.get(slot) is not active:
            return  # never applied, instant, or superseded
        del self._slots[slot]
        fault = active.fault
        gateway = self.gateways[fault.gateway]
        if fault.kind == "down":
            gateway.set_up()
            return
        assert fault.unit is not None
        meter = gateway.meters[fault.unit]
        now = self.clock.now()
        if fault.kind == "overload":
            meter.set_overload(None, now)
        elif fault.kind == "tamper":
            meter.set_tamper(False, now)
        elif fault.kind == "garble":
            meter.set_garbled(None, now)
        else:
            gateway.reply_faults.pop(fault.unit, None)

    # --- running ------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every gateway (in plan order), then report started; runs until cancelled."""
        async with trio.open_nursery() as nursery:
            for gateway in self.gateways.values():
                await nursery.start(gateway.run)
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()


@asynccontextmanager
async def open_sim_park(
    plan: ParkPlan, *, speed: float = 1.0, start_s: float | None = None
) -> AsyncIterator[SimPark]:
    """A running :class:`SimPark`: every gateway listens inside the block; stops on exit."""
    async with run_sim_park(SimPark(plan, clock=SimClock(speed=speed, start_s=start_s))) as park:
        yield park


@asynccontextmanager
async def run_sim_park(park: SimPark) -> AsyncIterator[SimPark]:
    """Run an already built park inside the block (e.g. after checking faults against it)."""
    async with trio.open_nursery() as nursery:
        await nursery.start(park.run)
        try:
            yield park
        finally:
            nursery.cancel_scope.cancel()
