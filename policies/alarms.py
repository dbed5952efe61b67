"""Alarm bookkeeping: which alarms are active, raising, clearing and acknowledging them.

Theory of operation
-------------------
``AlarmState.active`` holds the meter's active alarms; each has a meter-local id, the decimal
string of ``AlarmState.next_number`` when it was raised (the actor prefixes the meter id). Every
transition returns the new ``AlarmState`` and the effects to publish: ``AlarmRaised``,
``AlarmCleared``, ``AlarmAcknowledged``.

Kinds and their lifecycles:

* ``low_balance`` - ONE alarm whose ``level`` (1 = the highest threshold) says how low the
  balance is. Level n holds while ``balance <= levels[n-1]``; going deeper is immediate, but a
  level is left only when the balance rises above ``levels[n-1] + alarm_hysteresis``, so a balance
  wobbling around a threshold does not flap. A level change clears the old alarm and raises a new
  one (a new id), because a deeper level is news the operator must see and acknowledge again.
* ``zero_balance`` - while ``balance <= 0``.
* ``overload`` - raised at a trip, cleared at the automatic reclose or an operator reset
  (``policies.protection`` decides; the facade calls :func:`clear_kind`).
* ``quota`` - while the meter's quota group holds its supply open (``QuotaSupply``): the
  group's month budget is spent and no extension has been approved.
* ``offline`` - while the unit does not answer (``ConnectivityChanged``), or while it answers
  with exceptions or garbage (``CommFault``, detail ``comm_fault: ...``, one alarm until the
  next good reading: ``CommRestored``).
* ``tamper`` - evidence, not a condition: a reading's tamper flag (detail "reading_flag"), a
  reading that is not physically possible (``policies.plausibility``: "register_out_of_range",
  "register_rollback", "implausible_register", "implausible_power"), relay feedback
  contradicting the command ("relay_mismatch"). There is nothing to watch that would clear it,
  so it is *latched*: it stays until an operator acknowledges it, which clears it
  ("relay_mismatch" also clears when the feedback agrees again; the register details when an
  operator replaces the meter). While one with the same detail is active, no duplicate is
  raised.

Acknowledging marks an alarm seen (it stays active while its condition holds); acknowledging an
already acknowledged alarm changes nothing; an unknown id is rejected ``unknown_alarm``.
"""

from __future__ import annotations

from typing import Final

from policies.meter_policy import MeterPolicy
from policies.records import (
    ALARM_SEVERITY,
    NO_EFFECTS,
    AcknowledgeAlarm,
    ActiveAlarm,
    AlarmAcknowledged,
    AlarmCleared,
    AlarmRaised,
    AlarmState,
    CommandRejected,
    Effect,
    MeterState,
)

LOW_BALANCE: Final = "low_balance"
ZERO_BALANCE: Final = "zero_balance"
OVERLOAD: Final = "overload"
QUOTA: Final = "quota"
OFFLINE: Final = "offline"
TAMPER: Final = "tamper"

READING_FLAG: Final = "reading_flag"
RELAY_MISMATCH: Final = "relay_mismatch"

COMM_FAULT: Final = "comm_fault"
"""Detail prefix of the ``offline`` alarm for a unit that answers, but wrongly."""

# Kinds cleared by acknowledgement (see the module docstring: evidence, not a condition).
LATCHED_KINDS: Final = frozenset({TAMPER})

AlarmResult = tuple[AlarmState, tuple[Effect, ...]]


def find_active(alarms: AlarmState, kind: str, detail: str | None = None) -> ActiveAlarm | None:
    """The active alarm of ``kind`` (and ``detail``, if given), or None."""
    for alarm in alarms.active:
        if alarm.kind == kind and (detail is None or alarm.detail == detail):
            return alarm
    return None


def raise_alarm(
    alarms: AlarmState, kind: str, ts_ms: int, *, level: int = 0, detail: str = ""
) -> tuple[AlarmState, AlarmRaised]:
    """Raise a new alarm unconditionally (callers check :func:`find_active` first)."""
    alarm_id = str(alarms.next_number)
    alarm = ActiveAlarm(alarm_id, kind, level, ts_ms, False, detail)
    new = AlarmState((*alarms.active, alarm), alarms.low_level, alarms.next_number + 1)
    return new, AlarmRaised(alarm_id, kind, level, ts_ms, detail)


def raise_once(
    alarms: AlarmState, kind: str, ts_ms: int, *, level: int = 0, detail: str = ""
) -> AlarmResult:
    """Raise ``kind``/``detail`` unless such an alarm is already active."""
    if find_active(alarms, kind, detail) is not None:
        return alarms, NO_EFFECTS
    new, raised = raise_alarm(alarms, kind, ts_ms, level=level, detail=detail)
    return new, (raised,)


