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

On ``TALLY`` the group counts exactly: ``used`` is the sum of its members' totals for the
group's month, so it is right whatever the order or number of readings, and after a restart
it is rebuilt from the recovered meters (:meth:`QuotaGroup.start`). The pure rules
(``policies.quota``) decide alarms and the cut; then the group shares the headroom to the next
threshold (an alarm level or the cut) among its members again (``policies.quota.allowance``):
as long as no member has used its share, the group cannot have reached the threshold. Far from
a threshold a group looks rarely; close to one, at every reading of a member.

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

    __slots__ = ("_dispatcher", "_router", "_scheduled", "label_ms", "listeners", "members",
                 "mono_ms", "policy", "state")

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
        for member in self.members:
            member.quota = self

    def __repr__(self) -> str:
        return f"<QuotaGroup {self.policy.group_id}>"

    @property
    def group_id(self) -> str:
        return self.policy.group_id

    # -- the meters' side ------------------------------------------------------------------

    def member_charged(self, member: MeterActor) -> None:
        """A member reached its allowance or a new month: count again soon (once)."""
        if not self._scheduled:
            self._scheduled = True
            self._dispatcher.send_nowait(self, TALLY)

    def receive(self, message: object) -> None:
        if message == TALLY:
            self._tally()
        else:
            log.error("quota group %s got an unexpected message %r", self.group_id, message)

    def tally_now(self) -> None:
        """Count now (a view of the group wants today's figure, not the last threshold's);
        on the trio thread, outside a dispatcher slice, like ``Dispatcher.deliver_now``."""
        self._tally()

    def _tally(self) -> None:
        self._scheduled = False
        month = max(self.state.month, max(member.state.month for member in self.members))
        by_energy = self.policy.unit == "kwh"
        used = 0
        label = -1
        for member in self.members:
            s = member.state
            if s.month == month:
                used += s.month_wh if by_energy else s.month_minor
                if s.reading_ms > label:
                    label = s.reading_ms
        if label < 0:
            label = self.label_ms()
        self._decided(*rules.tally(self.state, month, used, self.policy, label))
        self._allot()

    def _allot(self) -> None:
        """Share the headroom to the next threshold among the members (module docstring)."""
        state = self.state
        threshold = rules.next_threshold(state, self.policy)
        share = (NO_QUOTA if threshold is None
                 else rules.allowance(state.used, threshold, len(self.members)))
        by_energy = self.policy.unit == "kwh"
        for member in self.members:
            s = member.state
            # A member still in an earlier month speaks up at its first charge of this one
            # (its month changes); its old total says nothing about this month.
            until = NO_QUOTA
            if s.month == state.month and share != NO_QUOTA:
                until = (s.month_wh if by_energy else s.month_minor) + share
            if by_energy:
                member.quota_wh_until, member.quota_minor_until = until, NO_QUOTA
            else:
                member.quota_wh_until, member.quota_minor_until = NO_QUOTA, until

    # -- start and the journal's side ----------------------------------------------------------

    def start(self, state: QuotaState, month: int) -> None:
        """After recovery: ``state`` (the group's journaled requests and decisions replayed),
        rolled into ``month`` and counted from every member, so a spent budget holds the
        meters open before the first reading."""
        self.state = rules.roll_over(state, month)
        self._tally()
        if self.state.blocked:  # tally only says so on a change; the meters must hear it now
            self._supply(True, self.label_ms())

    def roll_over(self, month: int) -> None:
        """The calendar moved on (the park's month clock): a new month even without charges."""
        if month > self.state.month:
            self._decided(*rules.tally(self.state, month, 0, self.policy, self.label_ms()))
            self._allot()

    def apply(self, result: rules.QuotaResult) -> rules.QuotaRefused | None:
        """Take the rules' verdict on a journaled request or decision (``server.quotas``
        decides it from the group's current state, on the trio thread)."""
        refused = self._decided(*result)
        self._allot()  # an extension moves the thresholds
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
