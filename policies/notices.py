"""Tenant notices: what a notice is, and the pure rules of delivering one.

Theory of operation
-------------------
A notice is something a tenant is told: a low-balance level crossed, credit about to run out,
supply cut or restored, a top-up received, a statement ready, a quota warning. The server raises
notices from what the meters and the ledger already do (``server.notices``) and writes them to a
durable outbox; a delivery process sends each to the tenant's contacts (``protocols.notify``).

Every notice has an id made from what caused it (a meter's alarm number, a top-up's reference, a
statement's month), never from a clock or a counter of the raising process, so a notice raised
again after a crash has the id it had before and the outbox keeps it once.

This module holds the rules that decide *when* a delivery is tried, as functions of time passed
in: quiet hours (a reminder waits for their end; a supply-cut notice does not), the retry
schedule (backoff, then the dead-letter list), and the per-tenant rate limit (a token bucket
whose state is a record). Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import attrs

from policies.money import CHARGE_UNITS_PER_MINOR

NOTICE_KINDS: Final = (
    "low_balance",
    "credit_running_out",
    "supply_cut",
    "supply_restored",
    "topup_receipt",
    "statement_ready",
    "quota",
)
"""The kinds a tenant can be told, as the webhook's ``kind`` field and the template names."""

URGENT_KINDS: Final = frozenset({"supply_cut", "supply_restored"})
"""Sent at once: through quiet hours and past the rate limit (a tenant whose supply was just cut
must hear it now; so must one whose supply is back)."""

CHANNELS: Final = ("email", "sms", "webhook", "wechat")
LANGUAGES: Final = ("en", "zh-CN")

MINUTES_PER_DAY: Final = 24 * 60
MS_PER_MINUTE: Final = 60_000


@attrs.frozen
class Notice:
    """One thing to tell one tenant. ``fields`` are the template's values, already formatted
    for the wire (amounts as decimal strings): the delivery side never computes money."""

    notice_id: str
    kind: str
    tenant: str
    meter: str
    ts_ms: int
    """When it was raised (wall clock, UTC ms): the webhook's ``ts``."""
    fields: Mapping[str, str] = attrs.field(factory=dict)

    @property
    def urgent(self) -> bool:
        return self.kind in URGENT_KINDS


@attrs.frozen
class QuietHours:
    """A daily span in the park's local time, in minutes of the day; ``start > end`` wraps past
    midnight (22:00-07:00)."""

    start_minute: int
    end_minute: int

    def contains(self, minute_of_day: int) -> bool:
        if self.start_minute <= self.end_minute:
            return self.start_minute <= minute_of_day < self.end_minute
        return minute_of_day >= self.start_minute or minute_of_day < self.end_minute

    def minutes_left(self, minute_of_day: int) -> int:
        """Minutes from ``minute_of_day`` until the span ends (0 outside it)."""
        if not self.contains(minute_of_day):
            return 0
        return (self.end_minute - minute_of_day) % MINUTES_PER_DAY


def held_until_ms(notice: Notice, quiet: QuietHours | None, now_ms: int,
                  local_minute: int) -> int:
    """When a notice may go out: now, or the end of the tenant's quiet hours for a reminder
    raised inside them (``local_minute``: the park's local minute of the day at ``now_ms``)."""
    if quiet is None or notice.urgent:
        return now_ms
    left = quiet.minutes_left(local_minute)
    if left == 0:
        return now_ms
    return (now_ms // MS_PER_MINUTE + left) * MS_PER_MINUTE


DEFAULT_RETRY_MS: Final = (10_000, 60_000, 300_000, 1_800_000, 7_200_000, 21_600_000)
"""Waits after the 1st, 2nd, ... failed attempt; a failure after the last goes to dead letters.
About a day and a half in all: long enough for a mail relay's maintenance window."""


def next_attempt_ms(failed_attempts: int, now_ms: int,
                    schedule: Sequence[int] = DEFAULT_RETRY_MS) -> int | None:
    """When to try again after ``failed_attempts`` failures (counted with this one), or None
    when the schedule is spent and the delivery is dead."""
    if failed_attempts < 1:
        raise ValueError("a retry follows at least one failure")
    if failed_attempts > len(schedule):
        return None
    return now_ms + schedule[failed_attempts - 1]


@attrs.frozen
class RateBucket:
    """A token bucket: ``tokens`` (in thousandths, so refill stays integer) at ``at_ms``."""

    tokens_milli: int
    at_ms: int


@attrs.frozen
class RateLimit:
    """At most ``per_hour`` notices per tenant and channel in an hour, in bursts of up to
    ``burst``. ``per_hour = 0`` switches the limit off."""

    per_hour: int
    burst: int

    def full(self, now_ms: int) -> RateBucket:
        return RateBucket(self.burst * 1000, now_ms)

    def take(self, bucket: RateBucket | None, now_ms: int) -> tuple[RateBucket | None, int]:
        """Spend one token: ``(new bucket, 0)``, or ``(bucket, wait_ms)`` when it is empty (the
        notice waits ``wait_ms`` for the next token and is not dropped)."""
        if self.per_hour <= 0:
            return bucket, 0
        if bucket is None:
            bucket = self.full(now_ms)
        elapsed = max(0, now_ms - bucket.at_ms)
        # per_hour tokens per 3,600,000 ms is per_hour thousandths of a token per 3,600 ms
        refill = elapsed * self.per_hour // 3600
        cap = self.burst * 1000
        if bucket.tokens_milli + refill >= cap:
            tokens, at = cap, now_ms
        else:  # advance only by the time the whole thousandths took: no refill is lost
            tokens = bucket.tokens_milli + refill
            at = bucket.at_ms + refill * 3600 // self.per_hour
        if tokens >= 1000:
            return RateBucket(tokens - 1000, at), 0
        missing = 1000 - tokens
        wait = -(-missing * 3600 // self.per_hour)
        return RateBucket(tokens, at), wait


def hours_of_credit(balance_minor: int, power_w: float, units_per_wh: int) -> float | None:
    """How long ``balance_minor`` lasts at ``power_w`` and the price now (charge units per Wh,
    ``policies.money``), in hours; None when nothing is being spent (no load, a free price) or
    the balance is gone already."""
    if balance_minor <= 0 or not power_w > 0 or units_per_wh <= 0:
        return None
    spend_per_hour = power_w * units_per_wh / CHARGE_UNITS_PER_MINOR
    return balance_minor / spend_per_hour
