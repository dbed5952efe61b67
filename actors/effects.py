"""Where a meter actor's effects go: relay commands, alarms, history, change notifications.

Theory of operation
-------------------
Policies return effect records; the meter actor hands them to one shared ``EffectRouter``,
which turns them into calls on sinks that the application wires at start-up (the Modbus bus
for relay commands, the websocket hub and OPC UA for alarms, the journal writer for history).
Every sink is a plain synchronous callable that must not block: the router runs inside the
dispatcher's time slice, and control (a relay command) must never wait on a slow observer.

A sink that raises is a bug in an observer, not in the meter: the router logs it, counts it
(``sink_errors``) and goes on with the next effect and the next sink. Letting it escape would
make the meter's supervisor restart a healthy meter over and over for someone else's bug.

State changes are not effects. Almost every reading changes a balance, so instead of an event
per reading the router keeps two lists of actors touched since someone last looked: ``dirty``
(taken by the snapshotter) and ``changed`` (taken by publishers, which coalesce bursts into one
update per meter). Each actor carries a flag per list, so an actor is listed once however often
it changes, and the reading hot path only reads its own two flags (``MeterActor.receive``):
adding to two 100,000-member sets per reading cost ~0.2 µs of a ~4 µs reading, measured.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from policies.records import (
    AlarmAcknowledged,
    AlarmCleared,
    AlarmRaised,
    CommandRejected,
    Effect,
    IntervalClosed,
    RelayCommand,
)

if TYPE_CHECKING:
    from actors.meter import MeterActor

log = logging.getLogger(__name__)

ALARM_ID_SEPARATOR = "/"
PARK_ALARM_PREFIX = "park"
"""Park-level alarms (storage, ...) are ``park/<kind>`` with an empty meter id."""


@attrs.frozen
class AlarmEvent:
    """An alarm as the outside world sees it: park-unique id ``<meter id>/<number>``."""

    alarm_id: str
    meter_id: str
    kind: str
    level: int
    state: str  # "active" | "cleared" | "acknowledged"
    ts_ms: int
    detail: str = ""


def split_alarm_id(alarm_id: str) -> tuple[str, str]:
    """``"M-0001/7"`` -> ``("M-0001", "7")``; raises ValueError when it has no meter part."""
    meter_id, sep, local = alarm_id.rpartition(ALARM_ID_SEPARATOR)
    if not sep or not meter_id or not local:
        raise ValueError(f"not an alarm id: {alarm_id!r}")
    return meter_id, local


RelaySink = Callable[["MeterActor", RelayCommand], None]
AlarmSink = Callable[[AlarmEvent], None]
HistorySink = Callable[[str, IntervalClosed], None]
FaultSink = Callable[["MeterActor", str], None]


def _ignore_relay(actor: MeterActor, command: RelayCommand) -> None:
    """Default until a bus is wired: the command is still counted by the router."""


def _ignore_history(meter_id: str, interval: IntervalClosed) -> None:
    """Default until a journal is wired."""


def _ignore_fault(actor: MeterActor, detail: str) -> None:
    """Default until something listens for bad input."""


class EffectRouter:
    """Dispatches effects to the sinks wired by the application (see module docstring)."""

    def __init__(self) -> None:
        self.dirty: list[MeterActor] = []  # each with actor.dirty set
        self.changed: list[MeterActor] = []  # each with actor.changed set
        self.relay_sink: RelaySink = _ignore_relay
        self.history_sink: HistorySink = _ignore_history
        self.bad_input_sink: FaultSink = _ignore_fault
        self.alarm_sinks: list[AlarmSink] = []
        self.relay_observers: list[RelaySink] = []
        """Told of every relay command after the bus (tenant notices of a cut)."""
        self.relay_commands = 0
        self.alarms = 0
        self.bad_inputs = 0
        self.sink_errors = 0
        self._routes: dict[type, Callable[[MeterActor, Effect], None]] = {
            RelayCommand: self._relay,
            AlarmRaised: self._alarm_raised,
            AlarmCleared: self._alarm_cleared,
            AlarmAcknowledged: self._alarm_acknowledged,
            IntervalClosed: self._interval,
            CommandRejected: self._rejected,
        }

    def touched(self, actor: MeterActor) -> None:
        """``actor``'s state changed: list it for the snapshotter and the publishers."""
        self.mark_dirty(actor)
        if not actor.changed:
            actor.changed = True
            self.changed.append(actor)

    def mark_dirty(self, actor: MeterActor) -> None:
        """List ``actor`` for the next snapshot only."""
        if not actor.dirty:
            actor.dirty = True
            self.dirty.append(actor)

    def take_dirty(self) -> list[MeterActor]:
        """The actors to snapshot, each once. Their flags stay set until the consumer calls
        :meth:`clear_dirty` as it reads each state (clearing 100,000 flags here at once would
        stall the loop); a change after that lists the actor again, one before it is in the
        state the consumer reads anyway."""
        taken, self.dirty = self.dirty, []
        return taken

    def clear_dirty(self, actor: MeterActor) -> None:
        actor.dirty = False

    def return_dirty(self, actors: list[MeterActor]) -> None:
        """Taken actors a consumer did not get to (their flags still set): list them again."""
        self.dirty.extend(actors)

    def take_changed(self) -> list[MeterActor]:
        """As :meth:`take_dirty`, for publishers (then :meth:`clear_changed` each)."""
        taken, self.changed = self.changed, []
        return taken

    def clear_changed(self, actor: MeterActor) -> None:
        actor.changed = False

    def route(self, actor: MeterActor, effects: tuple[Effect, ...]) -> None:
        routes = self._routes
        for effect in effects:
            routes[type(effect)](actor, effect)

    def bad_input(self, actor: MeterActor, detail: str) -> None:
        self.bad_inputs += 1
        try:
            self.bad_input_sink(actor, detail)
        except Exception:
            self._sink_failed("bad-input", actor.meter_id)

    def publish_alarm(self, event: AlarmEvent) -> None:
        """Alarms that come from the runtime itself (a faulted actor, the park's storage),
        and every policy alarm, to every alarm sink."""
        self.alarms += 1
        for sink in self.alarm_sinks:
            try:
                sink(event)
            except Exception:
                self._sink_failed("alarm", event.alarm_id)

    def _sink_failed(self, which: str, about: str) -> None:
        self.sink_errors += 1
        log.exception("%s sink failed on %s (the meter is not affected)", which, about)

    # -- routes ---------------------------------------------------------------------------

    def _relay(self, actor: MeterActor, effect: Effect) -> None:
        assert isinstance(effect, RelayCommand)
        self.relay_commands += 1
        try:
            self.relay_sink(actor, effect)
        except Exception:
            self._sink_failed("relay", actor.meter_id)
        for observer in self.relay_observers:
            try:
                observer(actor, effect)
            except Exception:
                self._sink_failed("relay observer", actor.meter_id)

    def _alarm_raised(self, actor: MeterActor, effect: Effect) -> None:
        assert isinstance(effect, AlarmRaised)
        self._publish(actor, effect, "active", effect.level, effect.detail)

    def _alarm_cleared(self, actor: MeterActor, effect: Effect) -> None:
        assert isinstance(effect, AlarmCleared)
        self._publish(actor, effect, "cleared")

    def _alarm_acknowledged(self, actor: MeterActor, effect: Effect) -> None:
        assert isinstance(effect, AlarmAcknowledged)
        self._publish(actor, effect, "acknowledged")

    def _publish(
        self,
        actor: MeterActor,
        effect: AlarmRaised | AlarmCleared | AlarmAcknowledged,
        state: str,
        level: int = 0,
        detail: str = "",
    ) -> None:
        """A policy's alarm effect as the park-wide event (alarm ids are per park)."""
        self.publish_alarm(
            AlarmEvent(
                alarm_id=actor.meter_id + ALARM_ID_SEPARATOR + effect.alarm_id,
                meter_id=actor.meter_id,
                kind=effect.kind,
                level=level,
                state=state,
                ts_ms=effect.ts_ms,
                detail=detail,
            )
        )

    def _interval(self, actor: MeterActor, effect: Effect) -> None:
        assert isinstance(effect, IntervalClosed)
        try:
            self.history_sink(actor.meter_id, effect)
        except Exception:
            self._sink_failed("history", actor.meter_id)

    def _rejected(self, actor: MeterActor, effect: Effect) -> None:
        # The requesting actor call reads rejections from the effects itself (MeterActor).
        pass
