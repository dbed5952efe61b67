"""The journal's records and what each means to a meter.

Theory of operation
-------------------
A :class:`JournalEntry` is a money event as the caller asked for it; the journal gives it a
global sequence number when it commits it. The caller's ``reference`` is an idempotency key,
unique over the whole journal: recording it again returns the first recording (:class:`Recorded`
with ``duplicate=True``), and reusing it for a different meter, kind or amount is a
:class:`ReferenceConflict`.

:func:`to_message` is the one place that says what an entry does to a meter's state. The ledger
(live delivery) and recovery (replay) must agree exactly, or a restart would rebuild a different
balance than the one acknowledged; so both should call this function.
"""

from __future__ import annotations

from typing import Final

import attrs

from policies.records import (
    AcknowledgeAlarm,
    AdjustmentApplied,
    ReplaceMeter,
    ResetLockout,
    SetManualRelay,
    TopUpApplied,
)

OPERATOR_KINDS: Final = frozenset({"relay", "reset_lockout", "ack_alarm"})
"""Operator commands journaled like money (a manual open survives a restart). ``detail`` is
the command: ``"open:<reason>"`` / ``"auto:"`` for a relay, the meter's own alarm number for an
acknowledgement; ``amount`` is 0."""

QUOTA_KINDS: Final = frozenset({"quota_request", "quota_approval", "quota_rejection"})
"""A quota group's budget requests and decisions (``server.quotas``), kept under the group's
owner id (``quota:<group>``), not a meter's. ``amount`` is the energy (Wh) or money (minor
units) asked for; it moves no money. ``detail`` is JSON: who asked and why, or which request
was decided by whom."""

PRODUCTION_KINDS: Final = frozenset({"production"})
"""A production line's output count for a day (``server.production``), under the owner id
``line:<line>``: ``amount`` is the count, ``detail`` JSON with the day and who entered it."""

TENANT_LINK_KINDS: Final = frozenset({"tenant_links"})
"""A revocation of a tenant's page links (``server.tenant_links``), under the owner id
``tenant:<tenant>``: each entry raises the tenant's link generation by one, so links made
before it are refused. ``amount`` is 0; ``detail`` JSON with who revoked them."""

NON_METER_KINDS: Final = QUOTA_KINDS | PRODUCTION_KINDS | TENANT_LINK_KINDS
"""Entries that are no meter's and move no money."""

KINDS: Final = frozenset({"opening", "topup", "adjustment", "apportionment",
                          "replace_meter"}) | OPERATOR_KINDS | NON_METER_KINDS


DETAIL_KINDS: Final = OPERATOR_KINDS | {"quota_approval", "quota_rejection"}
"""Kinds whose ``detail`` is the command itself (a reference reused with another detail is a
conflict)."""


class ReferenceConflict(ValueError):
    """A reference that was already used for a different money movement; nothing was written."""

    code = "conflict"


@attrs.frozen
class JournalEntry:
    """One money event (or operator command that money depends on). ``amount`` is in minor
    units (signed for adjustments). ``start_wh``/``final_wh`` are a ``replace_meter``'s
    registers (-1 elsewhere). ``ts_ms`` is the wall label, ``mono_ms`` the control-clock time
    when it was recorded (-1: unknown, entries written before the control clock)."""

    kind: str
    meter_id: str
    amount: int
    reference: str
    ts_ms: int
    detail: str = ""
    start_wh: int = -1
    final_wh: int = -1
    mono_ms: int = -1

    def conflicts_with(self, other: JournalEntry) -> bool:
        """Same reference but a different movement (ts, mono and detail may differ, except
        for operator commands, whose detail *is* the command)."""
        if (self.kind, self.meter_id, self.amount, self.start_wh, self.final_wh) != (
                other.kind, other.meter_id, other.amount, other.start_wh, other.final_wh):
            return True
        return self.kind in DETAIL_KINDS and self.detail != other.detail


@attrs.frozen
class Recorded:
    """The (first) recording of a reference: its sequence number and stored outcome, if any."""

    seq: int
    entry: JournalEntry
    outcome: int | None = None
    duplicate: bool = False


MeterMessage = (
    TopUpApplied | AdjustmentApplied | ReplaceMeter | SetManualRelay | ResetLockout
    | AcknowledgeAlarm
)


def relay_detail(action: str, reason: str) -> str:
    return f"{action}:{reason}"


def to_message(seq: int, entry: JournalEntry) -> MeterMessage:
    """The message a meter actor applies for a committed entry (live and during recovery)."""
    if entry.kind == "topup":
        return TopUpApplied(seq, entry.amount, entry.reference, entry.ts_ms, entry.mono_ms)
    if entry.kind == "replace_meter":
        return ReplaceMeter(seq, entry.start_wh, entry.final_wh, entry.detail, entry.ts_ms,
                            entry.mono_ms)
    if entry.kind == "relay":
        action, _, reason = entry.detail.partition(":")
        return SetManualRelay(action, reason, entry.ts_ms, entry.mono_ms, seq)
    if entry.kind == "reset_lockout":
        return ResetLockout(entry.ts_ms, entry.mono_ms, seq)
    if entry.kind == "ack_alarm":
        return AcknowledgeAlarm(entry.detail, entry.ts_ms, entry.mono_ms, seq)
    return AdjustmentApplied(seq, entry.amount, entry.detail or entry.kind, entry.ts_ms,
                             entry.mono_ms)


def conflict_message(first: JournalEntry, again: JournalEntry) -> str:
    return (
        f"reference {first.reference!r} was already used for {_described(first)} on meter "
        f"{first.meter_id}; it cannot be reused for {_described(again)} on meter "
        f"{again.meter_id}"
    )


def _described(entry: JournalEntry) -> str:
    if entry.kind in OPERATOR_KINDS:
        return f"a {entry.kind} command {entry.detail!r}"
    return f"a {entry.kind} of {entry.amount}"
