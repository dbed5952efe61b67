"""Park-level alarms and the alarm log every server keeps.

Meter alarms come from the meters' policies; these come from the park itself, with an empty
meter id and ids ``park/<kind>``: the storage alarm while the journal cannot write, and the
damaged-record alarm for journal entries recovery could give to no configured meter. The log
sink writes one line per alarm event of either kind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from actors.effects import ALARM_ID_SEPARATOR, PARK_ALARM_PREFIX, AlarmEvent, EffectRouter
from actors.registry import ParkRegistry
from persistence.damage import Damage
from server.clock import ParkClock

log = logging.getLogger(__name__)


def log_alarm(event: AlarmEvent) -> None:
    """The alarm sink every server has: one log line per alarm event."""
    level = logging.WARNING if event.state == "active" else logging.INFO
    where = event.meter_id or "park"
    log.log(level, "alarm %s %s %s on %s%s", event.alarm_id, event.kind, event.state, where,
            f": {event.detail}" if event.detail else "")


def storage_alarm(
    router: EffectRouter, registry: ParkRegistry, clock: ParkClock
) -> Callable[[bool, str], None]:
    """The park-level ``storage`` alarm, raised while the journal cannot write. When storage
    comes back every meter is listed for the next snapshot: chunks handed to a writer that
    died may never have reached the disk."""

    def changed(available: bool, detail: str) -> None:
        router.publish_alarm(AlarmEvent(
            alarm_id=f"{PARK_ALARM_PREFIX}{ALARM_ID_SEPARATOR}storage", meter_id="",
            kind="storage", level=0, state="cleared" if available else "active",
            ts_ms=clock.wall_ms(), detail=detail))
        if available:
            for actor in registry:
                router.mark_dirty(actor)

    return changed


def report_skipped(router: EffectRouter, skipped: tuple[Damage, ...], now: int) -> None:
    """Damaged journal entries of no configured meter: logged, and one park-level alarm."""
    for damage in skipped:
        owner = f"meter {damage.meter_id}, not in the config" if damage.meter_id else "no meter"
        log.error("%s; skipped (its entry belongs to %s); wattkeeper check lists it", damage,
                  owner)
    if skipped:
        router.publish_alarm(AlarmEvent(
            alarm_id=f"{PARK_ALARM_PREFIX}{ALARM_ID_SEPARATOR}damaged_record", meter_id="",
            kind="storage", level=0,
            state="active", ts_ms=now,
            detail=f"{len(skipped)} damaged journal entries of no configured meter were "
                   f"skipped, first {skipped[0]}"))
