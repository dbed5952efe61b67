"""The park as a stream: what changed, every tick, for the hub and the other adapters.

Theory of operation
-------------------
Meters do not publish anything themselves: a changed actor is listed once in
``router.changed`` however often it changed (``actors.effects``). One task here
(:meth:`ParkStream.run`) takes that list every tick (50 ms by default), builds a
:class:`MeterView` of each changed meter, keeps the latest view of every meter
(:meth:`ParkStream.current`, for snapshots and the HTTP API) and hands a
:class:`StreamTick` to every subscriber. A tick's work is bounded: at most
``max_meters_per_tick`` views are built; the rest wait in order for the next tick (their
``changed`` flags stay set, so a later change does not list them twice and the view built
then is the latest state).

Park totals (:class:`ParkView`) are kept incrementally: each new view replaces the old one's
contribution, so a tick costs O(changed meters), not O(park); the floating-point load is
summed afresh once a minute so rounding cannot creep. The park view goes out at most every
``park_every_s`` (4 Hz; the hub sends each client the latest once a second), gateway views
(Modbus bus statistics when the field runs) once a second, only those that changed.

Alarm events arrive through a sink on ``router.alarm_sinks`` and audit entries through
``park.operations.audit_listeners``. Both are called inside someone else's work (the
dispatcher's time slice, a command), so they only append to a bounded queue; the next tick
passes them on, in order. Subscribers are called on the trio thread and must not block
(``StreamSubscriber``): the hub only fills per-client queues.

The view records themselves live in ``protocols.stream.views`` (adapters under ``protocols/``
may not import the server) and are re-exported here.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Final

import trio

from actors.effects import ALARM_ID_SEPARATOR, AlarmEvent
from actors.meter import MeterActor
from policies.alarms import summary_alarm
from policies.records import NO_READING, ActiveAlarm
from protocols.stream.views import (
    AlarmView,
    AuditRecord,
    GatewayView,
    MeterView,
    ParkState,
    ParkView,
    StreamSubscriber,
    StreamTick,
)

if TYPE_CHECKING:
    from server.app import Park

__all__ = ["AlarmInbox", "AlarmView", "GatewayView", "MeterView", "ParkState", "ParkStream",
           "ParkView", "StreamSubscriber", "StreamTick", "meter_view"]

log = logging.getLogger(__name__)

TICK_S: Final = 0.05
PARK_EVERY_S: Final = 0.25
GATEWAYS_EVERY_S: Final = 1.0
RESUM_EVERY_S: Final = 60.0
MAX_METERS_PER_TICK: Final = 20_000
MAX_QUEUED_EVENTS: Final = 100_000


def meter_view(actor: MeterActor, tenant: str, gateway: str, now_ms: int = 0) -> MeterView:
    """What clients see of ``actor`` now; ``now_ms`` labels a meter never read yet."""
    state = actor.state
    relay = state.relay
    return MeterView(
        actor.meter_id, tenant, gateway, state.balance, state.power_w,
        state.register_wh if state.register_wh != NO_READING else 0,
        relay.closed, relay.reason, summary_alarm(state), state.online, actor.faulted,
        state.reading_ms if state.reading_ms != NO_READING else now_ms,
    )


def _load(view: MeterView, uncounted: frozenset[str]) -> float:
    """The meter's part of the park's load in W: none for water and gas meters, whose
    ``power_w`` is a flow in L/h, nor for feeders' main meters, which measure what the meters
    under them draw (``uncounted``)."""
    power = view.power_w
    if (not view.online or view.faulted or not math.isfinite(power)
            or view.meter_id in uncounted):
        return 0.0
    return power


class AlarmInbox:
    """An alarm sink that keeps events until the stream starts: hand it to ``open_park``'s
    ``alarm_sinks`` so alarms of recovery (storage down, a quarantined meter) reach clients."""

    def __init__(self, keep: int = MAX_QUEUED_EVENTS) -> None:
        self.events: deque[AlarmEvent] = deque(maxlen=keep)
        self.forward: Callable[[AlarmEvent], None] | None = None

    def __call__(self, event: AlarmEvent) -> None:
        if self.forward is not None:
            self.forward(event)
        else:
            self.events.append(event)


class ParkStream:
    """See the module docstring. Implements ``ParkState`` for the subscribers' snapshots."""

    def __init__(
        self,
        park: Park,
        *,
        tick_s: float = TICK_S,
        park_every_s: float = PARK_EVERY_S,
        gateways_every_s: float = GATEWAYS_EVERY_S,
        max_meters_per_tick: int = MAX_METERS_PER_TICK,
        inbox: AlarmInbox | None = None,
    ) -> None:
        self._park = park
        self._router = park.router
        self._clock_ms = park.clock.wall_ms
        self.tick_s = tick_s
        self._park_every_s = park_every_s
        self._gateways_every_s = gateways_every_s
        self._max_per_tick = max_meters_per_tick
        self._inbox = inbox
        self._meta = {meter.id: (meter.tenant, meter.gateway) for meter in park.config.meters}
        self._flows = frozenset(m.id for m in park.config.meters if m.kind != "electricity"
                                ) | {feeder.main for feeder in park.config.feeders}
        self._gateway_ids = [gateway.id for gateway in park.config.gateways]
        self._subscribers: list[StreamSubscriber] = []
        self._backlog: deque[MeterActor] = deque()
        self._alarm_queue: deque[AlarmView] = deque()
        self._audit_queue: deque[AuditRecord] = deque()
        self.dropped_events = 0
        self.ticks = 0
        self.longest_tick_ms = 0.0
        # Latest state, and the totals kept incrementally from it.
        self._views: dict[str, MeterView] = {}
        self._alarms_of: dict[str, tuple[ActiveAlarm, ...]] = {}
        self._park_alarms: dict[str, AlarmView] = {}
        self._on = self._offline = self._balance = self._alarm_count = 0
        self._load_w = 0.0
        self._gateway_meters: dict[str, int] = dict.fromkeys(self._gateway_ids, 0)
        self._gateway_online: dict[str, int] = dict.fromkeys(self._gateway_ids, 0)
        self._gateway_views: dict[str, GatewayView] = {}
        self._park_view = ParkView(0, 0, 0, 0, 0.0, 0, 0, len(self._gateway_ids), 0, 0)
        self._park_changed = True
        self._next_park = 0.0
        self._next_gateways = 0.0
        self._next_resum = 0.0
        self._build_all()

    # -- for subscribers --------------------------------------------------------------------

    def subscribe(self, subscriber: StreamSubscriber) -> Callable[[], None]:
        """``subscriber.on_tick`` from the next tick on; returns the unsubscribe call."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    def current(self) -> Mapping[str, MeterView]:
        return self._views

    def park_view(self) -> ParkView:
        return self._park_view

    def gateway_views(self) -> Sequence[GatewayView]:
        return tuple(self._gateway_views.values())

    def active_alarms(self, meter_ids: frozenset[str] | None = None) -> Sequence[AlarmView]:
        found: list[AlarmView] = []
        alarms_of = self._alarms_of
        chosen = alarms_of.keys() if meter_ids is None else (
            m for m in meter_ids if m in alarms_of)
        for meter_id in chosen:
            tenant, gateway = self._meta.get(meter_id, ("", ""))
            for alarm in alarms_of[meter_id]:
                found.append(AlarmView(
                    meter_id + ALARM_ID_SEPARATOR + alarm.alarm_id, meter_id, alarm.kind,
                    alarm.level, "active", alarm.acknowledged, alarm.detail, alarm.raised_ms,
                    tenant, gateway))
        found.extend(self._park_alarms.values())
        return found

    # -- the task -----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Tick until cancelled (see the module docstring)."""
        router = self._router
        operations = self._park.operations
        operations.audit_listeners.append(self._on_audit)
        if self._inbox is not None:  # a sink of the router since open_park: forward from it
            for event in self._inbox.events:
                self._on_alarm(event)
            self._inbox.events.clear()
            self._inbox.forward = self._on_alarm
        else:
            router.alarm_sinks.append(self._on_alarm)
        try:
            task_status.started()
            next_tick = trio.current_time()
            while True:
                next_tick += self.tick_s
                now = trio.current_time()
                if next_tick < now:  # fell behind (a long slice): do not try to catch up
                    next_tick = now + self.tick_s
                await trio.sleep_until(next_tick)
                self.tick()
        finally:
            if self._on_alarm in router.alarm_sinks:
                router.alarm_sinks.remove(self._on_alarm)
            if self._on_audit in operations.audit_listeners:
                operations.audit_listeners.remove(self._on_audit)
            if self._inbox is not None:
                self._inbox.forward = None

    def tick(self) -> StreamTick:
        """One round (public for tests and benches that step time themselves)."""
        started = time.perf_counter()
        now = trio.current_time()
        router = self._router
        backlog = self._backlog
        backlog.extend(router.take_changed())
        wall = self._clock_ms()
        changed: list[MeterView] = []
        for _ in range(min(len(backlog), self._max_per_tick)):
            actor = backlog.popleft()
            router.clear_changed(actor)
            changed.append(self._update(actor, wall))
        if now >= self._next_resum:
            self._resum()
            self._next_resum = now + RESUM_EVERY_S
        alarms = tuple(self._alarm_queue)
        self._alarm_queue.clear()
        audit = tuple(self._audit_queue)
        self._audit_queue.clear()
        if changed or alarms:
            self._park_changed = True
        park = None
        if self._park_changed and now >= self._next_park:
            park = self._park_view = self._totals(wall)
            self._park_changed = False
            self._next_park = now + self._park_every_s
        gateways: Sequence[GatewayView] = ()
        if now >= self._next_gateways:
            gateways = self._refresh_gateways(wall)
            self._next_gateways = now + self._gateways_every_s
        tick = StreamTick(changed, park, gateways, alarms, audit, wall, started)
        if changed or park is not None or gateways or alarms or audit:
            for subscriber in tuple(self._subscribers):
                try:
                    subscriber.on_tick(tick)
                except Exception:
                    log.exception("stream subscriber %r failed", subscriber)
        self.ticks += 1
        self.longest_tick_ms = max(self.longest_tick_ms, (time.perf_counter() - started) * 1e3)
        return tick

    # -- bookkeeping ----------------------------------------------------------------------------

    def _build_all(self) -> None:
        router = self._router
        wall = self._clock_ms()
        for actor in self._park.registry:
            self._update(actor, wall)
        for actor in router.take_changed():  # all in the views just built
            router.clear_changed(actor)
        self._resum()
        self._refresh_gateways(wall)
        self._park_view = self._totals(wall)

    def _update(self, actor: MeterActor, wall: int) -> MeterView:
        meter_id = actor.meter_id
        tenant, gateway = self._meta.get(meter_id, ("", ""))
        new = meter_view(actor, tenant, gateway, wall)
        old = self._views.get(meter_id)
        self._views[meter_id] = new
        active = actor.state.alarms.active
        before = self._alarms_of.pop(meter_id, ())
        if active:
            self._alarms_of[meter_id] = active
        self._alarm_count += len(active) - len(before)
        new_offline = not new.online or new.faulted
        if old is None:
            self._on += new.relay_closed
            self._offline += new_offline
            self._balance += new.balance
            self._load_w += _load(new, self._flows)
            if gateway in self._gateway_meters:
                self._gateway_meters[gateway] += 1
                self._gateway_online[gateway] += not new_offline
            return new
        old_offline = not old.online or old.faulted
        self._on += new.relay_closed - old.relay_closed
        self._offline += new_offline - old_offline
        self._balance += new.balance - old.balance
        self._load_w += _load(new, self._flows) - _load(old, self._flows)
        if new_offline != old_offline and gateway in self._gateway_online:
            self._gateway_online[gateway] += old_offline - new_offline
        return new

    def _resum(self) -> None:
        self._load_w = math.fsum(_load(view, self._flows) for view in self._views.values())

    def _totals(self, wall: int) -> ParkView:
        meters = len(self._views)
        park_active = sum(1 for alarm in self._park_alarms.values() if alarm.state != "cleared")
        online = sum(1 for view in self._gateway_views.values() if view.online)
        return ParkView(meters, self._on, meters - self._on, self._offline,
                        max(0.0, self._load_w), self._balance, self._alarm_count + park_active,
                        len(self._gateway_ids), online, wall)

    def _refresh_gateways(self, wall: int) -> list[GatewayView]:
        field = self._park.field
        stats = {}
        if field is not None:
            for bus in field.buses:
                bus_stats = bus.statistics()
                stats[bus_stats.gateway_id] = bus_stats
        changed: list[GatewayView] = []
        for gateway_id in self._gateway_ids:
            meters = self._gateway_meters[gateway_id]
            online_meters = self._gateway_online[gateway_id]
            s = stats.get(gateway_id)
            if s is None:
                view = GatewayView(gateway_id, online_meters > 0, meters, online_meters, 0, 0,
                                   wall)
            else:
                view = GatewayView(gateway_id, s.connected, meters, online_meters, s.polls,
                                   s.failed_timeout + s.failed_exception + s.failed_garbage,
                                   wall)
            old = self._gateway_views.get(gateway_id)
            if old is None or _differs(old, view):
                changed.append(view)
            self._gateway_views[gateway_id] = view
        if changed:
            self._park_changed = True
        return changed

    def _on_alarm(self, event: AlarmEvent) -> None:
        """The alarm sink: runs inside the dispatcher's slice, so it only queues."""
        tenant, gateway = self._meta.get(event.meter_id, ("", ""))
        view = AlarmView(event.alarm_id, event.meter_id, event.kind, event.level, event.state,
                         event.state == "acknowledged", event.detail, event.ts_ms, tenant,
                         gateway)
        if not event.meter_id:  # park alarms are not in any meter's state: kept here
            if event.state == "cleared":
                self._park_alarms.pop(event.alarm_id, None)
            elif event.state == "acknowledged" and event.alarm_id in self._park_alarms:
                self._park_alarms[event.alarm_id] = AlarmView(
                    view.alarm_id, "", view.kind, view.level, "active", True, view.detail,
                    view.ts_ms)
            else:
                self._park_alarms[event.alarm_id] = view
            self._park_changed = True
        self._queue(self._alarm_queue, view)

    def _on_audit(self, entry: AuditRecord) -> None:
        self._queue(self._audit_queue, entry)

    def _queue(self, queue: deque[AlarmView] | deque[AuditRecord], item: object) -> None:
        if len(queue) >= MAX_QUEUED_EVENTS:
            queue.popleft()
            self.dropped_events += 1
        queue.append(item)  # type: ignore[arg-type]  # (the queue's own item type)


def _differs(old: GatewayView, new: GatewayView) -> bool:
    return (old.online, old.meters, old.meters_online, old.polls, old.failures) != (
        new.online, new.meters, new.meters_online, new.polls, new.failures)
