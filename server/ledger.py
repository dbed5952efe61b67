"""Money commands: durable first, applied once, acknowledged with the new balance.

Theory of operation
-------------------
Every path that moves money (websocket, HTTP, OPC UA, admin tools) calls the ``Ledger``; none
talks to a meter actor about money directly. A top-up goes through three steps:

1. validate (known meter, amount > 0, a reference) — nothing is written on error;
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

Answers tell the truth about money (``MoneyAck.status``): "applied" (in the balance given),
"duplicate" (a repeat of an earlier recording; no second movement) or "pending": the entry is
durable in the journal but its meter is faulted, so it is applied when the meter restarts
(from snapshot + journal, which includes it); a repeat says "pending" again until then. A
faulted meter is no reason to refuse a tenant's payment, and "no money was moved" would be
false once the entry is written. When the journal cannot write (storage down), nothing is
written and the error says so (``StorageUnavailable``, code ``unavailable``).

Every entry carries the control-clock time it was recorded at (``mono_ms``), so the meter
applies it live and on replay with the same time: relay decisions (anti-chatter, reclose)
are measured on the control clock, never on the wall label.
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Final, Literal

import attrs

from actors.meter import CommandOutcome, MeterFaulted
from actors.registry import ParkRegistry
from actors.runtime import Reply, Request
from actors.supervisor import ActorCrashed
from persistence.entries import (
    PRODUCTION_KINDS,
    QUOTA_KINDS,
    TENANT_LINK_KINDS,
    relay_detail,
    to_message,
)
from persistence.journal import Journal, JournalEntry, Recorded
from persistence.store import StoreError

log = logging.getLogger(__name__)

MAX_REFERENCE_LENGTH: Final = 128
RECENT_OUTCOMES: Final = 65_536

Status = Literal["applied", "duplicate", "pending"]


class BadRequest(ValueError):
    """The command itself is wrong (amount, reference); nothing was written."""

    code = "bad_request"


@attrs.frozen
class MoneyAck:
    """The answer to a money command. ``balance`` is the meter's balance right after it was
    applied ("applied"), as first answered ("duplicate"), or its last known balance while the
    entry waits for a faulted meter ("pending")."""

    reference: str
    meter_id: str
    balance: int
    duplicate: bool = False
    status: Status = "applied"


@attrs.frozen
class CommandAck:
    """The answer to an operator command (relay, lockout reset, alarm acknowledgement): the
    meter's relay and balance right after it, or now for a duplicate."""

    reference: str
    meter_id: str
    status: Status
    balance: int
    relay_closed: bool
    relay_reason: str | None


def _no_control_clock() -> int:
    return -1


def _nothing_known(reference: str) -> bool:
    return False


def _no_quota_groups(seq: int, entry: JournalEntry) -> None:
    log.warning("journal entry %d (%s) has no quota desk to go to", seq, entry.kind)


def _no_tenant_links(seq: int, entry: JournalEntry) -> None:
    log.warning("journal entry %d (%s) has no tenant link desk to go to", seq, entry.kind)


