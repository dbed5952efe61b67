"""The quota group actor: one per production line or workshop, fed by its meters' charges.

Theory of operation
-------------------
A group spans many meters, and the reading path is the park's hot path (about 1.6 µs a
reading), so the group must cost a meter next to nothing per reading and no lookup. It hands
each member an *allowance*: the member's month total (``MeterState.month_wh``, or
``month_minor`` for a money budget) at which it must speak up, kept on the member actor
(``quota_wh_until`` / ``quota_minor_until``; ``NO_QUOTA`` for meters in no group). A reading
costs the member two comparisons; only when its total reaches its allowance (or its month
changes) does it send the group one ``TALLY`` (:meth:`QuotaGroup.member_charged`; the
group's mailbox coalesces: one message until it has looked).

On ``TALLY`` the group keeps books rather than counting everyone: for each member the total it
last reported and its allowance, plus the headroom not allotted yet, such that ``used +
allotted + free = threshold - 1``. A member that reports adds what it used to ``used``, gives
back its allowance and draws a new one from ``free``; while ``free`` stays >= 0 nobody can
have crossed the threshold unseen, so a report costs O(1). When the reports overdraw it (or a
threshold is crossed, a new month starts, an extension is approved) the group *recounts*:
``used`` is the sum of its members' totals for the group's month (exact whatever the order
or number of readings, and after a restart rebuilt from the recovered meters:
:meth:`QuotaGroup.start`), and the headroom to the next threshold (an alarm level or the
cut) is allotted again, half in equal shares (``policies.quota.allowance``), half kept free.
A recount costs O(members) and comes about once per members' worth of reports, so a report
costs O(1) amortised however big the group; close to a threshold (less than two units of
headroom a member) nobody gets an allowance, every charge reports and the books are exact.
The pure rules (``policies.quota``) decide alarms and the cut.

The rules' effects become:

* ``QuotaSupply`` messages to every member (relay reason ``quota``), through the dispatcher
  like any other meter message;
* park-level alarm events ``park/quota:<group>:<percent>`` (kind ``quota``);
* a call to each of ``listeners`` (the console's and SCADA's view of the group).

Extension requests and decisions are journaled by ``server.quotas``, which applies them
here (:meth:`apply`) in journal order as the journal delivers them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Final

from actors.effects import ALARM_ID_SEPARATOR, PARK_ALARM_PREFIX, AlarmEvent, EffectRouter
from actors.meter import NO_QUOTA, MeterActor
from actors.runtime import Dispatcher
from policies import quota as rules
from policies.quota import QuotaCut, QuotaEffect, QuotaPolicy, QuotaState
from policies.records import QuotaSupply

log = logging.getLogger(__name__)

TALLY: Final = "tally"
"""The group's one kind of queued message: look at the members listed since last time."""

GroupListener = Callable[["QuotaGroup"], None]



def quota_alarm_id(group_id: str, percent: int) -> str:
    return f"{PARK_ALARM_PREFIX}{ALARM_ID_SEPARATOR}quota:{group_id}:{percent}"


