"""Supervision of meter actors: one_for_one with an explicit restart intensity.

Theory of operation
-------------------
Erlang/OTP style, adapted to actors that are objects rather than tasks. When a meter actor's
``receive`` raises, the dispatcher calls ``child_failed``. The supervisor logs the crash, fails
the waiting caller (if the message was a request), and restarts *only that actor*
(one_for_one): its state is rebuilt by ``restore`` from the last persisted snapshot plus the
journal entries newer than it, exactly as at start-up. Consumption since that snapshot is not
lost: the restored register baseline is older, so the next reading's delta charges it again,
once.

Restart intensity: more than ``max_restarts`` restarts of one meter within ``period_ms`` means
restarting does not help (a poison reading, a corrupt snapshot). The actor is then marked
faulted: it keeps its last good state for display, refuses commands, drops readings, and an
``offline`` alarm with detail ``faulted: ...`` is raised. Every other meter keeps running;
``reset`` lets an operator try again after fixing the cause.

Quarantine: a meter whose stored record cannot be used (a snapshot or journal entry that does not
decode or apply, ``persistence.damage``) cannot be rebuilt, so restarting it is pointless: it
starts faulted (``quarantine``), with the same alarm and the damaged key in its detail. Its
record stays on disk as it is (the snapshotter skips faulted meters) so it can be repaired;
``reset`` then rebuilds it from the repaired record, like any faulted meter.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import attrs

from actors.effects import AlarmEvent, EffectRouter
from actors.meter import MeterActor
from actors.runtime import Actor, Request
from policies.records import MeterState

log = logging.getLogger(__name__)

Restore = Callable[[MeterActor], MeterState]


class NotRestorable(Exception):
    """Raised by a ``Restore`` when the meter's stored record cannot be used; the message
    names the record (no traceback is logged: the code is not at fault)."""


class ActorCrashed(Exception):
    """Told to a caller whose request made the actor crash; the actor has been restarted."""


@attrs.frozen
class RestartIntensity:
    max_restarts: int = 3
    period_ms: int = 60_000


@attrs.frozen
class SupervisorStatistics:
    restarts: int
    faulted: int


class MeterSupervisor:
    def __init__(
        self,
        restore: Restore,
        router: EffectRouter,
        clock_ms: Callable[[], int],
        intensity: RestartIntensity = RestartIntensity(),
        label_ms: Callable[[], int] | None = None,
    ) -> None:
        """``clock_ms`` times the restart intensity (the control clock in a server: a wall
        clock step must not fault a meter); ``label_ms`` stamps the alarms (the wall clock;
        ``clock_ms`` when not given)."""
        self._restore = restore
        self._router = router
        self._clock_ms = clock_ms
        self._label_ms = label_ms or clock_ms
        self._intensity = intensity
        self._recent: dict[int, list[int]] = {}
        self._restarts = 0
        self._faulted: dict[str, str] = {}  # meter id -> why

    def statistics(self) -> SupervisorStatistics:
        return SupervisorStatistics(restarts=self._restarts, faulted=len(self._faulted))

    @property
    def faulted_meters(self) -> frozenset[str]:
        return frozenset(self._faulted)

    def fault_reason(self, meter_id: str) -> str | None:
        """Why ``meter_id`` is faulted (the alarm's detail without ``faulted: ``), or None."""
        return self._faulted.get(meter_id)

    def child_failed(self, actor: Actor, message: object, error: Exception) -> None:
        assert isinstance(actor, MeterActor)
        log.error(
            "meter actor %s crashed on %s: %r", actor.meter_id, type(message).__name__, error,
            exc_info=error,
        )
        if isinstance(message, Request):
            message.reply.fail(ActorCrashed(f"meter {actor.meter_id} failed: {error!r}"))
        now = self._clock_ms()
        window_start = now - self._intensity.period_ms
        recent = [t for t in self._recent.get(actor.key, ()) if t > window_start]
        if len(recent) >= self._intensity.max_restarts:
            self._fault(actor, f"{len(recent) + 1} crashes within "
                        f"{self._intensity.period_ms} ms, last: {error!r}")
            return
        recent.append(now)
        self._recent[actor.key] = recent
        self._restart(actor)

    def quarantine(self, actor: MeterActor, reason: str) -> None:
        """Start ``actor`` faulted, without a restart attempt: its stored record (named in
        ``reason``, e.g. ``snapshots["M-0003"]: ...``) cannot be used. The alarm is the one a
        faulted meter raises; :meth:`reset` tries again once the record is repaired."""
        log.error("meter %s quarantined: %s; the record is kept for repair (docs/operations.md, "
                  "\"A corrupt record\")", actor.meter_id, reason)
        self._mark_faulted(actor, reason)

    def reset(self, actor: MeterActor) -> None:
        """Operator action: give a faulted meter a fresh start from snapshot + journal."""
        self._recent.pop(actor.key, None)
        self._faulted.pop(actor.meter_id, None)
        actor.faulted = False
        self._restart(actor)

    def _restart(self, actor: MeterActor) -> None:
        try:
            actor.state = self._restore(actor)
        except NotRestorable as error:
            log.error("restoring meter %s failed: %s", actor.meter_id, error)
            self._fault(actor, f"restore failed: {error}")
            return
        except Exception as error:
            log.exception("restoring meter %s failed", actor.meter_id)
            self._fault(actor, f"restore failed: {error!r}")
            return
        self._restarts += 1
        self._router.touched(actor)
        log.warning("meter actor %s restarted from snapshot + journal", actor.meter_id)

    def _fault(self, actor: MeterActor, detail: str) -> None:
        log.error("meter %s marked faulted: %s", actor.meter_id, detail)
        self._mark_faulted(actor, detail)

    def _mark_faulted(self, actor: MeterActor, detail: str) -> None:
        actor.faulted = True
        self._faulted[actor.meter_id] = detail
        self._router.touched(actor)
        self._router.publish_alarm(
            AlarmEvent(
                alarm_id=f"{actor.meter_id}/faulted",
                meter_id=actor.meter_id,
                kind="offline",
                level=0,
                state="active",
                ts_ms=self._label_ms(),
                detail=f"faulted: {detail}",
            )
        )
