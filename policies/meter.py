"""The meter's policy facade: one function per input the meter actor receives.

Theory of operation
-------------------
Readings are the hot path (one per poll of every meter), in two steps. ``quiet_reading``
handles the common case in one call: a valid reading inside the tariff segment and history
bucket of the previous one, which leaves the relay closed, the balance above every alarm level
and power under the limit; it returns the new state, or None. Everything else goes through
``validate_reading`` and ``on_reading``, which charge the reading (``policies.charging``) and,
when nothing else can have changed, return at once with the shared ``NO_EFFECTS`` and the
unchanged sub-records reused by reference; otherwise they take the full path: tamper flag,
overload detection (``policies.protection.observe_power``), then :func:`settle`.

``settle`` is what every state change ends with: emergency credit (``policies.credit``), the
balance alarms (``policies.alarms``), the relay decision (``policies.protection.decide_relay``)
and the overload alarm's clearing at reclose. It is idempotent, so calling it after any message
is safe; that is also how time-based changes (an overload reclose, a delayed close after
anti-chatter, a friendly period ending) take effect: on the next message.

``step`` dispatches every input record through a transition table keyed on its type. Effects
are returned in this order: the relay command first (control before reporting), then history
and alarms.
"""

from __future__ import annotations

from collections.abc import Callable
from math import isfinite
from typing import Any, Final

from policies import alarms as alarm_rules
from policies import credit as credit_rules
from policies import plausibility, protection
from policies.charging import charge_reading, charge_split, rebaseline
from policies.meter_policy import STEP_SLACK_MS, MeterPolicy
from policies.money import CHARGE_UNITS_PER_MINOR
from policies.records import (
    NO_EFFECTS,
    AcknowledgeAlarm,
    AdjustmentApplied,
    CommandRejected,
    CommFault,
    CommRestored,
    ConnectivityChanged,
    Effect,
    MeterState,
    QuotaSupply,
    Reading,
    RelayFeedback,
    ReplaceMeter,
    ResetLockout,
    SetManualRelay,
    TopUpApplied,
)
from policies.state import replace_state
from policies.tariff import segment_at

StepResult = tuple[MeterState, tuple[Effect, ...]]

NOT_OVER: Final = protection.NOT_OVER


def validate_reading(reading: Reading) -> str | None:
    """Why a reading cannot be used (text for the operator log), or None if it is fine."""
    # One isfinite for the common case: a sum of floats is finite only if every term is
    # (inf or NaN anywhere makes it inf or NaN); finite terms whose sum overflows fall through
    # to the checks below, which accept them.
    if (
        reading.ts_ms >= 0
        and reading.register_wh >= 0
        and isfinite(reading.power_w + reading.voltage_v + reading.current_a)
    ):
        return None
    if reading.ts_ms < 0:
        return f"negative timestamp {reading.ts_ms}"
    if reading.register_wh < 0:
        return f"negative energy register {reading.register_wh} Wh"
    if not isfinite(reading.power_w):
        return f"power is not a finite number: {reading.power_w!r}"
    if not isfinite(reading.voltage_v):
        return f"voltage is not a finite number: {reading.voltage_v!r}"
    if not isfinite(reading.current_a):
        return f"current is not a finite number: {reading.current_a!r}"
    return None


