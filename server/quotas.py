"""Quota groups in a running park: their actors, extension requests and decisions.

Theory of operation
-------------------
``open_quota_groups`` builds one :class:`~actors.quota.QuotaGroup` per ``[[quotas]]`` entry
after recovery: the group's journaled requests and decisions are replayed through the pure
rules (``policies.quota``), then it tallies its recovered meters' month totals, so a budget
spent before a restart holds the meters open again before the first reading.

The :class:`QuotaDesk` is the one way to change a group's limit. A request for extra budget
(an operator: amount and reason) and a decision on it (an admin: approve or reject) are
checked, journaled under the group's owner id (``quota:<group>``, kinds
``persistence.entries.QUOTA_KINDS``) with the caller's reference, so a retry is answered
"duplicate" and nothing happens twice, and applied to the group's actor when the journal
delivers them (``Ledger.on_quota_entry``), in journal order, live and at start alike. An
approval raises the month's limit at once, and a group that was holding its meters open
releases them.

The calendar: a group's month is the park's local month (``[calendar] timezone``).
:func:`run_month_clock` rolls every group into a new month at midnight even when none of its
meters has been read since.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Literal

import attrs
import trio

from actors.effects import EffectRouter
from actors.quota import QuotaGroup
from actors.registry import ParkRegistry
from persistence.entries import JournalEntry
from persistence.journal import Journal
from persistence.recovery import meter_journal_after
from persistence.store import Store
from policies import quota as rules
from policies.money import MoneyError, format_amount, parse_amount
from policies.quota import QuotaPolicy, QuotaRequest, QuotaState
from policies.tariff import month_key
from server.clock import ParkClock
from server.config import ParkConfig
from server.config.records import QuotaSection
from server.ledger import BadRequest

log = logging.getLogger(__name__)

MAX_REASON_LENGTH: Final = 200
ENERGY_DECIMALS: Final = 3
"""kWh on the wire carry three decimals: a budget is kept in whole Wh."""

MonthOf = Callable[[int], int]


class UnknownQuota(BadRequest):
    """No such quota group (``bad_request``: the group is part of the request)."""

    def __init__(self, group_id: object) -> None:
        super().__init__(f"unknown quota group {group_id!r}")


@attrs.frozen
class QuotaAnswer:
    """The answer to a request or a decision: the group right after it."""

    reference: str
    group_id: str
    status: Literal["applied", "duplicate"]
    group: dict[str, Any]


def month_clock(timezone: str) -> MonthOf:
    """``ts_ms`` -> the park's local month key (``policies.tariff.month_key``)."""
    zone = zoneinfo.ZoneInfo(timezone)

    def month_of(ts_ms: int) -> int:
        return month_key(dt.datetime.fromtimestamp(ts_ms / 1000, zone).date())

    return month_of


def month_label(month: int) -> str:
    return f"{month // 12:04d}-{month % 12 + 1:02d}" if month >= 0 else ""


# --- journal entries <-> rule inputs ----------------------------------------------------


def request_entry(section: QuotaSection, amount: int, reason: str, by: str, reference: str,
                  ts_ms: int, mono_ms: int) -> JournalEntry:
    detail = json.dumps({"by": by, "reason": reason}, ensure_ascii=False)
    return JournalEntry("quota_request", section.owner, amount, reference, ts_ms, detail,
                        mono_ms=mono_ms)


def decision_entry(section: QuotaSection, request: QuotaRequest, approve: bool, by: str,
                   note: str, reference: str, ts_ms: int, mono_ms: int) -> JournalEntry:
    detail = json.dumps({"request": request.request_id, "by": by, "note": note},
                        ensure_ascii=False)
    kind = "quota_approval" if approve else "quota_rejection"
    return JournalEntry(kind, section.owner, request.amount if approve else 0, reference,
                        ts_ms, detail, mono_ms=mono_ms)


