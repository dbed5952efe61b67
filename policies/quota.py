"""Quota groups: a monthly budget of energy or money shared by a group of meters.

Theory of operation
-------------------
A production line or a workshop gets a budget per local calendar month, in kWh or in money
(``QuotaPolicy.unit``). The group's ``used`` is what its meters were charged this month: the
sum of their ``MeterState.month_wh`` (or ``month_minor``) for the group's month, so a restart
rebuilds it exactly from the recovered meters, and nothing about consumption is journaled twice.
The group's actor (``actors.quota``) feeds :func:`tally` with that sum as its meters' charges
arrive; these functions decide.

* The *limit* is the budget plus the extensions approved this month.
* Alarm levels are percentages of the limit (``alarm_percents``, e.g. 80 and 100): each is
  active while ``used`` is at or above it. Reaching one raises ``QuotaAlarm(active=True)``; an
  extension or a new month that brings ``used`` below it clears it.
* At 100 % of the limit the group holds its meters' supply open (``QuotaCut(blocked=True)``,
  relay reason ``quota``), until an approved extension or the next month gives room again.
* Extensions are asked for and decided through the journal: :func:`request_extension`
  (someone asks for an amount, with a reason) and :func:`decide` (an admin approves or
  rejects a pending request). A request belongs to the month it was made in; a new month drops
  the previous month's pending requests (budgets roll over: nothing carries into the new
  month), and approving one of them is refused.

Every function is pure: months are keys (``policies.tariff.month_key``) and times are passed
in; the caller turns effects into alarms and meter messages.
"""

from __future__ import annotations

from typing import Final, Literal

import attrs

QuotaUnit = Literal["kwh", "money"]
RequestStatus = Literal["pending", "approved", "rejected", "expired"]

MAX_PENDING: Final = 32
"""Pending requests per group: more is a client in a loop, not a production manager."""


@attrs.frozen
class QuotaPolicy:
    """A group's rule. ``budget`` is in Wh (``unit`` "kwh") or minor units ("money")."""

    group_id: str
    unit: QuotaUnit
    budget: int
    alarm_percents: tuple[int, ...] = (80, 100)

    def __attrs_post_init__(self) -> None:
        if self.budget <= 0:
            raise ValueError("a quota budget must be > 0")
        if list(self.alarm_percents) != sorted(set(self.alarm_percents)):
            raise ValueError("alarm percents must rise and not repeat")


@attrs.frozen
class QuotaRequest:
    """A request for extra budget this month (``amount`` in the group's unit)."""

    request_id: str
    amount: int
    reason: str
    requested_by: str
    ts_ms: int
    month: int
    status: RequestStatus = "pending"
    decided_by: str = ""
    decided_ms: int = -1
    note: str = ""


@attrs.frozen
class QuotaState:
    """Where a group stands in ``month``: used, extended, which alarms hold, blocked or not,
    and this month's requests (decided ones are kept for the month, for the console)."""

    month: int = -1
    used: int = 0
    extension: int = 0
    levels: int = 0
    blocked: bool = False
    requests: tuple[QuotaRequest, ...] = ()

    def limit(self, policy: QuotaPolicy) -> int:
        return policy.budget + self.extension

    def request(self, request_id: str) -> QuotaRequest | None:
        return next((r for r in self.requests if r.request_id == request_id), None)


# --- effects ---------------------------------------------------------------------------


@attrs.frozen
class QuotaAlarm:
    """Alarm level ``percent`` of the group became active (or cleared)."""

    percent: int
    active: bool
    used: int
    limit: int
    ts_ms: int


@attrs.frozen
class QuotaCut:
    """The group's meters must be held open (``blocked``) or released."""

    blocked: bool
    used: int
    limit: int
    ts_ms: int


@attrs.frozen
class QuotaRefused:
    """A request or decision the rules refuse (nothing changed)."""

    code: str
    message: str


QuotaEffect = QuotaAlarm | QuotaCut | QuotaRefused
QuotaResult = tuple[QuotaState, tuple[QuotaEffect, ...]]
NOTHING: Final[tuple[QuotaEffect, ...]] = ()


# --- rules -------------------------------------------------------------------------------


def levels_reached(used: int, limit: int, percents: tuple[int, ...]) -> int:
    """How many of the (rising) ``percents`` of ``limit`` ``used`` has reached."""
    return sum(1 for percent in percents if used * 100 >= percent * limit)


