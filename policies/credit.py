"""Credit: the balance, emergency credit, friendly-credit periods and debt recovery.

Theory of operation
-------------------
The balance changes in exactly three ways: a reading's charge (``policies.charging``), a
journaled top-up (``TopUpApplied``) and a journaled adjustment (``AdjustmentApplied``). The two
journaled ones carry the journal sequence number: applying one sets ``state.journal_seq`` to it,
and a message whose ``seq`` is not above ``journal_seq`` is a replay (recovery re-reading the
journal over a snapshot that already includes it) and changes nothing.

Emergency credit (``MeterPolicy.emergency_credit`` > 0) is a one-off overdraft: when the balance
reaches <= 0 while it is available, it goes *in use* and supply continues until the balance
reaches ``-emergency_credit``; then it is exhausted (no longer in use, not available), and a
partial top-up that leaves the balance <= 0 does not bring it back. A top-up that makes the
balance positive re-arms it.

Debt: an adjustment with reason "arrears" adds to ``credit.debt`` without touching the balance
(old arrears the tenant owes). Each later top-up pays ``debt_recovery_percent`` % of its amount
(rounded down, at most the debt) towards the debt; the rest goes to the balance.

Friendly periods (``MeterPolicy.friendly``) are local-time windows, possibly wrapping midnight,
or whole holidays/weekends, in which a non-positive balance does not cut supply. The decision
to cut is ``policies.protection``'s; this module only answers "is supply allowed by credit".
"""

from __future__ import annotations

from typing import Final

from policies.meter_policy import MeterPolicy
from policies.records import AdjustmentApplied, CreditState, MeterState, TopUpApplied
from policies.state import replace_state
from policies.tariff import day_type, local_datetime

ARREARS: Final = "arrears"


def is_replay(state: MeterState, seq: int) -> bool:
    """A journaled money event at or below the applied sequence number was applied already."""
    return seq <= state.journal_seq


def debt_share(amount: int, debt: int, percent: int) -> int:
    """The part of a top-up that repays debt: ``percent`` % rounded down, at most the debt."""
    if debt <= 0 or amount <= 0 or percent <= 0:
        return 0
    return min(debt, amount * min(percent, 100) // 100)


def settle_emergency(credit: CreditState, balance: int, policy: MeterPolicy) -> CreditState:
    """Take emergency credit into use, exhaust it, or end its use, as ``balance`` requires.

    Returns ``credit`` itself when nothing changes (callers compare by identity).
    """
    limit = policy.emergency_credit
    if balance > 0:
        if credit.emergency_in_use:
            return CreditState(False, credit.emergency_available, credit.debt)
        return credit
    if limit <= 0:
        return credit
    if credit.emergency_in_use:
        if balance <= -limit:
            return CreditState(False, False, credit.debt)
        return credit
    if credit.emergency_available:
        if balance <= -limit:  # one charge took it all at once: nothing left to cover with
            return CreditState(False, False, credit.debt)
        return CreditState(True, False, credit.debt)
    return credit


def emergency_covers(state: MeterState, policy: MeterPolicy) -> bool:
    """Emergency credit keeps supply on at this (non-positive) balance."""
    return state.credit.emergency_in_use and state.balance > -policy.emergency_credit


def in_friendly_period(policy: MeterPolicy, ts_ms: int) -> bool:
    """Is ``ts_ms`` inside one of the meter's friendly-credit periods (local time)?"""
    if not policy.friendly:
        return False
    calendar = policy.tariff.calendar
    local = local_datetime(calendar, ts_ms)
    kind = day_type(calendar, local.date())
    minute = local.hour * 60 + local.minute
    for period in policy.friendly:
        if (period.on_holidays and kind == "holiday") or (period.on_weekends and kind == "weekend"):
            return True
        start, end = period.start_min, period.end_min
        if start < end:
            if start <= minute < end:
                return True
        elif start > end and (minute >= start or minute < end):  # wraps midnight: 22:00-06:00
            return True
    return False


def supply_allowed_by_credit(state: MeterState, policy: MeterPolicy, ts_ms: int) -> bool:
    """Balance positive, or emergency credit in use and not exhausted, or a friendly period."""
    if state.balance > 0 or emergency_covers(state, policy):
        return True
    return in_friendly_period(policy, ts_ms)


def apply_top_up(state: MeterState, message: TopUpApplied, policy: MeterPolicy) -> MeterState:
    """Credit a journaled top-up once (``state`` itself if it is a replay)."""
    if is_replay(state, message.seq):
        return state
    credit = state.credit
    share = debt_share(message.amount, credit.debt, policy.debt_recovery_percent)
    balance = state.balance + message.amount - share
    debt = credit.debt - share
    if balance > 0:
        # A top-up that makes the balance positive ends the episode and re-arms the credit.
        credit = CreditState(False, True, debt)
    elif share:
        credit = CreditState(credit.emergency_in_use, credit.emergency_available, debt)
    credit = settle_emergency(credit, balance, policy)
    return replace_state(state, balance=balance, journal_seq=message.seq, credit=credit)


def apply_adjustment(
    state: MeterState, message: AdjustmentApplied, policy: MeterPolicy
) -> MeterState:
    """Apply a journaled adjustment once: arrears go to the debt, anything else to the balance."""
    if is_replay(state, message.seq):
        return state
    credit = state.credit
    if message.reason == ARREARS:
        # A negative arrears adjustment forgives debt; it never turns into credit.
        debt = max(0, credit.debt + message.amount)
        new_credit = CreditState(credit.emergency_in_use, credit.emergency_available, debt)
        return replace_state(state, journal_seq=message.seq, credit=new_credit)
    balance = state.balance + message.amount
    credit = settle_emergency(credit, balance, policy)
    return replace_state(state, balance=balance, journal_seq=message.seq, credit=credit)