def quiet_reading(state: MeterState, reading: Reading, policy: MeterPolicy) -> MeterState | None:
    """The new state after a reading that changes nothing but money and energy, or None.

    The hot path, one function without calls in the common case. None means "take the full
    path" (``validate_reading``, then ``on_reading``): the reading is invalid, stale, the first,
    implausible (``policies.plausibility``), its wall label disagrees with the control clock;
    it crosses a tariff segment or a history bucket, or the tariff has tiers; the balance ends
    at or below an alarm level; the relay is open, power is over the limit (or not plausible)
    or an overload is pending; or the tamper flag is set. A state returned here is exactly
    what the full path returns, with no effects; a property test holds the two together.
    """
    ts = reading.ts_ms
    t0 = state.reading_ms
    mono = reading.mono_ms
    if mono < 0:
        mono = ts
    elapsed = mono - state.reading_mono_ms
    # Not stale, and the label moves with the control clock (within the jitter that
    # plausibility.slewed_label takes as it comes); t0 < ts follows from the segment test.
    if elapsed <= 0 or not -2 <= ts - t0 - elapsed <= 2:
        return None
    tariff = policy.tariff
    seg = tariff.hot_segment[0]
    if not seg[0] <= t0 < ts <= seg[1]:
        if not 0 <= t0 < ts:
            return None
        seg = segment_at(tariff, t0)
        if ts > seg[1]:
            return None
        tariff.hot_segment[0] = seg
    r0 = state.register_wh
    wh = reading.register_wh - r0
    bucket_start = state.bucket_start_ms
    if (
        wh < 0
        or r0 < 0
        # plausibility.register_problem's step bound, without the resolution slack (a step
        # that needs the slack takes the full path, which adds it); the product only for
        # steps beyond what even no elapsed time allows
        or (wh > policy.quiet_step_wh and wh > (elapsed + STEP_SLACK_MS) * policy.step_wh_per_ms)
        or reading.register_wh > policy.max_register_wh
        or seg[4] != state.month
        or tariff.tiers
        or bucket_start < 0
        or ts >= bucket_start + policy.interval_ms
    ):
        return None
    # money.charge, written out: floor of the exact cost with the sub-minor residue carried.
    minor, residue = divmod(wh * seg[2] + state.residue, CHARGE_UNITS_PER_MINOR)
    balance = state.balance - minor
    power = reading.power_w
    if (
        balance > policy.quiet_balance
        and policy.quiet_power_floor_w <= power <= policy.quiet_power_w
        and not reading.tamper
        and isfinite(power + reading.voltage_v + reading.current_a)  # see validate_reading
        and state.relay.closed
        and state.alarms.low_level == 0
        and state.protection.over_since_ms == NOT_OVER
    ):
        # The same record as charging.charge_reading's one-piece case builds, written out here
        # rather than shared: a helper call is ~3 % of a reading on this path.
        return MeterState(
            balance,
            residue,
            reading.register_wh,
            ts,
            mono,
            power,
            state.month,
            state.month_wh + wh,
            bucket_start,
            state.bucket_wh + wh,
            state.bucket_minor + minor,
            state.journal_seq,
            state.online,
            state.relay,
            state.protection,
            state.credit,
            state.alarms,
            state.month_minor + minor,
        )
    return None


def on_reading(state: MeterState, reading: Reading, policy: MeterPolicy) -> StepResult:
    """Apply a validated reading (the hot path; see the module docstring)."""
    mono = reading.mono_ms if reading.mono_ms >= 0 else reading.ts_ms
    if mono <= state.reading_mono_ms:
        return state, NO_EFFECTS  # stale: a duplicate or reordered poll
    # An implausible register comes back unchanged (but for a new tamper alarm); protection
    # below still looks at its power, which is a register of its own.
    new, effects = charge_reading(state, reading, policy)
    levels = policy.alarm_levels
    quiet = levels[0] if levels and levels[0] > 0 else 0
    limit = policy.overload_w
    power = reading.power_w
    if (
        new.balance > quiet
        and new.relay.closed
        and new.alarms.low_level == 0
        and new.protection.over_since_ms == NOT_OVER
        and (power <= limit or limit <= 0)
        and policy.quiet_power_floor_w <= power <= policy.power_ceiling_w
        and not reading.tamper
    ):
        # Nothing but money and energy changed: balance far from every threshold (a charge only
        # lowers it, so no alarm can clear either), relay closed, no overload brewing.
        return new, effects
    return _reading_slow_path(new, reading, policy, effects, state.power_w)


def _reading_slow_path(
    state: MeterState,
    reading: Reading,
    policy: MeterPolicy,
    effects: tuple[Effect, ...],
    last_power_w: float,
) -> StepResult:
    ts = reading.ts_ms
    mono = reading.mono_ms if reading.mono_ms >= 0 else ts
    alarms = state.alarms
    extra: list[Effect] = list(effects)
    if reading.tamper:
        alarms, fx = alarm_rules.raise_once(
            alarms, alarm_rules.TAMPER, ts, detail=alarm_rules.READING_FLAG
        )
        extra.extend(fx)
    prot, relay = state.protection, state.relay
    if plausibility.power_plausible(reading.power_w, policy):
        prot, relay, tripped = protection.observe_power(prot, relay, reading.power_w, mono,
                                                        policy)
    else:
        # Noise, not a measurement: neither an overload nor the end of one.
        tripped = False
        alarms, fx = alarm_rules.raise_once(
            alarms, alarm_rules.TAMPER, ts, detail=plausibility.IMPLAUSIBLE_POWER
        )
        extra.extend(fx)
        if state.power_w != last_power_w:
            state = replace_state(state, power_w=last_power_w)  # keep the last good value
    if tripped:
        # A new trip is news even if an older overload alarm was never cleared.
        alarms, fx = alarm_rules.clear_kind(alarms, alarm_rules.OVERLOAD, ts)
        extra.extend(fx)
        detail = "locked_out" if relay.locked_out else ""
        alarms, raised = alarm_rules.raise_alarm(alarms, alarm_rules.OVERLOAD, ts, detail=detail)
        extra.append(raised)
    if alarms is not state.alarms or prot is not state.protection or relay is not state.relay:
        state = replace_state(state, alarms=alarms, protection=prot, relay=relay)
    return settle(state, policy, ts, tuple(extra), mono_ms=mono)


