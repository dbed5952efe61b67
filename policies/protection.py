"""Relay decisions: overload protection, the priority of reasons, and anti-chatter.

Theory of operation
-------------------
The relay's commanded position is recomputed from scratch on every message that can change
it (:func:`decide_relay`): the first reason that holds, in the order of
``records.RELAY_REASONS``, keeps it open:

1. ``manual``       - an operator opened it (``SetManualRelay("open")``); sticky until "auto".
2. ``overload``     - a trip less than ``overload_reclose_ms`` ago, or a lockout.
3. ``quota``        - the meter's quota group has spent its month's budget
                       (``QuotaSupply``; ``policies.quota``).
4. ``zero_balance`` - balance <= 0 and neither emergency credit nor a friendly period covers it.
5. ``offline``      - the unit is offline and ``offline_opens_relay`` is set.

If nothing holds it open it should be closed. Opening always happens at once (safety); an
automatic close is subject to anti-chatter: at most ``max_switches`` position changes within
``switch_window_ms`` (``RelayState.switch_ms`` remembers recent ones). A close refused for that
reason simply happens on a later message, once the window allows it; meanwhile the relay stays
open with its last reason. A close caused directly by an operator command is not delayed.

A ``RelayCommand`` is emitted only when the commanded position or reason changes, so a steady
state costs nothing downstream.

Time: every delay here (overload delay, reclose, lockout window, anti-chatter window) is
measured on the control clock (``mono_ms``), so a wall-clock step neither trips nor recloses
anything; only the friendly-period question (local time) reads the wall label ``ts_ms``.

Overload (:func:`observe_power`): power above ``overload_w`` (when > 0) on consecutive readings
since ``over_since_ms`` for at least ``overload_delay_ms`` is a trip. The trip time is kept in
``ProtectionState.trip_ms`` (trimmed to ``lockout_window_ms``); ``lockout_trips`` trips within
that window lock the relay out until ``ResetLockout``. While a trip holds the relay open, high
power is not counted again (the relay is open; it would only be stale data or a fault).
"""

from __future__ import annotations

from typing import Final

from policies.credit import supply_allowed_by_credit
from policies.meter_policy import MeterPolicy
from policies.records import (
    MeterState,
    ProtectionState,
    RelayCommand,
    RelayState,
    SetManualRelay,
)

MANUAL: Final = "manual"
OVERLOAD: Final = "overload"
QUOTA: Final = "quota"
ZERO_BALANCE: Final = "zero_balance"
OFFLINE: Final = "offline"

MANUAL_ACTIONS: Final = ("open", "auto")

NOT_OVER: Final = -1


def overload_holding(protection: ProtectionState, relay: RelayState, mono_ms: int,
                     policy: MeterPolicy) -> bool:
    """Does overload keep the relay open at control time ``mono_ms`` (lockout, or a trip not
    yet reclosed)?"""
    if relay.locked_out:
        return True
    trips = protection.trip_ms
    return bool(trips) and mono_ms < trips[-1] + policy.overload_reclose_ms


def observe_power(
    protection: ProtectionState,
    relay: RelayState,
    power_w: float,
    mono_ms: int,
    policy: MeterPolicy,
) -> tuple[ProtectionState, RelayState, bool]:
    """Track over-limit power across readings at control time ``mono_ms``; returns (protection,
    relay, tripped now).

    Unchanged records are returned by identity.
    """
    limit = policy.overload_w
    if limit <= 0 or power_w <= limit:
        if protection.over_since_ms == NOT_OVER:
            return protection, relay, False
        return ProtectionState(NOT_OVER, protection.trip_ms), relay, False
    if overload_holding(protection, relay, mono_ms, policy):
        if protection.over_since_ms == NOT_OVER:
            return protection, relay, False
        return ProtectionState(NOT_OVER, protection.trip_ms), relay, False
    since = protection.over_since_ms
    if since == NOT_OVER or since > mono_ms:
        since = mono_ms
    if mono_ms - since < policy.overload_delay_ms:
        if since == protection.over_since_ms:
            return protection, relay, False
        return ProtectionState(since, protection.trip_ms), relay, False
    horizon = mono_ms - policy.lockout_window_ms
    trips = (*(t for t in protection.trip_ms if t > horizon), mono_ms)
    locked = relay.locked_out or (0 < policy.lockout_trips <= len(trips))
    if locked != relay.locked_out:
        relay = RelayState(relay.closed, relay.reason, relay.manual_open, relay.manual_reason,
                           True, relay.switch_ms, relay.quota_open)
    return ProtectionState(NOT_OVER, trips), relay, True