class Ledger:
    def __init__(
        self,
        registry: ParkRegistry,
        journal: Journal,
        mono_ms: Callable[[], int] = _no_control_clock,
        is_recorded: Callable[[str], bool] = _nothing_known,
    ) -> None:
        self._registry = registry
        self._journal = journal
        self._mono_ms = mono_ms
        self._is_recorded = is_recorded  # reference -> in the journal already (a repeat)
        # seq -> reply of the delivery request; filled by on_committed before record() returns.
        self._deliveries: dict[int, Reply] = {}
        # reference -> reply, so a concurrent duplicate can wait for the first one's balance.
        self._in_flight: dict[str, Reply] = {}
        self._recent: OrderedDict[str, int] = OrderedDict()
        self.on_quota_entry: Callable[[int, JournalEntry], None] = _no_quota_groups
        self.on_money_committed: Callable[[int, JournalEntry, int], None] | None = None
        """Told of each meter entry once its actor applied it, with the balance after it
        (``server.notices``: top-up receipts)."""
        """Where quota groups' entries go (``server.quotas.QuotaDesk.on_committed``)."""
        self.on_tenant_links_entry: Callable[[int, JournalEntry], None] = _no_tenant_links
        """Where link revocations go (``server.tenant_links.TenantLinkDesk.on_committed``)."""

    # -- commands -------------------------------------------------------------------------

    async def top_up(self, meter_id: str, amount: int, reference: str, ts_ms: int) -> MoneyAck:
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise BadRequest("amount must be > 0")
        return await self._move(JournalEntry("topup", meter_id, amount, reference, ts_ms, "",
                                             mono_ms=self._mono_ms()))

    async def adjust(
        self, meter_id: str, amount: int, reference: str, ts_ms: int, reason: str
    ) -> MoneyAck:
        """A signed correction (admin) or an apportioned charge; ``reason`` is journaled."""
        if isinstance(amount, bool) or not isinstance(amount, int) or amount == 0:
            raise BadRequest("an adjustment must be a non-zero whole number of minor units")
        entry = JournalEntry("adjustment", meter_id, amount, reference, ts_ms, reason,
                             mono_ms=self._mono_ms())
        return await self._move(entry)

    async def apportion(
        self, meter_id: str, charge: int, reference: str, ts_ms: int, reason: str
    ) -> MoneyAck:
        """A tenant's share of a pool (``server.apportion``): ``charge`` minor units off its
        balance, journaled as kind ``apportionment`` with ``reason`` (its statement line)."""
        if isinstance(charge, bool) or not isinstance(charge, int) or charge <= 0:
            raise BadRequest("an apportioned share must be a whole number of minor units > 0")
        entry = JournalEntry("apportionment", meter_id, -charge, reference, ts_ms, reason,
                             mono_ms=self._mono_ms())
        return await self._move(entry)

    async def replace_meter(
        self,
        meter_id: str,
        reference: str,
        ts_ms: int,
        *,
        start_wh: int,
        final_wh: int = -1,
        reason: str = "",
    ) -> MoneyAck:
        """The meter was physically replaced (or its register reset): journaled like money,
        because it decides what the next reading charges. ``final_wh`` is the old meter's last
        register (charged from the last good reading; -1 if unknown), ``start_wh`` the new
        one's (the next baseline)."""
        for name, value in (("start_wh", start_wh), ("final_wh", final_wh)):
            if isinstance(value, bool) or not isinstance(value, int) or value < -1 or (
                    name == "start_wh" and value < 0):
                raise BadRequest(f"{name} must be a whole number of Wh >= 0, got {value!r}")
        last_good = self._registry.get(meter_id).state.register_wh
        if 0 <= final_wh < last_good and not self._is_recorded(reference):
            # The policy refuses it too; saying so before writing keeps the journal clean.
            raise BadRequest(f"the old meter's final register {final_wh} Wh is below its last "
                             f"good reading ({last_good} Wh)")
        entry = JournalEntry("replace_meter", meter_id, 0, reference, ts_ms, reason,
                             start_wh=start_wh, final_wh=final_wh, mono_ms=self._mono_ms())
        return await self._move(entry)

    # -- operator commands: journaled like money, so they survive a restart ------------------

    async def set_relay(self, meter_id: str, action: str, reason: str, reference: str,
                        ts_ms: int) -> CommandAck:
        """``action`` "open" (a manual cut, until "auto") or "auto" (the policies decide)."""
        if action not in ("open", "auto"):
            raise BadRequest(f"relay action must be 'open' or 'auto', got {action!r}")
        detail = relay_detail(action, reason if action == "open" else "")
        return await self._command(JournalEntry("relay", meter_id, 0, reference, ts_ms, detail,
                                                mono_ms=self._mono_ms()))

    async def reset_lockout(self, meter_id: str, reference: str, ts_ms: int) -> CommandAck:
        return await self._command(JournalEntry("reset_lockout", meter_id, 0, reference, ts_ms,
                                                mono_ms=self._mono_ms()))

    async def ack_alarm(self, meter_id: str, local_id: str, reference: str,
                        ts_ms: int) -> CommandAck:
        """Acknowledge the meter's alarm number ``local_id`` (park id ``<meter>/<local>``)."""
        active = self._registry.get(meter_id).state.alarms.active
        if (not any(alarm.alarm_id == local_id for alarm in active)
                and not self._is_recorded(reference)):
            # The policy refuses it too; saying so before writing keeps the journal clean.
            raise BadRequest(f"meter {meter_id} has no active alarm {meter_id}/{local_id}")
        return await self._command(JournalEntry("ack_alarm", meter_id, 0, reference, ts_ms,
                                                local_id, mono_ms=self._mono_ms()))

    async def _command(self, entry: JournalEntry) -> CommandAck:
        ack = await self._move(entry)
        relay = self._registry.get(entry.meter_id).state.relay
        return CommandAck(ack.reference, ack.meter_id, ack.status, ack.balance, relay.closed,
                          relay.reason)

    async def _move(self, entry: JournalEntry) -> MoneyAck:
        _check_reference(entry.reference)
        self._registry.get(entry.meter_id)  # UnknownMeter before anything is written
        recorded = await self._journal.record(entry)
        if recorded.duplicate:
            return await self._repeat(recorded)
        reply = self._deliveries.pop(recorded.seq)
        # Usually applied already (on_committed delivers at once); then a second wait would
        # only cost another trip through the scheduler.
        try:
            outcome = reply.result() if reply.done else await reply.wait()
        except (MeterFaulted, ActorCrashed):
            # The entry is durable. A crash restarted the actor from snapshot + journal, which
            # applied it; a faulted meter applies it when it restarts. Either way the money
            # is not lost, and the answer must not say otherwise.
            self._in_flight.pop(entry.reference, None)
            return self._unconfirmed(entry, duplicate=False)
        rejection = _rejection_of(outcome)
        if rejection is not None:
            # The policy refused the command (a replacement's registers): it is journaled, and
            # replays refuse it the same way; answer as a bad request.
            self._in_flight.pop(entry.reference, None)
            raise BadRequest(rejection)
        balance = _balance_of(outcome)
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
            except (MeterFaulted, ActorCrashed):
                return self._unconfirmed(entry, duplicate=True)
            if self._deliveries.pop(recorded.seq, None) is not None:
                # Redelivered after a journal writer restart: its first caller heard
                # "unavailable, outcome unknown", so this retry is the first to learn the
                # balance; store it as the entry's outcome, as the first answer would have.
                self._remember(entry.reference, balance)
                with contextlib.suppress(StoreError):  # storage down again: answered anyway
                    self._journal.record_outcome_nowait(Recorded(recorded.seq, entry), balance)
        else:
            # Committed before a crash that lost its outcome (recovery applied it), or waiting
            # for a faulted meter.
            return self._unconfirmed(entry, duplicate=True)
        return MoneyAck(entry.reference, entry.meter_id, balance, duplicate=True,
                        status="duplicate")

    def _unconfirmed(self, entry: JournalEntry, *, duplicate: bool) -> MoneyAck:
        """The answer for a durable entry whose application we did not see: pending while its
        meter is faulted (or its state predates the entry), else applied in its balance."""
        actor = self._registry.get(entry.meter_id)
        status: Status = "duplicate" if duplicate else "applied"
        if actor.faulted:
            status = "pending"
        return MoneyAck(entry.reference, entry.meter_id, actor.state.balance,
                        duplicate=duplicate, status=status)

    # -- delivery, called by the journal on the trio thread in seq order -----------------------

    def on_committed(self, entries: list[tuple[int, JournalEntry]]) -> None:
        for seq, entry in entries:
            if entry.kind in QUOTA_KINDS:  # a group's budget, not a meter's money
                try:
                    self.on_quota_entry(seq, entry)
                except Exception:  # the meters' entries of this batch must still arrive
                    log.exception("quota entry %d could not be applied", seq)
                continue
            if entry.kind in PRODUCTION_KINDS:  # a line's count: the journal is its home
                continue
            if entry.kind in TENANT_LINK_KINDS:  # a tenant's page links, no meter's
                try:
                    self.on_tenant_links_entry(seq, entry)
                except Exception:
                    log.exception("tenant link entry %d could not be applied", seq)
                continue
            message = to_message(seq, entry)  # what recovery replays, exactly
            reply = Reply()
            self._deliveries[seq] = reply
            self._in_flight[entry.reference] = reply
            actor = self._registry.get(entry.meter_id)
            # Not through ask() and not through the mailbox: a committed entry must reach the
            # actor even when the run queue is full, and applying it here lets record() return
            # with the balance in hand (one task wake-up per top-up instead of three).
            self._registry.deliver_now(actor, Request(message, reply))
            if self.on_money_committed is not None:
                try:
                    self.on_money_committed(seq, entry, actor.state.balance)
                except Exception:
                    log.exception("entry %d: its notice could not be raised", seq)

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


def _rejection_of(outcome: object) -> str | None:
    assert isinstance(outcome, CommandOutcome)
    return None if outcome.rejection is None else outcome.rejection.message