def settle(
    state: MeterState,
    policy: MeterPolicy,
    ts_ms: int,
    effects: tuple[Effect, ...] = NO_EFFECTS,
    *,
    operator: bool = False,
    mono_ms: int = -1,
) -> StepResult:
    """Bring credit, balance alarms, relay and overload alarm in line with ``state`` at wall
    label ``ts_ms`` and control time ``mono_ms`` (``ts_ms`` when not given: one clock).

    ``effects`` (already produced by the caller) are appended after the relay command.
    """
    if mono_ms < 0:
        mono_ms = ts_ms
    credit = credit_rules.settle_emergency(state.credit, state.balance, policy)
    alarms, alarm_fx = alarm_rules.update_balance_alarms(state.alarms, state.balance, policy,
                                                         ts_ms)
    if credit is not state.credit or alarms is not state.alarms:
        state = replace_state(state, credit=credit, alarms=alarms)
    relay, command = protection.decide_relay(state, policy, ts_ms, operator=operator,
                                             mono_ms=mono_ms)
    overload_fx = NO_EFFECTS
    if not protection.overload_holding(state.protection, relay, mono_ms, policy):
        alarms, overload_fx = alarm_rules.clear_kind(alarms, alarm_rules.OVERLOAD, ts_ms)
    if relay is not state.relay or alarms is not state.alarms:
        state = replace_state(state, relay=relay, alarms=alarms)
    out = (command,) if command is not None else NO_EFFECTS
    out = out + effects + alarm_fx + overload_fx
    return state, out


# --- the transition table ----------------------------------------------------------------


def _reading(state: MeterState, message: Reading, policy: MeterPolicy) -> StepResult:
    error = validate_reading(message)
    if error is not None:
        return state, (CommandRejected("bad_reading", error),)
    return on_reading(state, message, policy)


def _top_up(state: MeterState, message: TopUpApplied, policy: MeterPolicy) -> StepResult:
    if message.amount <= 0:
        return state, (CommandRejected("bad_request", "top-up amount must be > 0"),)
    if message.seq > state.journal_seq and _quiet_top_up(state, message.amount, policy):
        s = state
        return MeterState(
            s.balance + message.amount, s.residue, s.register_wh, s.reading_ms,
            s.reading_mono_ms, s.power_w, s.month, s.month_wh, s.bucket_start_ms, s.bucket_wh,
            s.bucket_minor, message.seq, s.online, s.relay, s.protection, s.credit, s.alarms,
            s.month_minor,
        ), NO_EFFECTS
    new = credit_rules.apply_top_up(state, message, policy)
    if new is state:
        return state, NO_EFFECTS
    return settle(new, policy, message.ts_ms, mono_ms=message.mono_ms)


def _quiet_top_up(state: MeterState, amount: int, policy: MeterPolicy) -> bool:
    """Can a top-up change nothing but the balance (so ``settle`` would find nothing to do)?

    True when no debt takes a share, emergency credit is armed and unused, no alarm is active,
    the balance ends above every alarm level, and nothing holds or could open the closed relay.
    A property test checks the shortcut against the full path.
    """
    credit = state.credit
    relay = state.relay
    balance = state.balance + amount
    return (
        credit.debt == 0
        and credit.emergency_available
        and not credit.emergency_in_use
        and not state.alarms.active
        and state.alarms.low_level == 0
        and balance > 0
        and balance > max(policy.alarm_levels, default=0)
        and relay.closed
        and not relay.manual_open
        and not relay.locked_out
        and not state.protection.trip_ms
        and (state.online or not policy.offline_opens_relay)
    )