def desired_position(
    state: MeterState, policy: MeterPolicy, ts_ms: int, mono_ms: int
) -> tuple[bool, str | None]:
    """(closed, reason) the relay should have at wall label ``ts_ms`` and control time
    ``mono_ms``, ignoring anti-chatter."""
    relay = state.relay
    if relay.manual_open:
        return False, MANUAL
    if overload_holding(state.protection, relay, mono_ms, policy):
        return False, OVERLOAD
    if relay.quota_open:
        return False, QUOTA
    if state.balance <= 0 and not supply_allowed_by_credit(state, policy, ts_ms):
        return False, ZERO_BALANCE
    if not state.online and policy.offline_opens_relay:
        return False, OFFLINE
    return True, None


def _recent_switches(relay: RelayState, mono_ms: int, policy: MeterPolicy) -> tuple[int, ...]:
    horizon = mono_ms - policy.switch_window_ms
    # A switch "in the future" was stamped by a clock that has since been corrected (a replay
    # labelled by a stepped wall clock): it is not evidence of chatter now.
    recent = tuple(t for t in relay.switch_ms if horizon < t <= mono_ms)
    keep = max(policy.max_switches, 1)
    return recent[-keep:]


def close_allowed(relay: RelayState, mono_ms: int, policy: MeterPolicy) -> bool:
    """Anti-chatter: may the relay be closed automatically at ``mono_ms``?"""
    if policy.max_switches <= 0:
        return True
    return len(_recent_switches(relay, mono_ms, policy)) < policy.max_switches


def decide_relay(
    state: MeterState,
    policy: MeterPolicy,
    ts_ms: int,
    *,
    operator: bool = False,
    mono_ms: int = -1,
) -> tuple[RelayState, RelayCommand | None]:
    """The relay state after re-deciding at wall label ``ts_ms`` and control time ``mono_ms``
    (``ts_ms`` when not given), and the command if anything changed.

    ``operator`` is True when the triggering message is an operator command: such a close is
    not delayed by anti-chatter (the operator asked for it), but it still counts as a switch.
    """
    mono = ts_ms if mono_ms < 0 else mono_ms
    closed, reason = desired_position(state, policy, ts_ms, mono)
    relay = state.relay
    if closed:
        if relay.closed:
            return relay, None
        if not operator and not close_allowed(relay, mono, policy):
            return relay, None
        switches = (*_recent_switches(relay, mono, policy), mono)
        new = RelayState(True, None, relay.manual_open, relay.manual_reason, relay.locked_out,
                         switches, relay.quota_open)
        return new, RelayCommand(True, None, ts_ms)
    if not relay.closed and relay.reason == reason:
        return relay, None
    switches = (
        (*_recent_switches(relay, mono, policy), mono) if relay.closed else relay.switch_ms
    )
    new = RelayState(False, reason, relay.manual_open, relay.manual_reason, relay.locked_out,
                     switches, relay.quota_open)
    return new, RelayCommand(False, reason, ts_ms)


def set_manual(relay: RelayState, message: SetManualRelay) -> RelayState:
    """Record an operator's manual command; the caller re-decides the position.

    Raises ``ValueError`` for an action other than "open" or "auto".
    """
    if message.action == "open":
        if relay.manual_open and relay.manual_reason == message.reason:
            return relay
        return RelayState(relay.closed, relay.reason, True, message.reason, relay.locked_out,
                          relay.switch_ms, relay.quota_open)
    if message.action == "auto":
        if not relay.manual_open:
            return relay
        return RelayState(relay.closed, relay.reason, False, "", relay.locked_out,
                          relay.switch_ms, relay.quota_open)
    raise ValueError(f"relay action must be one of {MANUAL_ACTIONS}, got {message.action!r}")


def set_quota(relay: RelayState, blocked: bool) -> RelayState:
    """Record the quota group's verdict; the caller re-decides the position."""
    if relay.quota_open == blocked:
        return relay
    return RelayState(relay.closed, relay.reason, relay.manual_open, relay.manual_reason,
                      relay.locked_out, relay.switch_ms, blocked)


def reset_lockout(
    protection: ProtectionState, relay: RelayState
) -> tuple[ProtectionState, RelayState]:
    """Operator reset: forget trips and the lockout, so the relay may close at once."""
    if relay.locked_out:
        relay = RelayState(relay.closed, relay.reason, relay.manual_open, relay.manual_reason,
                           False, relay.switch_ms, relay.quota_open)
    if protection.trip_ms or protection.over_since_ms != NOT_OVER:
        protection = ProtectionState(NOT_OVER, ())
    return protection, relay
