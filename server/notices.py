"""Raising tenant notices from what the park already does, and writing them to the outbox.

Theory of operation
-------------------
Nothing in a meter actor knows about tenants' contacts. The :class:`Notifier` listens where
the park already reports what happens, each time on someone else's time slice, so each hook
does a dictionary lookup and at most one list append:

* an alarm sink (``router.alarm_sinks``): a ``low_balance`` level reached (the alarm policy's
  hysteresis already keeps a wobbling balance from raising it twice), a quota group at a
  warning level (park alarm ``park/quota:<group>:<percent>``: every tenant with a meter in the
  group is told);
* a relay observer (``router.relay_observers``): supply cut at zero balance, overload or quota,
  and supply restored after such a cut;
* the ledger (``Ledger.on_money_committed``): a top-up's receipt, with the balance after it.

Two tasks look on their own: one estimates from each meter's load and the price in force
whether its credit runs out within ``[notify] runout_hours`` (at most one such notice per meter
and local day), one tells every tenant when last month's statement can be read.

Only tenants with a contact are told anything, so a park without contacts pays one set lookup
per event. Notices are written by the flusher task: every ``FLUSH_S`` the queued notices go to
the journal writer (``Journal.put_notices_nowait``) and the task waits for the commit; if the
writer could not be reached the same batch is sent again (a notice already in the outbox is
kept once: ids come from causes, ``policies.notices``). The delivery process reads the outbox
from there (``server.notify_worker``).

Receipts are the one kind whose cause, a journal entry, is durable before the notice is: each
batch carries the highest journal seq whose receipt it holds, and at start the receipts of the
top-ups committed after that seq are raised again (:meth:`Notifier.catch_up_receipts`). Alarms
and relay cuts need no such step: their cause is a meter's state, which recovery rebuilds and
the next reading decides again, with the same alarm number and so the same notice id.
"""

from __future__ import annotations

import datetime as dt
import logging
import zoneinfo
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import attrs
import trio

from actors.effects import PARK_ALARM_PREFIX, AlarmEvent
from persistence.codec import CodecError, decode_outcome
from persistence.damage import DamagedRecord
from persistence.entries import JournalEntry
from persistence.keys import pack_u64
from persistence.outbox import encode_notice, receipts_item, receipts_through
from persistence.recovery import entries_after
from persistence.store import Store, StoreError
from policies.money import format_amount
from policies.notices import Notice, hours_of_credit
from policies.records import RelayCommand
from policies.tariff import segment_at, tier_at

if TYPE_CHECKING:
    from actors.meter import MeterActor
    from actors.registry import ParkRegistry
    from persistence.journal import Journal
    from server.clock import ParkClock
    from server.config import ParkConfig

log = logging.getLogger(__name__)

FLUSH_S: Final = 0.05
RUNOUT_EVERY_S: Final = 60.0
STATEMENT_EVERY_S: Final = 300.0
STATEMENT_GRACE_DAYS: Final = 3
FLUSH_CHUNK: Final = 1_000
MAX_QUEUED: Final = 1_000_000
"""Notices kept while storage is down (about 200 MB); past it the oldest are dropped, logged."""
CUT_REASONS: Final = frozenset({"zero_balance", "overload", "quota"})
RECEIPT_KINDS: Final = frozenset({"topup"})


@attrs.define
class NotifierStatistics:
    raised: int = 0
    written: int = 0
    dropped: int = 0
    queued: int = 0