class QuotaGroup:
    """One group's actor (see the module docstring)."""

    __slots__ = ("_alloc", "_allotted", "_dispatcher", "_free", "_last", "_router",
                 "_scheduled", "_share", "_slot", "_threshold", "_touched", "_used", "label_ms",
                 "listeners", "members", "mono_ms", "policy", "state")

    def __init__(
        self,
        policy: QuotaPolicy,
        members: Sequence[MeterActor],
        dispatcher: Dispatcher,
        router: EffectRouter,
        label_ms: Callable[[], int],
        mono_ms: Callable[[], int],
    ) -> None:
        self.policy = policy
        self.state = QuotaState()
        self.members = tuple(members)
        self.listeners: list[GroupListener] = []
        self.label_ms = label_ms
        self.mono_ms = mono_ms
        self._dispatcher = dispatcher
        self._router = router
        self._scheduled = False
        self._touched: list[MeterActor] = []
        self._slot = {member: slot for slot, member in enumerate(self.members)}
        # The books of the allowances (module docstring), per member slot: the total it last
        # reported (in the group's month) and what it may add before it reports again; and
        # what is not allotted yet. used + allotted + free = threshold - 1 holds throughout.
        self._last = [0] * len(self.members)
        self._alloc = [0] * len(self.members)
        self._allotted = 0
        self._free = 0
        self._share = 0
        self._used = 0  # the books' figure: state.used plus what was reported since
        self._threshold: int | None = None
        for member in self.members:
            member.quota = self

    def __repr__(self) -> str:
        return f"<QuotaGroup {self.policy.group_id}>"

    @property
    def group_id(self) -> str:
        return self.policy.group_id

    @property
    def booked(self) -> int:
        """What the books say was used this month: the last count plus the reports since, so
        at most the members' unreported allowances behind (a metric, not a decision)."""
        return self._used

    # -- the meters' side ------------------------------------------------------------------

    def member_charged(self, member: MeterActor) -> None:
        """A member reached its allowance or a new month: account for it soon (one message
        for every member that reports before the group looks)."""
        self._touched.append(member)
        if not self._scheduled:
            self._scheduled = True
            self._dispatcher.send_nowait(self, TALLY)

    def receive(self, message: object) -> None:
        if message == TALLY:
            self._scheduled = False
            touched, self._touched = self._touched, []
            if not self._account(touched):
                self.recount()
        else:
            log.error("quota group %s got an unexpected message %r", self.group_id, message)

    def _account(self, touched: list[MeterActor]) -> bool:
        """The reports of ``touched``, in O(1) each; False when only an exact count can say
        where the group stands (a new month, or what is not reported could have crossed the
        threshold)."""
        month = self.state.month
        by_energy = self.policy.unit == "kwh"
        last, alloc, slot_of = self._last, self._alloc, self._slot
        used, free, allotted = self._used, self._free, self._allotted
        reported: list[int] = []
        seen: set[int] = set()
        for member in touched:
            s = member.state
            if s.month != month:
                if s.month > month:
                    return False
                continue  # still in an earlier month: nothing of this one yet
            slot = slot_of[member]
            if slot in seen:
                continue  # listed twice before the group looked: the first saw it all
            seen.add(slot)
            delta = (s.month_wh if by_energy else s.month_minor) - last[slot]
            used += delta
            free += alloc[slot] - delta
            allotted -= alloc[slot]
            last[slot] += delta
            alloc[slot] = 0
            reported.append(slot)
        if free < 0:
            # Overdrawn: what is not reported yet could have crossed the threshold (with
            # nothing allotted, ``used`` is exact and has crossed it): count and decide.
            return False
        # No threshold can have been crossed, so the rules have nothing to say: the books
        # keep the figure (``state.used`` is the last count's, until the next one).
        self._used, self._free, self._allotted = used, free, allotted
        share = self._share
        for slot in reported:
            give = min(share, free)
            free -= give
            allotted += give
            alloc[slot] = give
            self._set_until(self.members[slot], last[slot] + give + 1)
        self._free, self._allotted = free, allotted
        return True

    def recount(self) -> None:
        """Count exactly (every member's month total) and allot the headroom to the next
        threshold anew: half of it in equal shares, half kept free for those who report."""
        self._touched = []
        state, policy = self.state, self.policy
        members = self.members
        month = max(state.month, max(member.state.month for member in members))
        by_energy = policy.unit == "kwh"
        totals = [(m.state.month_wh if by_energy else m.state.month_minor)
                  if m.state.month == month else -1 for m in members]
        used = sum(total for total in totals if total > 0)
        label = max((m.state.reading_ms for m in members if m.state.month == month),
                    default=-1)
        self._decided(*rules.tally(state, month, used, policy,
                                   label if label >= 0 else self.label_ms()))
        self._used = self.state.used
        threshold = self._threshold = rules.next_threshold(self.state, policy)
        current = sum(1 for total in totals if total >= 0)
        headroom = 0 if threshold is None else threshold - self.state.used - 1
        # Half the headroom in whole shares; a share of nothing (headroom below two units a
        # member) means every charge reports, and the books are exact at every look.
        share = self._share = rules.allowance(headroom, current)
        self._allotted = 0
        for slot, (member, total) in enumerate(zip(members, totals, strict=True)):
            self._alloc[slot] = 0
            self._last[slot] = max(total, 0)
            if threshold is None or total < 0:
                # Nothing above (the group is spent), or a member still in an earlier month:
                # it reports at its first charge of this month (its month changes).
                self._set_until(member, NO_QUOTA)
                continue
            give = min(share, headroom - self._allotted)
            self._alloc[slot] = give
            self._allotted += give
            self._set_until(member, total + give + 1)
        self._free = headroom - self._allotted

    def _set_until(self, member: MeterActor, until: int) -> None:
        if self.policy.unit == "kwh":
            member.quota_wh_until, member.quota_minor_until = until, NO_QUOTA
        else:
            member.quota_wh_until, member.quota_minor_until = NO_QUOTA, until

    def tally_now(self) -> None:
        """Count now (a view of the group wants today's figure, not the books' lower bound);
        on the trio thread, outside a dispatcher slice, like ``Dispatcher.deliver_now``."""
        self.recount()

    # -- start and the journal's side ----------------------------------------------------------

    def start(self, state: QuotaState, month: int) -> None:
        """After recovery: ``state`` (the group's journaled requests and decisions replayed),
        rolled into ``month`` and counted from every member, so a spent budget holds the
        meters open before the first reading."""
        self.state = rules.roll_over(state, month)
        self.recount()
        if self.state.blocked:  # tally only says so on a change; the meters must hear it now
            self._supply(True, self.label_ms())

    def roll_over(self, month: int) -> None:
        """The calendar moved on (the park's month clock): a new month even without charges."""
        if month > self.state.month:
            self._decided(*rules.tally(self.state, month, 0, self.policy, self.label_ms()))
            self.recount()

    def apply(self, result: rules.QuotaResult) -> rules.QuotaRefused | None:
        """Take the rules' verdict on a journaled request or decision (``server.quotas``
        decides it from the group's current state, on the trio thread)."""
        refused = self._decided(*result)
        self.recount()  # an extension moves the thresholds
        return refused

    # -- effects -------------------------------------------------------------------------------

    def _decided(self, state: QuotaState, effects: tuple[QuotaEffect, ...]
                 ) -> rules.QuotaRefused | None:
        changed = state is not self.state
        self.state = state
        refused = None
        for effect in effects:
            if isinstance(effect, QuotaCut):
                self._supply(effect.blocked, effect.ts_ms)
            elif isinstance(effect, rules.QuotaAlarm):
                self._alarm(effect)
            else:
                refused = effect
        if changed:
            for listener in self.listeners:
                try:
                    listener(self)
                except Exception:  # an observer's bug is not the group's
                    log.exception("quota listener failed on %s", self.group_id)
        return refused

    def _supply(self, blocked: bool, ts_ms: int) -> None:
        limit = self.state.limit(self.policy)
        detail = (f"group {self.group_id} used {self.state.used} of {limit} "
                  f"({'Wh' if self.policy.unit == 'kwh' else 'minor units'})" if blocked else "")
        supply = QuotaSupply(blocked, ts_ms, self.mono_ms(), detail)
        for member in self.members:
            self._dispatcher.send_nowait(member, supply)

    def _alarm(self, effect: rules.QuotaAlarm) -> None:
        self._router.publish_alarm(AlarmEvent(
            alarm_id=quota_alarm_id(self.group_id, effect.percent), meter_id="", kind="quota",
            level=effect.percent, state="active" if effect.active else "cleared",
            ts_ms=effect.ts_ms,
            detail=f"group {self.group_id} at {effect.percent}% of its month's budget"))
