"""The quota group actor: one per production line or workshop, fed by its meters' charges.

Theory of operation
-------------------
A group spans many meters, and the reading path is the park's hot path, so a meter tells its
group only that it was charged, and at most once until the group has looked: the meter actor
holds a direct reference to its group (no lookup) and calls :meth:`QuotaGroup.member_charged`,
which lists the meter and, the first time since the last tally, queues one ``TALLY`` message
for the group on the dispatcher (the group's mailbox coalesces: many charges, one message).

On ``TALLY`` the group reads each listed member's month totals (``MeterState.month_wh`` or
``month_minor``: what the meter was charged this local month) and keeps the sum of what every
member contributed, so ``used`` is exact whatever the order or number of readings, and after
a restart it is rebuilt from the recovered meters (:meth:`QuotaGroup.start`). The pure rules
(``policies.quota``) decide alarms and the cut; the actor turns their effects into:

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
from typing import TYPE_CHECKING, Final

from actors.effects import ALARM_ID_SEPARATOR, PARK_ALARM_PREFIX, AlarmEvent, EffectRouter
from actors.runtime import Dispatcher
from policies import quota as rules
from policies.quota import QuotaCut, QuotaEffect, QuotaPolicy, QuotaState
from policies.records import QuotaSupply

if TYPE_CHECKING:
    from actors.meter import MeterActor

log = logging.getLogger(__name__)

TALLY: Final = "tally"
"""The group's one kind of queued message: look at the members listed since last time."""

GroupListener = Callable[["QuotaGroup"], None]


def quota_alarm_id(group_id: str, percent: int) -> str:
    return f"{PARK_ALARM_PREFIX}{ALARM_ID_SEPARATOR}quota:{group_id}:{percent}"


class QuotaGroup:
    """One group's actor (see the module docstring)."""

    __slots__ = ("_contributed", "_dispatcher", "_months", "_router", "_scheduled", "_touched",
                 "label_ms", "listeners", "members", "mono_ms", "policy", "state")

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
        self._touched: list[MeterActor] = []
        self._scheduled = False
        # Per member slot: what it contributed to ``used``, and in which month.
        self._contributed = [0] * len(self.members)
        self._months = [-1] * len(self.members)
        for slot, member in enumerate(self.members):
            member.quota = self
            member.quota_slot = slot

    def __repr__(self) -> str:
        return f"<QuotaGroup {self.policy.group_id}>"

    @property
    def group_id(self) -> str:
        return self.policy.group_id

    # -- the meters' side ------------------------------------------------------------------

    def member_charged(self, member: MeterActor) -> None:
        """Called by a member actor after a charge (once until the next tally)."""
        member.quota_listed = True
        self._touched.append(member)
        if not self._scheduled:
            self._scheduled = True
            self._dispatcher.send_nowait(self, TALLY)

    def receive(self, message: object) -> None:
        if message == TALLY:
            self._tally()
        else:
            log.error("quota group %s got an unexpected message %r", self.group_id, message)

    def _tally(self) -> None:
        touched, self._touched = self._touched, []
        self._scheduled = False
        month = self.state.month
        used = self.state.used
        by_energy = self.policy.unit == "kwh"
        contributed, months = self._contributed, self._months
        label = -1
        for member in touched:
            member.quota_listed = False
            s = member.state
            if s.month > month:  # the first charge of a new month: everyone starts again
                month, used = s.month, 0
            if s.month != month:
                continue
            value = s.month_wh if by_energy else s.month_minor
            slot = member.quota_slot
            used += value - (contributed[slot] if months[slot] == month else 0)
            contributed[slot], months[slot] = value, month
            if s.reading_ms > label:
                label = s.reading_ms
        if label < 0:
            label = self.label_ms()
        self._decided(*rules.tally(self.state, month, used, self.policy, label))

    # -- start and the journal's side ----------------------------------------------------------

    def start(self, state: QuotaState, month: int) -> None:
        """After recovery: ``state`` (the group's journaled requests and decisions replayed),
        rolled into ``month`` and tallied from every member, so a spent budget holds the
        meters open before the first reading."""
        self.state = rules.roll_over(state, month)
        self._contributed = [0] * len(self.members)
        self._months = [-1] * len(self.members)
        self._touched = list(self.members)
        for member in self.members:
            member.quota_listed = True
        self._tally()
        if self.state.blocked:  # tally only says so on a change; the meters must hear it now
            self._supply(True, self.label_ms())

    def roll_over(self, month: int) -> None:
        """The calendar moved on (the park's month clock): a new month even without charges."""
        if month > self.state.month:
            self._decided(*rules.tally(self.state, month, 0, self.policy, self.label_ms()))

    def apply(self, result: rules.QuotaResult) -> rules.QuotaRefused | None:
        """Take the rules' verdict on a journaled request or decision (``server.quotas``
        decides it from the group's current state, on the trio thread)."""
        return self._decided(*result)

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