def apply_entry(state: QuotaState, entry: JournalEntry, policy: QuotaPolicy,
                month_of: MonthOf) -> rules.QuotaResult:
    """What a journaled quota entry does to a group: the same live and at start."""
    detail = json.loads(entry.detail)
    if entry.kind == "quota_request":
        request = QuotaRequest(entry.reference, entry.amount, str(detail.get("reason", "")),
                               str(detail.get("by", "")), entry.ts_ms, month_of(entry.ts_ms))
        return rules.request_extension(state, request, policy)
    return rules.decide(state, str(detail["request"]), entry.kind == "quota_approval",
                        str(detail.get("by", "")), entry.ts_ms, policy,
                        str(detail.get("note", "")))


def replay_group(store: Store, section: QuotaSection, month_of: MonthOf) -> QuotaState:
    """A group's state from its journaled requests and decisions (before any tally)."""
    state = QuotaState()
    for _, entry in meter_journal_after(store, section.owner, 0):
        state, _ = apply_entry(state, entry, section.policy, month_of)
    return state


# --- the desk ---------------------------------------------------------------------------


class QuotaDesk:
    """Requests and decisions: checked, journaled, applied (see the module docstring)."""

    def __init__(self, config: ParkConfig, groups: Mapping[str, QuotaGroup], journal: Journal,
                 clock: ParkClock, month_of: MonthOf,
                 is_recorded: Callable[[str], bool] = lambda reference: False) -> None:
        self.sections = {section.id: section for section in config.quotas}
        self.groups = dict(groups)
        self._owners = {section.owner: section.id for section in config.quotas}
        self._journal = journal
        self._clock = clock
        self._month_of = month_of
        self._is_recorded = is_recorded  # reference -> in the journal already (a repeat)
        self._decimals = config.server.decimals
        self._refused: dict[int, rules.QuotaRefused] = {}

    def group(self, group_id: object) -> QuotaGroup:
        if not isinstance(group_id, str) or group_id not in self.groups:
            raise UnknownQuota(group_id)
        return self.groups[group_id]

    def parse_amount(self, group_id: str, text: object) -> int:
        """An amount in the group's unit: kWh ("500", "12.5") or money ("300.00")."""
        section = self.sections[group_id]
        energy = section.policy.unit == "kwh"
        try:
            value = parse_amount(text, ENERGY_DECIMALS if energy else self._decimals,
                                 what="amount")
        except MoneyError as error:
            unit = "kWh" if energy else "money"
            raise BadRequest(f"{error} ({unit}, e.g. \"{'500' if energy else '300.00'}\")"
                             ) from None
        if value <= 0:
            raise BadRequest("the amount asked for must be > 0")
        return value

    def format_amount(self, group_id: str, value: int) -> str:
        energy = self.sections[group_id].policy.unit == "kwh"
        return format_amount(value, ENERGY_DECIMALS if energy else self._decimals)

    async def request(self, group_id: str, amount_text: object, reason: object, by: str,
                      reference: str) -> QuotaAnswer:
        group = self.group(group_id)
        amount = self.parse_amount(group_id, amount_text)
        if not isinstance(reason, str) or not reason.strip():
            raise BadRequest("a request for extra budget needs a reason")
        if len(reason) > MAX_REASON_LENGTH:
            raise BadRequest(f"reason longer than {MAX_REASON_LENGTH} characters")
        pending = sum(1 for r in group.state.requests if r.status == "pending")
        if pending >= rules.MAX_PENDING and not self._is_recorded(reference):
            raise BadRequest(f"group {group_id} already has {pending} pending requests")
        entry = request_entry(self.sections[group_id], amount, reason, by, reference,
                              self._clock.wall_ms(), self._clock.mono_ms())
        return await self._record(group_id, entry)

    async def decide(self, group_id: str, request_id: object, approve: bool, by: str,
                     note: object, reference: str) -> QuotaAnswer:
        group = self.group(group_id)
        if not isinstance(request_id, str) or not request_id:
            raise BadRequest("which request? (request: its id)")
        if not isinstance(note, str) or len(note) > MAX_REASON_LENGTH:
            raise BadRequest(f"note must be text of at most {MAX_REASON_LENGTH} characters")
        request = group.state.request(request_id)
        if request is None:
            raise BadRequest(f"group {group_id} has no request {request_id!r} this month")
        if request.status != "pending" and not self._is_recorded(reference):
            # The rules refuse it too; saying so before writing keeps the journal clean (a
            # repeat of the decision itself is answered by the journal: "duplicate").
            raise BadRequest(f"request {request_id!r} is {request.status} already")
        entry = decision_entry(self.sections[group_id], request, approve, by, note, reference,
                               self._clock.wall_ms(), self._clock.mono_ms())
        return await self._record(group_id, entry)

    async def _record(self, group_id: str, entry: JournalEntry) -> QuotaAnswer:
        if not entry.reference or not isinstance(entry.reference, str):
            raise BadRequest("a reference (id) is required so the request can be retried safely")
        recorded = await self._journal.record(entry)
        refused = self._refused.pop(recorded.seq, None)
        if refused is not None and not recorded.duplicate:
            raise BadRequest(refused.message)
        status: Literal["applied", "duplicate"] = "duplicate" if recorded.duplicate else "applied"
        return QuotaAnswer(entry.reference, group_id, status, self.view(group_id))

    def on_committed(self, seq: int, entry: JournalEntry) -> None:
        """A journaled quota entry, in journal order (``Ledger.on_quota_entry``)."""
        group_id = self._owners.get(entry.meter_id)
        if group_id is None:
            log.warning("journal entry %d is for %s, which is no configured quota group", seq,
                        entry.meter_id)
            return
        group = self.groups[group_id]
        group.tally_now()  # the rules decide on today's figure, not the last count's
        refused = group.apply(apply_entry(group.state, entry, group.policy, self._month_of))
        if refused is not None:
            self._refused[seq] = refused

    # -- views -----------------------------------------------------------------------------

    def view(self, group_id: str) -> dict[str, Any]:
        """A group as the hub and HTTP show it (amounts as decimal strings in its unit)."""
        section = self.sections[group_id]
        group = self.groups[group_id]
        group.tally_now()
        state, policy = group.state, section.policy
        limit = state.limit(policy)

        def amount(value: int) -> str:
            return self.format_amount(group_id, value)

        return {
            "id": group_id,
            "name": section.name,
            "unit": policy.unit,
            "month": month_label(state.month),
            "meters": list(section.meters),
            "budget": amount(policy.budget),
            "extension": amount(state.extension),
            "limit": amount(limit),
            "used": amount(state.used),
            "percent": round(100 * state.used / limit, 1) if limit else 0.0,
            "alarm_percents": list(policy.alarm_percents),
            "blocked": state.blocked,
            "requests": [
                {"id": r.request_id, "amount": amount(r.amount), "reason": r.reason,
                 "requested_by": r.requested_by, "ts_ms": r.ts_ms, "status": r.status,
                 "decided_by": r.decided_by, "note": r.note}
                for r in state.requests
            ],
        }

    def views(self) -> list[dict[str, Any]]:
        return [self.view(group_id) for group_id in self.sections]