def next_threshold(state: QuotaState, policy: QuotaPolicy) -> int | None:
    """The lowest ``used`` at which something changes upward (an alarm level not reached yet,
    or the cut), or None when nothing lies above (blocked, no level above 100 %)."""
    limit = state.limit(policy)
    candidates = [-(-percent * limit // 100) for percent in policy.alarm_percents]
    candidates.append(limit)
    above = [value for value in candidates if value > state.used]
    return min(above) if above else None


def allowance(headroom: int, members: int) -> int:
    """Each member's allowance after a recount: half the ``headroom`` (what may still be used
    before the next threshold, less one unit) in whole equal shares, the other half kept for
    the members that report first (``actors.quota``). Zero below two units a member: every
    charge then reports."""
    if headroom <= 0 or members <= 0:
        return 0
    return headroom // (2 * members)


def evaluate(state: QuotaState, policy: QuotaPolicy, ts_ms: int) -> QuotaResult:
    """Bring the alarm levels and the cut in line with ``used`` and the limit."""
    limit = state.limit(policy)
    levels = levels_reached(state.used, limit, policy.alarm_percents)
    blocked = state.used >= limit
    effects: list[QuotaEffect] = []
    if blocked != state.blocked:
        effects.append(QuotaCut(blocked, state.used, limit, ts_ms))
    percents = policy.alarm_percents
    for index in range(min(levels, state.levels), max(levels, state.levels)):
        effects.append(QuotaAlarm(percents[index], index < levels, state.used, limit, ts_ms))
    if levels == state.levels and blocked == state.blocked:
        return state, NOTHING
    return attrs.evolve(state, levels=levels, blocked=blocked), tuple(effects)


def roll_over(state: QuotaState, month: int) -> QuotaState:
    """A new month: nothing used or extended yet; last month's pending requests expire."""
    if month <= state.month:
        return state
    kept = tuple(attrs.evolve(r, status="expired") for r in state.requests
                 if r.status == "pending")
    return QuotaState(month=month, used=0, extension=0, levels=state.levels,
                      blocked=state.blocked, requests=kept)


def tally(state: QuotaState, month: int, used: int, policy: QuotaPolicy,
          ts_ms: int) -> QuotaResult:
    """The group's meters were charged ``used`` in ``month`` (a month before the group's own
    is ignored: a meter whose first reading of the new month has not come yet)."""
    if month < state.month:
        return state, NOTHING
    rolled = roll_over(state, month)
    if rolled.used == used and rolled is state:
        return state, NOTHING
    return evaluate(attrs.evolve(rolled, used=used), policy, ts_ms)


def request_extension(state: QuotaState, request: QuotaRequest, policy: QuotaPolicy) -> QuotaResult:
    """Record a request for extra budget (a journaled ``quota_request``); it changes no limit
    until approved."""
    if request.amount <= 0:
        return state, (QuotaRefused("bad_request", "the amount asked for must be > 0"),)
    if state.request(request.request_id) is not None:
        return state, NOTHING  # a replay, or a repeat of the same request
    if request.month < state.month:
        return state, (QuotaRefused("bad_request", "the request is for an earlier month"),)
    effects = NOTHING
    if request.month > state.month:
        state, effects = evaluate(roll_over(state, request.month), policy, request.ts_ms)
    pending = sum(1 for r in state.requests if r.status == "pending")
    if pending >= MAX_PENDING:
        return state, (*effects, QuotaRefused(
            "conflict", f"group {policy.group_id} already has {pending} pending requests"))
    return attrs.evolve(state, requests=(*state.requests, request)), effects


def decide(state: QuotaState, request_id: str, approve: bool, by: str, ts_ms: int,
           policy: QuotaPolicy, note: str = "") -> QuotaResult:
    """Approve (the limit grows by the amount asked, this month) or reject a pending request."""
    request = state.request(request_id)
    if request is None:
        return state, (QuotaRefused("bad_request", f"group {policy.group_id} has no request "
                                                   f"{request_id!r} this month"),)
    if request.status != "pending":
        return state, (QuotaRefused("conflict", f"request {request_id!r} is {request.status} "
                                                f"already"),)
    status: RequestStatus = "approved" if approve else "rejected"
    decided = attrs.evolve(request, status=status, decided_by=by, decided_ms=ts_ms, note=note)
    requests = tuple(decided if r.request_id == request_id else r for r in state.requests)
    extension = state.extension + (request.amount if approve else 0)
    return evaluate(attrs.evolve(state, requests=requests, extension=extension), policy, ts_ms)