def _adjustment(state: MeterState, message: AdjustmentApplied, policy: MeterPolicy) -> StepResult:
    new = credit_rules.apply_adjustment(state, message, policy)
    if new is state:
        return state, NO_EFFECTS
    return settle(new, policy, message.ts_ms, mono_ms=message.mono_ms)


def _operator_replay(state: MeterState, seq: int) -> bool:
    """A journaled operator command (``seq`` > 0) already in ``state``: recovery re-reading
    the journal past an older snapshot. Unjournaled commands (seq 0) always apply."""
    return seq > 0 and credit_rules.is_replay(state, seq)


def _applied_seq(state: MeterState, seq: int) -> int | None:
    """The ``journal_seq`` after applying a command (None: unchanged, for seq 0)."""
    return seq if seq > state.journal_seq else None


def _manual_relay(state: MeterState, message: SetManualRelay, policy: MeterPolicy) -> StepResult:
    if _operator_replay(state, message.seq):
        return state, NO_EFFECTS
    if message.action not in protection.MANUAL_ACTIONS:
        return state, (CommandRejected(
            "bad_request", f"relay action must be 'open' or 'auto', got {message.action!r}"),)
    relay = protection.set_manual(state.relay, message)
    seq = _applied_seq(state, message.seq)
    if relay is not state.relay or seq is not None:
        state = replace_state(state, relay=relay, journal_seq=seq)
    return settle(state, policy, message.ts_ms, operator=True, mono_ms=message.mono_ms)


def _reset_lockout(state: MeterState, message: ResetLockout, policy: MeterPolicy) -> StepResult:
    if _operator_replay(state, message.seq):
        return state, NO_EFFECTS
    prot, relay = protection.reset_lockout(state.protection, state.relay)
    alarms, fx = alarm_rules.clear_kind(state.alarms, alarm_rules.OVERLOAD, message.ts_ms)
    seq = _applied_seq(state, message.seq)
    if (prot is not state.protection or relay is not state.relay or alarms is not state.alarms
            or seq is not None):
        state = replace_state(state, protection=prot, relay=relay, alarms=alarms,
                              journal_seq=seq)
    return settle(state, policy, message.ts_ms, fx, operator=True, mono_ms=message.mono_ms)


def _acknowledge(state: MeterState, message: AcknowledgeAlarm, policy: MeterPolicy) -> StepResult:
    if _operator_replay(state, message.seq):
        return state, NO_EFFECTS
    alarms, effects = alarm_rules.acknowledge(state.alarms, message)
    if any(type(effect) is CommandRejected for effect in effects):
        return state, effects
    seq = _applied_seq(state, message.seq)
    if alarms is state.alarms and seq is None:
        return state, effects
    # Settling on every state change keeps time-based decisions (a friendly period that has
    # ended, a due reclose) from waiting for the next reading.
    return settle(replace_state(state, alarms=alarms, journal_seq=seq), policy, message.ts_ms,
                  effects, mono_ms=message.mono_ms)


def _replace_meter(state: MeterState, message: ReplaceMeter, policy: MeterPolicy) -> StepResult:
    """The operator replaced the meter: charge the old one's last register (when known and
    plausible), take the new register as the baseline, resolve the register tamper alarms."""
    if credit_rules.is_replay(state, message.seq):
        return state, NO_EFFECTS
    if not plausibility.register_in_range(message.start_wh, policy):
        return state, (CommandRejected(
            "bad_request", f"new register {message.start_wh} Wh is out of the meter's range"),)
    ts = message.ts_ms
    effects: tuple[Effect, ...] = NO_EFFECTS
    if message.final_wh >= 0 and state.register_wh >= 0 and state.reading_ms >= 0:
        wh = message.final_wh - state.register_wh
        if wh < 0 or not plausibility.register_in_range(message.final_wh, policy):
            return state, (CommandRejected(
                "bad_request", f"the old meter's final register {message.final_wh} Wh is below "
                f"its last good reading ({state.register_wh} Wh) or out of range"),)
        if wh:
            label = max(ts, state.reading_ms + 1)
            state, effects = charge_split(state, message.final_wh, label,
                                          state.reading_mono_ms, state.power_w, policy, wh)
    state, more = rebaseline(state, message.start_wh, ts, policy)
    alarms = state.alarms
    cleared: list[Effect] = []
    for detail in sorted(plausibility.REGISTER_DETAILS):
        alarms, fx = alarm_rules.clear_kind(alarms, alarm_rules.TAMPER, ts, detail=detail)
        cleared.extend(fx)
    state = replace_state(state, alarms=alarms, journal_seq=message.seq)
    return settle(state, policy, ts, effects + more + tuple(cleared), mono_ms=message.mono_ms)