# --- start-up and the month clock ---------------------------------------------------------


def open_quota_groups(config: ParkConfig, store: Store, registry: ParkRegistry,
                      router: EffectRouter, clock: ParkClock, month_of: MonthOf
                      ) -> dict[str, QuotaGroup]:
    """Every configured group, replayed from the journal and tallied from its meters."""
    groups: dict[str, QuotaGroup] = {}
    month = month_of(clock.wall_ms())
    for section in config.quotas:
        members = [registry.get(meter_id) for meter_id in section.meters]
        group = QuotaGroup(section.policy, members, registry.dispatcher, router,
                           clock.wall_ms, clock.mono_ms)
        group.start(replay_group(store, section, month_of), month)
        groups[section.id] = group
        log.info("quota group %s: %s month %s, %.1f%% used%s", section.id, section.policy.unit,
                 month_label(group.state.month),
                 100 * group.state.used / group.state.limit(section.policy),
                 " (its meters are held open)" if group.state.blocked else "")
    return groups


async def run_month_clock(groups: Iterable[QuotaGroup], clock: ParkClock, month_of: MonthOf,
                          *, every_s: float = 60.0,
                          task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Roll groups into a new month within ``every_s`` of local midnight, forever."""
    groups = tuple(groups)
    task_status.started()
    while True:
        month = month_of(clock.wall_ms())
        for group in groups:
            group.roll_over(month)
        await trio.sleep(every_s)
