"""Money commands: durable first, applied once, acknowledged with the new balance.

Theory of operation
-------------------
Every path that moves money (websocket, HTTP, OPC UA, admin tools) calls the ``Ledger``; none
talks to a meter actor about money directly. A top-up goes through three steps:

1. validate (known meter, not faulted, amount > 0, a reference) — nothing is written on error;
2. ``journal.record`` — returns once the entry is committed and fsynced (group commit), or
   returns the first recording when the reference was seen before (idempotency lives in the
   journal, so it survives restarts);
3. the journal calls ``on_committed`` on the trio thread, in sequence order, for every committed
   batch; the ledger turns each entry into a ``TopUpApplied``/``AdjustmentApplied`` request and
   applies it to the meter actor right there, ahead of its mailbox (money adds up in any order
   against queued readings, and the caller then wakes once, balance in hand). Delivery in
   journal order is what makes recovery exact: a snapshot that
   includes entry *n* includes every earlier entry of that meter.

The acknowledgement carries the balance right after that top-up was applied. It is stored back
into the journal (``record_outcome_nowait``) so a repeated reference gets the same answer even
after a restart. If the process died after the commit but before the outcome was stored, the
top-up is applied during recovery and a repeat is answered with the meter's current balance.
"""

from __future__ import annotations

from collections import OrderedDict

import attrs

from actors.meter import CommandOutcome, MeterFaulted
from actors.registry import ParkRegistry
from actors.runtime import Reply, Request
from actors.supervisor import ActorCrashed
from persistence.journal import Journal, JournalEntry, Recorded
from policies.records import AdjustmentApplied, TopUpApplied

MAX_REFERENCE_LENGTH = 128
RECENT_OUTCOMES = 65_536


class BadRequest(ValueError):
    """The command itself is wrong (amount, reference); nothing was written."""


@attrs.frozen
class MoneyAck:
    reference: str
    meter_id: str
    balance: int
    duplicate: bool = False


class Ledger:
    def __init__(self, registry: ParkRegistry, journal: Journal) -> None:
        self._registry = registry
        self._journal = journal
        # seq -> reply of the delivery request; filled by on_committed before record() returns.
        self._deliveries: dict[int, Reply] = {}
        # reference -> reply, so a concurrent duplicate can wait for the first one's balance.
        self._in_flight: dict[str, Reply] = {}
        self._recent: OrderedDict[str, int] = OrderedDict()

    # -- commands -------------------------------------------------------------------------

    async def top_up(self, meter_id: str, amount: int, reference: str, ts_ms: int) -> MoneyAck:
        if amount <= 0:
            raise BadRequest("amount must be > 0")
        return await self._move(JournalEntry("topup", meter_id, amount, reference, ts_ms, ""))

    async def adjust(
        self, meter_id: str, amount: int, reference: str, ts_ms: int, reason: str
    ) -> MoneyAck:
        """A signed correction (admin) or an apportioned charge; ``reason`` is journaled."""
        if amount == 0:
            raise BadRequest("an adjustment must not be zero")
        entry = JournalEntry("adjustment", meter_id, amount, reference, ts_ms, reason)
        return await self._move(entry)

    async def _move(self, entry: JournalEntry) -> MoneyAck:
        _check_reference(entry.reference)
        actor = self._registry.get(entry.meter_id)
        if actor.faulted:
            raise MeterFaulted(f"meter {entry.meter_id} is faulted; no money was moved")
        recorded = await self._journal.record(entry)
        if recorded.duplicate:
            return await self._repeat(recorded)
        reply = self._deliveries.pop(recorded.seq)
        # Usually applied already (on_committed delivers at once); then a second wait would
        # only cost another trip through the scheduler.
        try:
            balance = _balance_of(reply.result() if reply.done else await reply.wait())
        except Exception:
            # Applying it crashed the actor (the restart replayed the durable entry) or the
            # meter is faulted: a repeat must not keep finding this failed delivery.
            self._in_flight.pop(entry.reference, None)
            raise
        self._remember(entry.reference, balance)
        self._journal.record_outcome_nowait(recorded, balance)
        return MoneyAck(entry.reference, entry.meter_id, balance)

    async def _repeat(self, recorded: Recorded) -> MoneyAck:
        entry = recorded.entry
        if recorded.outcome is not None:
            balance = recorded.outcome
        elif entry.reference in self._recent:
            balance = self._recent[entry.reference]
        elif entry.reference in self._in_flight:
            try:
                balance = _balance_of(await self._in_flight[entry.reference].wait())
            except ActorCrashed:
                # The first delivery crashed its actor; the restart applied the entry.
                balance = self._registry.get(entry.meter_id).state.balance
        else:
            # Committed before a crash that lost its outcome: recovery applied it already.
            balance = self._registry.get(entry.meter_id).state.balance
        return MoneyAck(entry.reference, entry.meter_id, balance, duplicate=True)

    # -- delivery, called by the journal on the trio thread in seq order -----------------------

    def on_committed(self, entries: list[tuple[int, JournalEntry]]) -> None:
        for seq, entry in entries:
            message: object
            if entry.kind == "topup":
                message = TopUpApplied(seq, entry.amount, entry.reference, entry.ts_ms)
            else:
                message = AdjustmentApplied(seq, entry.amount, entry.detail or entry.kind,
                                            entry.ts_ms)
            reply = Reply()
            self._deliveries[seq] = reply
            self._in_flight[entry.reference] = reply
            actor = self._registry.get(entry.meter_id)
            # Not through ask() and not through the mailbox: a committed entry must reach the
            # actor even when the run queue is full, and applying it here lets record() return
            # with the balance in hand (one task wake-up per top-up instead of three).
            self._registry.deliver_now(actor, Request(message, reply))

    def _remember(self, reference: str, balance: int) -> None:
        self._in_flight.pop(reference, None)
        self._recent[reference] = balance
        if len(self._recent) > RECENT_OUTCOMES:
            self._recent.popitem(last=False)


def _check_reference(reference: str) -> None:
    if not isinstance(reference, str) or not reference.strip():
        raise BadRequest("a reference (id) is required so the request can be retried safely")
    if len(reference) > MAX_REFERENCE_LENGTH:
        raise BadRequest(f"reference longer than {MAX_REFERENCE_LENGTH} characters")


def _balance_of(outcome: object) -> int:
    assert isinstance(outcome, CommandOutcome)
    return outcome.state.balance