class Notifier:
    """See the module docstring. ``reachable`` is the set of tenants with a contact."""

    def __init__(self, config: ParkConfig, registry: ParkRegistry, clock: ParkClock) -> None:
        self._config = config
        self._registry = registry
        self._clock = clock
        self._decimals = config.server.decimals
        self._zone = zoneinfo.ZoneInfo(config.calendar.timezone)
        self._tenant_of = {meter.id: meter.tenant for meter in config.meters}
        self.reachable = frozenset(t.id for t in config.tenants.values() if t.contacts)
        self._group_tenants = {
            group.id: tuple(dict.fromkeys(self._tenant_of[m] for m in group.meters
                                          if self._tenant_of[m] in self.reachable))
            for group in config.quotas}
        self._queue: list[Notice] = []
        """Raised and not yet written; encoded by the flusher, not by the hooks."""
        self._receipts_seq = 0
        self._cut: dict[str, str] = {}
        """Meter -> why its supply is cut (one of ``CUT_REASONS``), for "restored"."""
        self._statement_month: str | None = None
        self._runout_told: dict[str, str] = {}
        """Meter -> the local day its "credit running out" notice was raised."""
        self.statistics = NotifierStatistics()
        self.on_written: Callable[[int], None] = _nothing
        """Called with the number of notices each committed batch carried (the delivery
        process is woken by it)."""

    def start(self) -> None:
        """Learn which meters are cut already (recovered state), so their restore is told."""
        for actor in self._registry:
            relay = actor.state.relay
            if not relay.closed and relay.reason in CUT_REASONS:
                self._cut[actor.meter_id] = relay.reason

    # -- hooks (someone else's time slice: no I/O, no waiting) -----------------------------

    def on_alarm(self, event: AlarmEvent) -> None:
        if event.state != "active":
            return
        if event.kind == "low_balance":
            tenant = self._tenant_of.get(event.meter_id)
            if tenant in self.reachable:
                self._low_balance(event, tenant)
        elif event.kind == "quota" and event.alarm_id.startswith(PARK_ALARM_PREFIX + "/"):
            self._quota(event)

    def on_relay(self, actor: MeterActor, command: RelayCommand) -> None:
        meter_id = actor.meter_id
        if command.closed:
            reason = self._cut.pop(meter_id, None)
            if reason is None:
                return
            kind, extra = "supply_restored", {"after": reason}
        else:
            if command.reason not in CUT_REASONS:
                return
            self._cut[meter_id] = command.reason
            kind, extra = "supply_cut", {"reason": command.reason or ""}
        tenant = self._tenant_of.get(meter_id)
        if tenant not in self.reachable:
            return
        state = actor.state
        # A cut for the same reason cannot repeat without a credit (a new journal seq) or a
        # new overload trip in the lockout window: both are in the recovered state, so a cut
        # decided again after a crash has the id it had.
        episode = f"{state.journal_seq}/{len(state.protection.trip_ms)}"
        notice_id = (f"{meter_id}/cut/{command.reason}/{episode}" if kind == "supply_cut"
                     else f"{meter_id}/restored/{episode}")
        self._raise(notice_id, kind, tenant, meter_id, command.ts_ms,
                    {"balance": self._amount(actor.state.balance), **extra})

    def on_money_committed(self, seq: int, entry: JournalEntry, balance: int) -> None:
        if entry.kind not in RECEIPT_KINDS:
            return
        self._receipts_seq = max(self._receipts_seq, seq)
        tenant = self._tenant_of.get(entry.meter_id)
        if tenant in self.reachable:
            self._receipt(entry, tenant, balance)

    # -- notices ---------------------------------------------------------------------------

    def _low_balance(self, event: AlarmEvent, tenant: str) -> None:
        policy = self._registry.get(event.meter_id).policy
        levels = policy.alarm_levels
        level = levels[event.level - 1] if 0 < event.level <= len(levels) else 0
        state = self._registry.get(event.meter_id).state
        balance = state.balance
        # A level is crossed again only after a credit lifted the balance above it, and every
        # credit is a journal entry: (level, the meter's last journal seq) names the crossing,
        # the same way after a crash (the alarm's own number may not be: other alarms of the
        # restart can take it).
        notice_id = f"{event.meter_id}/low_balance/{event.level}/{state.journal_seq}"
        self._raise(notice_id, "low_balance", tenant, event.meter_id,
                    event.ts_ms, {"balance": self._amount(balance),
                                  "level": self._amount(level),
                                  "level_number": str(event.level)})

    def _quota(self, event: AlarmEvent) -> None:
        group = event.alarm_id.partition("/")[2].removeprefix("quota:").rpartition(":")[0]
        month = dt.datetime.fromtimestamp(event.ts_ms / 1000, self._zone).strftime("%Y-%m")
        for tenant in self._group_tenants.get(group, ()):
            self._raise(f"quota/{group}/{month}/{event.level}/{tenant}", "quota", tenant, "",
                        event.ts_ms, {"group": group, "percent": str(event.level),
                                      "month": month})

    def _receipt(self, entry: JournalEntry, tenant: str, balance: int) -> None:
        self._raise(f"receipt/{entry.reference}", "topup_receipt", tenant, entry.meter_id,
                    entry.ts_ms, {"amount": self._amount(entry.amount),
                                  "balance": self._amount(balance),
                                  "reference": entry.reference})

    def _raise(self, notice_id: str, kind: str, tenant: str, meter: str, ts_ms: int,
               fields: dict[str, str]) -> None:
        if len(self._queue) >= MAX_QUEUED:
            del self._queue[: MAX_QUEUED // 10]
            self.statistics.dropped += MAX_QUEUED // 10
            log.error("tenant notices cannot be written (storage down?): the oldest %d of "
                      "those waiting were dropped", MAX_QUEUED // 10)
        fields["tenant_name"] = self._config.tenant_name(tenant)
        fields["currency"] = self._config.server.currency
        self._queue.append(Notice(notice_id, kind, tenant, meter, ts_ms, fields))
        self.statistics.raised += 1

    def _amount(self, minor: int) -> str:
        return format_amount(minor, self._decimals)

    # -- recovery ----------------------------------------------------------------------------

    def catch_up_receipts(self, store: Store) -> int:
        """Raise the receipts of top-ups committed after the outbox's receipts mark (those a
        crash may have kept from the outbox); returns how many journal entries it read."""
        if store.outbox is None:
            return 0
        with store.read() as txn:
            through = receipts_through(txn, store.meta)
        last = store.last_seq()
        if through == 0 and last > 0:
            # A directory from before the outbox: its old top-ups are not news now.
            self._receipts_seq = last
            return 0
        read = 0
        try:
            for seq, entry in entries_after(store, through):
                read += 1
                if entry.kind in RECEIPT_KINDS:
                    tenant = self._tenant_of.get(entry.meter_id)
                    if tenant in self.reachable:
                        balance = self._balance_after(store, seq, entry)
                        self._receipt(entry, tenant, balance)
                self._receipts_seq = max(self._receipts_seq, seq)
        except DamagedRecord as error:
            log.error("top-up receipts after journal seq %d were not all raised: %s",
                      through, error)
        return read

    def _balance_after(self, store: Store, seq: int, entry: JournalEntry) -> int:
        with store.read() as txn:
            raw = txn.get(pack_u64(seq), db=store.outcomes)
        if raw is not None:
            try:
                return decode_outcome(bytes(raw))
            except CodecError:  # a damaged outcome: the live balance is the next best
                pass
        actor = self._registry.get(entry.meter_id)
        return actor.state.balance

    # -- tasks -----------------------------------------------------------------------------

    async def run_flusher(self, journal: Journal, *, every_s: float = FLUSH_S,
                          task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write what was raised, every ``every_s``, forever (see the module docstring)."""
        task_status.started()
        while True:
            await trio.sleep(every_s)
            await self.flush(journal)

    async def flush(self, journal: Journal) -> int:
        """Write the queued notices and wait for their commit; returns how many went.

        A burst (10,000 meters crossing a level in one round) is encoded and handed to the
        writer ``FLUSH_CHUNK`` at a time, with a checkpoint between chunks, so the control loop
        is never held for the whole burst."""
        if not self._queue:
            return 0
        batch, self._queue = self._queue, []
        try:
            for start in range(0, len(batch), FLUSH_CHUNK):
                items = [encode_notice(notice) for notice in batch[start:start + FLUSH_CHUNK]]
                if start + FLUSH_CHUNK >= len(batch) and self._receipts_seq:
                    items.append(receipts_item(self._receipts_seq))
                journal.put_notices_nowait(items)
                await trio.lowlevel.checkpoint()
            await journal.flush()
        except StoreError as error:
            self._queue[:0] = batch  # again, in order (the outbox keeps a repeat once)
            self.statistics.queued = len(self._queue)
            log.warning("tenant notices wait for storage: %s", error)
            return 0
        self.statistics.written += len(batch)
        self.statistics.queued = len(self._queue)
        try:
            self.on_written(len(batch))
        except Exception:
            log.exception("the delivery process could not be woken")
        return len(batch)

    async def run_runout_scan(self, *, every_s: float = RUNOUT_EVERY_S,
                              task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                              ) -> None:
        task_status.started()
        while True:
            self.scan_runout()
            await trio.sleep(every_s)

    def scan_runout(self) -> int:
        """Raise "credit running out" for each meter of a reachable tenant whose balance lasts
        less than ``runout_hours`` at its present load; returns how many were raised."""
        limit = self._config.notify.runout_hours
        if limit <= 0 or not self.reachable:
            return 0
        now = self._clock.wall_ms()
        today = dt.datetime.fromtimestamp(now / 1000, self._zone).date().isoformat()
        raised = 0
        for meter_id, tenant in self._tenant_of.items():
            if tenant not in self.reachable or self._runout_told.get(meter_id) == today:
                continue
            actor = self._registry.get(meter_id)
            state = actor.state
            if not state.online or not state.relay.closed:
                continue
            tariff = actor.policy.tariff
            price = segment_at(tariff, now)[2] + tier_at(tariff.tiers, state.month_wh)[0]
            hours = hours_of_credit(state.balance, state.power_w, price)
            if hours is None or hours >= limit:
                continue
            self._runout_told[meter_id] = today
            self._raise(f"{meter_id}/runout/{today}", "credit_running_out", tenant, meter_id,
                        now, {"balance": self._amount(state.balance),
                              "hours": str(max(1, round(hours)))})
            raised += 1
        return raised

    async def run_statement_clock(
        self, *, every_s: float = STATEMENT_EVERY_S,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Tell every reachable tenant, once a month, that last month's statement is ready."""
        task_status.started()
        while True:
            self.statements_ready()
            await trio.sleep(every_s)

    def statements_ready(self) -> int:
        """Raise "statement ready" for last month once: when this process sees the month turn,
        or in the first days of a month (a server that was down at midnight; the outbox keeps
        a repeat once)."""
        now = self._clock.wall_ms()
        local = dt.datetime.fromtimestamp(now / 1000, self._zone)
        first = local.date().replace(day=1)
        month = (first - dt.timedelta(days=1)).strftime("%Y-%m")
        seen, self._statement_month = self._statement_month, month
        if month == seen or (seen is None and local.day > STATEMENT_GRACE_DAYS):
            return 0
        raised = 0
        for tenant in sorted(self.reachable):
            meters = [m for m, t in self._tenant_of.items() if t == tenant]
            balance = sum(self._registry.get(m).state.balance for m in meters)
            self._raise(f"statement/{tenant}/{month}", "statement_ready", tenant,
                        meters[0] if meters else "", now,
                        {"month": month, "balance": self._amount(balance)})
            raised += 1
        return raised


def _nothing(count: int) -> None:
    pass