def clear_kind(
    alarms: AlarmState, kind: str, ts_ms: int, detail: str | None = None
) -> AlarmResult:
    """Clear every active alarm of ``kind`` (and ``detail``, if given)."""
    keep: list[ActiveAlarm] = []
    cleared: list[Effect] = []
    for alarm in alarms.active:
        if alarm.kind == kind and (detail is None or alarm.detail == detail):
            cleared.append(AlarmCleared(alarm.alarm_id, alarm.kind, ts_ms))
        else:
            keep.append(alarm)
    if not cleared:
        return alarms, NO_EFFECTS
    return AlarmState(tuple(keep), alarms.low_level, alarms.next_number), tuple(cleared)


def raise_comm_fault(alarms: AlarmState, ts_ms: int, detail: str) -> AlarmResult:
    """One ``offline`` alarm for a misbehaving unit, however often it misbehaves."""
    for alarm in alarms.active:
        if alarm.kind == OFFLINE and alarm.detail.startswith(COMM_FAULT):
            return alarms, NO_EFFECTS
    new, raised = raise_alarm(alarms, OFFLINE, ts_ms, detail=f"{COMM_FAULT}: {detail}")
    return new, (raised,)


def clear_comm_fault(alarms: AlarmState, ts_ms: int) -> AlarmResult:
    for alarm in alarms.active:
        if alarm.kind == OFFLINE and alarm.detail.startswith(COMM_FAULT):
            return clear_kind(alarms, OFFLINE, ts_ms, detail=alarm.detail)
    return alarms, NO_EFFECTS


def low_balance_level(
    balance: int, current: int, levels: tuple[int, ...], hysteresis: int
) -> int:
    """The low-balance level for ``balance`` given the level ``current`` in force.

    Level n (1-based) holds if ``balance <= levels[n-1]``, or, for a level already reached
    (``n <= current``), while ``balance <= levels[n-1] + hysteresis``. The deepest holding
    level wins.
    """
    level = 0
    for n, threshold in enumerate(levels, start=1):
        limit = threshold + hysteresis if n <= current else threshold
        if balance <= limit:
            level = n
    return level


def update_balance_alarms(
    alarms: AlarmState, balance: int, policy: MeterPolicy, ts_ms: int
) -> AlarmResult:
    """Bring ``low_balance`` and ``zero_balance`` in line with ``balance``."""
    effects: list[Effect] = []
    level = low_balance_level(balance, alarms.low_level, policy.alarm_levels,
                              policy.alarm_hysteresis)
    if level != alarms.low_level:
        alarms, cleared = clear_kind(alarms, LOW_BALANCE, ts_ms)
        effects.extend(cleared)
        if level:
            alarms, raised = raise_alarm(alarms, LOW_BALANCE, ts_ms, level=level)
            effects.append(raised)
        alarms = AlarmState(alarms.active, level, alarms.next_number)
    if balance <= 0:
        alarms, fx = raise_once(alarms, ZERO_BALANCE, ts_ms)
    else:
        alarms, fx = clear_kind(alarms, ZERO_BALANCE, ts_ms)
    effects.extend(fx)
    return alarms, tuple(effects) if effects else NO_EFFECTS


def acknowledge(alarms: AlarmState, message: AcknowledgeAlarm) -> AlarmResult:
    """Operator acknowledgement; latched kinds are cleared by it."""
    for index, alarm in enumerate(alarms.active):
        if alarm.alarm_id != message.alarm_id:
            continue
        ts = message.ts_ms
        if alarm.kind in LATCHED_KINDS:
            rest = alarms.active[:index] + alarms.active[index + 1:]
            new = AlarmState(rest, alarms.low_level, alarms.next_number)
            return new, (
                AlarmAcknowledged(alarm.alarm_id, alarm.kind, ts),
                AlarmCleared(alarm.alarm_id, alarm.kind, ts),
            )
        if alarm.acknowledged:
            return alarms, NO_EFFECTS
        seen = ActiveAlarm(alarm.alarm_id, alarm.kind, alarm.level, alarm.raised_ms, True,
                           alarm.detail)
        active = (*alarms.active[:index], seen, *alarms.active[index + 1:])
        new = AlarmState(active, alarms.low_level, alarms.next_number)
        return new, (AlarmAcknowledged(alarm.alarm_id, alarm.kind, ts),)
    return alarms, (CommandRejected("unknown_alarm", f"no active alarm {message.alarm_id!r}"),)


def summary_alarm(state: MeterState | AlarmState) -> str:
    """The most severe active alarm kind (``records.ALARM_SEVERITY``), or "none"."""
    alarms = state.alarms if isinstance(state, MeterState) else state
    best = "none"
    rank = 0
    for alarm in alarms.active:
        severity = ALARM_SEVERITY.get(alarm.kind, 0)
        if severity > rank:
            best, rank = alarm.kind, severity
    return best
