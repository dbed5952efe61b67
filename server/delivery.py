"""The delivery loop: notices from the outbox to every contact that wants them.

Theory of operation
-------------------
Runs in the delivery process (``server.notify_worker``), on trio, with three tasks:

* **take** (:meth:`Deliverer.run_taking`): when woken by the server (a batch of notices was
  committed) or every ``poll_s``, read the outbox after the cursor, make one
  :class:`~persistence.deliveries.Delivery` per contact that gets the notice's kind, held until
  the end of the tenant's quiet hours for a reminder (``policies.notices.held_until_ms``), and
  write them together with the new cursor;
* **dispatch** (:meth:`Deliverer.run_dispatching`): a heap of deliveries by due time; a due one
  spends a token of its tenant's and channel's rate bucket (urgent kinds do not) or waits for
  the next token, then is sent on its channel, at most ``concurrency`` at once per channel;
* **settle** (:meth:`Deliverer.run_settling`): every ``settle_s`` the answers are written in one
  transaction: delivered and dead ones leave ``pending``, the dead go to ``dead``, retried ones
  get their next time from the retry schedule (``policies.notices.next_attempt_ms``), or a
  provider's own ``Retry-After`` when it is later.

Deliveries pending at start (the process was killed, the server restarted) are put on the
heap first. A notice is looked up in the outbox when one of its deliveries is sent and kept in
memory while any is outstanding.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import logging
import time
import zoneinfo
from collections.abc import Callable, Mapping
from typing import Final

import attrs
import trio

from persistence.deliveries import Deliveries, Delivery
from persistence.outbox import find_notice, notices_after
from persistence.store import Store
from policies.notices import (
    DEFAULT_RETRY_MS,
    Notice,
    RateBucket,
    RateLimit,
    held_until_ms,
    next_attempt_ms,
)
from protocols.notify.channel import Channel, Message, Outcome
from protocols.notify.templates import TemplateError, Templates
from server.config.records import TenantSection

log = logging.getLogger(__name__)

TAKE_LIMIT: Final = 5_000
SETTLE_S: Final = 0.02
POLL_S: Final = 0.5
CONCURRENCY: Final = 8
"""Deliveries in flight per channel: httpx under trio measured 0.9 ms of CPU a request at 8
concurrent and 3.4 ms at 64 (pool contention), so more in flight is slower, not faster."""
DEFAULT_RATE: Final = RateLimit(20, 5)


@attrs.define
class DeliveryStatistics:
    taken: int = 0
    """Notices read from the outbox."""
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    pending: int = 0
    in_flight: int = 0
    by_channel: dict[str, int] = attrs.Factory(dict)
    """Delivered per channel."""


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Deliverer:
    def __init__(
        self,
        outbox: Store,
        deliveries: Deliveries,
        channels: Mapping[str, Channel],
        templates: Templates,
        tenants: Mapping[str, TenantSection],
        timezone: str,
        *,
        rate: RateLimit = DEFAULT_RATE,
        retry_ms: tuple[int, ...] = DEFAULT_RETRY_MS,
        concurrency: int = CONCURRENCY,
        clock_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self._outbox = outbox
        self._deliveries = deliveries
        self._channels = channels
        self._templates = templates
        self._tenants = tenants
        self._zone = zoneinfo.ZoneInfo(timezone)
        self._rate = rate
        self._retry_ms = retry_ms
        self._clock_ms = clock_ms
        self._limits = {name: trio.Semaphore(concurrency) for name in channels}
        self._heap: list[tuple[int, int, Delivery]] = []
        self._order = itertools.count()
        self._notices: dict[str, Notice] = {}
        """The notices of outstanding deliveries, read from the outbox once."""
        self._outstanding: dict[str, int] = {}
        """Notice id -> its deliveries not yet delivered or dead."""
        self._buckets: dict[tuple[str, str], RateBucket | None] = {}
        self._done: list[Delivery] = []
        self._retried: list[Delivery] = []
        self._dead: list[Delivery] = []
        self._cursor = deliveries.cursor()
        self._due = trio.Event()
        self._wake = trio.Event()
        self.statistics = DeliveryStatistics()

    # -- start ---------------------------------------------------------------------------------

    def load_pending(self) -> int:
        """Put what was pending when the process last stopped on the heap."""
        count = 0
        for delivery in self._deliveries.pending():
            self._add(delivery)
            count += 1
        self.statistics.pending = len(self._heap)
        return count

    def wake(self) -> None:
        """New notices are in the outbox (the server said so)."""
        self._wake.set()

    # -- take ----------------------------------------------------------------------------------

    async def run_taking(self, *, poll_s: float = POLL_S,
                         task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            self._wake = trio.Event()
            while await trio.to_thread.run_sync(self.take_once):
                pass
            with trio.move_on_after(poll_s):
                await self._wake.wait()

    def take_once(self) -> int:
        """Read one batch of new notices and make their deliveries (a worker thread: LMDB
        reads and a synced write); returns how many notices it read."""
        outbox, order = self._outbox.outbox, self._outbox.outbox_seq
        if outbox is None or order is None:
            return 0
        now = self._clock_ms()
        created: list[Delivery] = []
        cursor = self._cursor
        with self._outbox.read() as txn:
            notices = list(notices_after(txn, outbox, order, cursor, TAKE_LIMIT))
        for seq, notice in notices:
            cursor = seq
            created.extend(self._deliveries_of(notice, now))
        if not notices:
            return 0
        self._deliveries.take(cursor, created)
        self._cursor = cursor
        self.statistics.taken += len(notices)
        trio.from_thread.run_sync(self._push_all, created)
        return len(notices)

    def _deliveries_of(self, notice: Notice, now: int) -> list[Delivery]:
        tenant = self._tenants.get(notice.tenant)
        if tenant is None:
            return []
        minute = self._local_minute(now)
        due = held_until_ms(notice, tenant.quiet_hours, now, minute)
        return [Delivery(notice.notice_id, contact.channel, contact.address, 0, due, "", now)
                for contact in tenant.contacts
                if notice.kind in contact.notices and contact.channel in self._channels]

    def _local_minute(self, now_ms: int) -> int:
        local = dt.datetime.fromtimestamp(now_ms / 1000, self._zone)
        return local.hour * 60 + local.minute

    def _push_all(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            self._add(delivery)
        self.statistics.pending = len(self._heap)

    def _add(self, delivery: Delivery) -> None:
        """A delivery new to this process (not a retry of one on the heap)."""
        self._outstanding[delivery.notice_id] = self._outstanding.get(delivery.notice_id, 0) + 1
        self._push(delivery)

    def _push(self, delivery: Delivery) -> None:
        heapq.heappush(self._heap, (delivery.next_ms, next(self._order), delivery))
        self._due.set()

    # -- dispatch ------------------------------------------------------------------------------

    async def run_dispatching(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                              ) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                if not self._heap:
                    self._due = trio.Event()
                    await self._due.wait()
                    continue
                due_ms, _, delivery = self._heap[0]
                now = self._clock_ms()
                if due_ms > now:
                    self._due = trio.Event()
                    with trio.move_on_after((due_ms - now) / 1000):
                        await self._due.wait()
                    continue
                heapq.heappop(self._heap)
                notice = self._notice(delivery)
                if notice is None:
                    continue
                wait = self._spend_token(notice, delivery, now)
                if wait:
                    self._push(attrs.evolve(delivery, next_ms=now + wait))
                    continue
                limit = self._limits.get(delivery.channel)
                if limit is None:  # its channel is no longer configured
                    self._finish(attrs.evolve(delivery, detail=f"no {delivery.channel} channel "
                                                               "is configured"), "dead")
                    continue
                await limit.acquire()
                self.statistics.in_flight += 1
                nursery.start_soon(self._send, notice, delivery, limit)

    def _notice(self, delivery: Delivery) -> Notice | None:
        held = self._notices.get(delivery.notice_id)
        if held is not None:
            return held
        outbox = self._outbox.outbox
        if outbox is None:
            return None
        with self._outbox.read() as txn:
            notice = find_notice(txn, outbox, delivery.notice_id)
        if notice is None:
            log.error("delivery of %s: the notice is not in the outbox; dropped",
                      delivery.notice_id)
            self._finish(attrs.evolve(delivery, detail="the notice is not in the outbox"), "dead")
            return None
        self._notices[notice.notice_id] = notice
        return notice

    def _spend_token(self, notice: Notice, delivery: Delivery, now: int) -> int:
        if notice.urgent:
            return 0
        key = (notice.tenant, delivery.channel)
        bucket, wait = self._rate.take(self._buckets.get(key), now)
        self._buckets[key] = bucket
        return wait

    async def _send(self, notice: Notice, delivery: Delivery, limit: trio.Semaphore) -> None:
        try:
            try:
                message = self.render(notice, delivery)
            except (TemplateError, KeyError, ValueError) as error:
                outcome = Outcome("dead", f"cannot render the notice: {error}")
            else:
                outcome = await self._channels[delivery.channel].send(message)
        except Exception as error:  # an adapter's bug costs this delivery one attempt
            log.exception("the %s channel failed on %s", delivery.channel, delivery.notice_id)
            outcome = Outcome("retry", f"internal error: {type(error).__name__}: {error}")
        finally:
            limit.release()
            self.statistics.in_flight -= 1
        self._answered(delivery, outcome)

    def render(self, notice: Notice, delivery: Delivery) -> Message:
        tenant = self._tenants.get(notice.tenant)
        language = tenant.language if tenant is not None else "en"
        fields = dict(notice.fields)
        fields.setdefault("meter", notice.meter)
        if delivery.channel == "email":
            rendered = self._templates.email(language, notice.kind, fields)
            subject, body = rendered.subject, rendered.body
        else:
            subject, body = "", self._templates.text(language, notice.kind, fields)
        return Message(notice.notice_id, notice.kind, delivery.channel, delivery.address,
                       language, subject, body, self._templates.values(language, notice.kind,
                                                                       fields),
                       notice.tenant, notice.meter, notice.ts_ms)

    def _answered(self, delivery: Delivery, outcome: Outcome) -> None:
        now = self._clock_ms()
        attempts = delivery.attempts + 1
        if outcome.kind == "delivered":
            self._finish(attrs.evolve(delivery, attempts=attempts), "delivered")
            return
        failed = attrs.evolve(delivery, attempts=attempts, detail=outcome.detail)
        following = None if outcome.kind == "dead" else next_attempt_ms(
            attempts, now, self._retry_ms)
        if following is None:
            log.warning("notice %s to %s %s is dead after %d attempts: %s",
                        delivery.notice_id, delivery.channel, delivery.address, attempts,
                        outcome.detail)
            self._finish(failed, "dead")
            return
        if outcome.retry_after_s is not None:
            following = max(following, now + int(outcome.retry_after_s * 1000))
        retried = attrs.evolve(failed, next_ms=following)
        self._retried.append(retried)
        self.statistics.retried += 1
        self._push(retried)

    def _finish(self, delivery: Delivery, how: str) -> None:
        if how == "delivered":
            self._done.append(delivery)
            self.statistics.delivered += 1
            by = self.statistics.by_channel
            by[delivery.channel] = by.get(delivery.channel, 0) + 1
        else:
            self._dead.append(delivery)
            self.statistics.dead += 1
        left = self._outstanding.get(delivery.notice_id, 1) - 1
        if left <= 0:
            self._outstanding.pop(delivery.notice_id, None)
            self._notices.pop(delivery.notice_id, None)
        else:
            self._outstanding[delivery.notice_id] = left
        self.statistics.pending = len(self._heap)

    # -- settle --------------------------------------------------------------------------------

    async def run_settling(self, *, every_s: float = SETTLE_S,
                           task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                await trio.sleep(every_s)
                await self.settle()
        finally:
            with trio.CancelScope(shield=True):
                await self.settle()

    async def settle(self) -> int:
        if not (self._done or self._retried or self._dead):
            return 0
        done, retried, dead = self._done, self._retried, self._dead
        self._done, self._retried, self._dead = [], [], []
        await trio.to_thread.run_sync(self._deliveries.settle, done, retried, dead)
        return len(done) + len(retried) + len(dead)

    def revive(self, notice_id: str) -> int:
        """Dead letters of ``notice_id`` (every one when empty) are tried again."""
        revived = self._deliveries.revive(notice_id, self._clock_ms())
        for delivery in revived:
            self._add(delivery)
        self.statistics.pending = len(self._heap)
        return len(revived)
