"""Charging readings: cumulative import register -> energy delta -> money, and history buckets.

Theory of operation
-------------------
A meter reports its cumulative import register (Wh). The charge for a reading is the register
delta since the previous accepted reading, priced over the interval between the two readings
(``policies.tariff``) and turned into minor units with ``money.charge``, which carries the
sub-minor ``residue`` from one reading to the next. Hence the charged minor units over any
sequence of readings equal the floor of the exact cost of the whole, and the charged energy
equals the register change exactly.

Cases, in order:

* stale: ``ts_ms <= reading_ms`` (a duplicate or a reordered poll) - ignored, state unchanged;
* first reading (``reading_ms == NO_READING``) - baseline only, nothing charged;
* register went backwards (meter replaced or reset) - tamper alarm "register_rollback" and a
  new baseline; never a negative charge;
* otherwise the delta is charged.

History: energy and money are also accumulated per bucket of ``policy.interval_ms`` aligned to
the epoch. When a reading reaches or passes the end of the current bucket, the delta is split
over bucket boundaries by time (the tariff's floor-of-cumulative rule, so the pieces sum
exactly), and an ``IntervalClosed`` is emitted for each finished bucket that had energy; the
minor units charged in the pieces add up to exactly what the balance lost. Each closed bucket
carries the name of its tariff band, so reports can give energy and money per band (peak,
flat, valley...); buckets never straddle a band because the config requires band boundaries
and the time zone's offsets to be whole multiples of the interval.

The common case - same bucket, one tariff segment, one tier - is a handful of comparisons, one
``money.charge`` and one positional ``MeterState`` construction.
"""

from __future__ import annotations

from collections.abc import Sequence

from policies import alarms as alarm_rules
from policies.meter_policy import MeterPolicy
from policies.money import charge
from policies.records import (
    NO_EFFECTS,
    NO_READING,
    Effect,
    IntervalClosed,
    MeterState,
    Reading,
)
from policies.tariff import band_name_at, fast_price, month_at, price_interval

ChargeResult = tuple[MeterState, tuple[Effect, ...]]


def bucket_of(ts_ms: int, interval_ms: int) -> int:
    """Start of the history bucket containing ``ts_ms``."""
    return ts_ms - ts_ms % interval_ms


def closed_interval(policy: MeterPolicy, start_ms: int, wh: int, minor: int) -> IntervalClosed:
    """The history record of a finished bucket, labelled with the band at its start (the park
    config refuses intervals that straddle a band boundary: ``tariff.interval_misalignment``)."""
    return IntervalClosed(start_ms, wh, minor, band_name_at(policy.tariff, start_ms))


def charge_reading(state: MeterState, reading: Reading, policy: MeterPolicy) -> ChargeResult:
    """Apply one reading's register to the balance (see the module docstring)."""
    ts = reading.ts_ms
    t0 = state.reading_ms
    if ts <= t0:
        return state, NO_EFFECTS
    r0 = state.register_wh
    if t0 == NO_READING or r0 == NO_READING:
        return _baseline(state, reading, policy, ())
    wh = reading.register_wh - r0
    if wh < 0:
        return _rollback(state, reading, policy)
    bucket_start = state.bucket_start_ms
    if bucket_start >= 0 and ts < bucket_start + policy.interval_ms:
        price = fast_price(policy.tariff, t0, ts, state.month, state.month_wh, wh)
        if price >= 0:
            minor, residue = charge(wh, price, state.residue)
            return MeterState(
                state.balance - minor,
                residue,
                reading.register_wh,
                ts,
                reading.power_w,
                state.month,
                state.month_wh + wh,
                bucket_start,
                state.bucket_wh + wh,
                state.bucket_minor + minor,
                state.journal_seq,
                state.online,
                state.relay,
                state.protection,
                state.credit,
                state.alarms,
            ), NO_EFFECTS
    return _charge_split(state, reading, policy, wh)


def _charge_split(
    state: MeterState, reading: Reading, policy: MeterPolicy, wh: int
) -> ChargeResult:
    interval = policy.interval_ms
    t0 = state.reading_ms
    ts = reading.ts_ms
    current = state.bucket_start_ms
    if current < 0:
        current = bucket_of(t0, interval)
    next_boundary = bucket_of(current, interval) + interval
    cuts: Sequence[int] = range(next_boundary, ts, interval) if next_boundary < ts else ()
    priced = price_interval(policy.tariff, t0, ts, wh, state.month, state.month_wh, cuts)

    effects: list[Effect] = []
    residue = state.residue
    total = 0
    bucket_wh = state.bucket_wh
    bucket_minor = state.bucket_minor
    for piece in priced.pieces:
        start = bucket_of(piece.start_ms, interval)
        if start > current:
            if bucket_wh or bucket_minor:
                effects.append(closed_interval(policy, current, bucket_wh, bucket_minor))
            current, bucket_wh, bucket_minor = start, 0, 0
        minor, residue = charge(piece.wh, piece.price, residue)
        total += minor
        bucket_wh += piece.wh
        bucket_minor += minor
    last = bucket_of(ts, interval)
    if last > current:
        if bucket_wh or bucket_minor:
            effects.append(closed_interval(policy, current, bucket_wh, bucket_minor))
        current, bucket_wh, bucket_minor = last, 0, 0
    new = MeterState(
        state.balance - total,
        residue,
        reading.register_wh,
        ts,
        reading.power_w,
        priced.month,
        priced.month_wh,
        current,
        bucket_wh,
        bucket_minor,
        state.journal_seq,
        state.online,
        state.relay,
        state.protection,
        state.credit,
        state.alarms,
    )
    return new, tuple(effects) if effects else NO_EFFECTS


def _baseline(
    state: MeterState, reading: Reading, policy: MeterPolicy, effects: tuple[Effect, ...]
) -> ChargeResult:
    """Take the reading as the new baseline: nothing charged, time and buckets move on."""
    ts = reading.ts_ms
    interval = policy.interval_ms
    month = month_at(policy.tariff, ts)
    month_wh = state.month_wh if month == state.month else 0
    current = state.bucket_start_ms
    bucket_wh, bucket_minor = state.bucket_wh, state.bucket_minor
    last = bucket_of(ts, interval)
    if current < 0:
        current, bucket_wh, bucket_minor = last, 0, 0
    elif last > current:
        if bucket_wh or bucket_minor:
            effects = (*effects, closed_interval(policy, current, bucket_wh, bucket_minor))
        current, bucket_wh, bucket_minor = last, 0, 0
    new = MeterState(
        state.balance,
        state.residue,
        reading.register_wh,
        ts,
        reading.power_w,
        month,
        month_wh,
        current,
        bucket_wh,
        bucket_minor,
        state.journal_seq,
        state.online,
        state.relay,
        state.protection,
        state.credit,
        state.alarms,
    )
    return new, effects


def _rollback(state: MeterState, reading: Reading, policy: MeterPolicy) -> ChargeResult:
    """Register went backwards: tamper alarm, new baseline, no charge for the unknown delta."""
    alarms, raised = alarm_rules.raise_once(
        state.alarms, alarm_rules.TAMPER, reading.ts_ms, detail=alarm_rules.REGISTER_ROLLBACK
    )
    if alarms is not state.alarms:
        state = MeterState(
            state.balance, state.residue, state.register_wh, state.reading_ms, state.power_w,
            state.month, state.month_wh, state.bucket_start_ms, state.bucket_wh,
            state.bucket_minor, state.journal_seq, state.online, state.relay, state.protection,
            state.credit, alarms,
        )
    return _baseline(state, reading, policy, raised)