def _connectivity(
    state: MeterState, message: ConnectivityChanged, policy: MeterPolicy
) -> StepResult:
    if message.online == state.online:
        return state, NO_EFFECTS
    ts = message.ts_ms
    if message.online:
        alarms, fx = alarm_rules.clear_kind(state.alarms, alarm_rules.OFFLINE, ts)
    else:
        alarms, fx = alarm_rules.raise_once(state.alarms, alarm_rules.OFFLINE, ts,
                                            detail=message.detail)
    state = replace_state(state, online=message.online, alarms=alarms)
    return settle(state, policy, ts, fx, mono_ms=message.mono_ms)


def _quota_supply(state: MeterState, message: QuotaSupply, policy: MeterPolicy) -> StepResult:
    """The quota group's verdict: a spent budget holds the relay open (reason ``quota``,
    below manual and overload) with a ``quota`` alarm until the group lifts it."""
    ts = message.ts_ms
    relay = protection.set_quota(state.relay, message.blocked)
    if message.blocked:
        alarms, fx = state.alarms, NO_EFFECTS
        if not any(alarm.kind == alarm_rules.QUOTA for alarm in alarms.active):
            alarms, raised = alarm_rules.raise_alarm(alarms, alarm_rules.QUOTA, ts,
                                                     detail=message.detail)
            fx = (raised,)
    else:
        alarms, fx = alarm_rules.clear_kind(state.alarms, alarm_rules.QUOTA, ts)
    if relay is state.relay and alarms is state.alarms:
        return state, NO_EFFECTS
    return settle(replace_state(state, relay=relay, alarms=alarms), policy, ts, fx,
                  mono_ms=message.mono_ms)


def _comm_fault(state: MeterState, message: CommFault, policy: MeterPolicy) -> StepResult:
    alarms, fx = alarm_rules.raise_comm_fault(state.alarms, message.ts_ms, message.detail)
    if alarms is state.alarms:
        return state, fx
    return settle(replace_state(state, alarms=alarms), policy, message.ts_ms, fx,
                  mono_ms=message.mono_ms)


def _comm_restored(state: MeterState, message: CommRestored, policy: MeterPolicy) -> StepResult:
    alarms, fx = alarm_rules.clear_comm_fault(state.alarms, message.ts_ms)
    if alarms is state.alarms:
        return state, fx
    return settle(replace_state(state, alarms=alarms), policy, message.ts_ms, fx,
                  mono_ms=message.mono_ms)


def _relay_feedback(state: MeterState, message: RelayFeedback, policy: MeterPolicy) -> StepResult:
    ts = message.ts_ms
    if message.closed != state.relay.closed:
        alarms, fx = alarm_rules.raise_once(state.alarms, alarm_rules.TAMPER, ts,
                                            detail=alarm_rules.RELAY_MISMATCH)
    else:
        alarms, fx = alarm_rules.clear_kind(state.alarms, alarm_rules.TAMPER, ts,
                                            detail=alarm_rules.RELAY_MISMATCH)
    if alarms is state.alarms:
        return state, fx
    return settle(replace_state(state, alarms=alarms), policy, ts, fx, mono_ms=message.mono_ms)


TRANSITIONS: Final[dict[type, Callable[[MeterState, Any, MeterPolicy], StepResult]]] = {
    Reading: _reading,
    TopUpApplied: _top_up,
    AdjustmentApplied: _adjustment,
    SetManualRelay: _manual_relay,
    ResetLockout: _reset_lockout,
    AcknowledgeAlarm: _acknowledge,
    ConnectivityChanged: _connectivity,
    RelayFeedback: _relay_feedback,
    ReplaceMeter: _replace_meter,
    CommFault: _comm_fault,
    CommRestored: _comm_restored,
    QuotaSupply: _quota_supply,
}


def step(state: MeterState, message: object, policy: MeterPolicy) -> StepResult:
    """Apply any input record; an unknown one is rejected, never raised."""
    handler = TRANSITIONS.get(type(message))
    if handler is None:
        return state, (CommandRejected(
            "unsupported", f"a meter does not handle {type(message).__name__}"),)
    return handler(state, message, policy)
